import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("id", "event_name", "event_key", "event_data", "event_time", "is_processed")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_DATA_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    IS_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    id: str
    event_name: str
    event_key: str
    event_data: str
    event_time: _timestamp_pb2.Timestamp
    is_processed: bool
    def __init__(self, id: _Optional[str] = ..., event_name: _Optional[str] = ..., event_key: _Optional[str] = ..., event_data: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., is_processed: _Optional[bool] = ...) -> None: ...

class CreateEventRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class CreateEventResponse(_message.Message):
    __slots__ = ("id", "server_queues")
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_QUEUES_FIELD_NUMBER: _ClassVar[int]
    id: str
    server_queues: bool
    def __init__(self, id: _Optional[str] = ..., server_queues: _Optional[bool] = ...) -> None: ...

class GetEventRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class GetRunnableEventsRequest(_message.Message):
    __slots__ = ("as_at", "page_size", "page_token")
    AS_AT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    as_at: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, as_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetRunnableEventsResponse(_message.Message):
    __slots__ = ("event_ids", "next_page_token")
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, event_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetEventsRequest(_message.Message):
    __slots__ = ("event_name", "event_key", "as_of", "page_size", "page_token")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    event_key: str
    as_of: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, event_name: _Optional[str] = ..., event_key: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetEventsResponse(_message.Message):
    __slots__ = ("event_ids", "next_page_token")
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, event_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MarkEventProcessedRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class MarkEventProcessedResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MarkEventUnprocessedRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class MarkEventUnprocessedResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
