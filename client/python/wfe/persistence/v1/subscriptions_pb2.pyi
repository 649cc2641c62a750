import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventSubscription(_message.Message):
    __slots__ = ("id", "workflow_id", "step_id", "execution_pointer_id", "event_name", "event_key", "subscribe_as_of", "subscription_data", "external_token", "external_worker_id", "external_token_expiry")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_POINTER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_AS_OF_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_DATA_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_TOKEN_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    id: str
    workflow_id: str
    step_id: int
    execution_pointer_id: str
    event_name: str
    event_key: str
    subscribe_as_of: _timestamp_pb2.Timestamp
    subscription_data: str
    external_token: str
    external_worker_id: str
    external_token_expiry: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., step_id: _Optional[int] = ..., execution_pointer_id: _Optional[str] = ..., event_name: _Optional[str] = ..., event_key: _Optional[str] = ..., subscribe_as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subscription_data: _Optional[str] = ..., external_token: _Optional[str] = ..., external_worker_id: _Optional[str] = ..., external_token_expiry: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSubscriptionRequest(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: EventSubscription
    def __init__(self, subscription: _Optional[_Union[EventSubscription, _Mapping]] = ...) -> None: ...

class CreateSubscriptionResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetSubscriptionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: EventSubscription
    def __init__(self, subscription: _Optional[_Union[EventSubscription, _Mapping]] = ...) -> None: ...

class GetSubscriptionsRequest(_message.Message):
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

class GetSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "next_page_token")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[EventSubscription]
    next_page_token: str
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[EventSubscription, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TerminateSubscriptionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class TerminateSubscriptionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFirstOpenSubscriptionRequest(_message.Message):
    __slots__ = ("event_name", "event_key", "as_of")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    event_key: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, event_name: _Optional[str] = ..., event_key: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetFirstOpenSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: EventSubscription
    def __init__(self, subscription: _Optional[_Union[EventSubscription, _Mapping]] = ...) -> None: ...

class SetSubscriptionTokenRequest(_message.Message):
    __slots__ = ("id", "token", "worker_id", "expiry")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    worker_id: str
    expiry: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ..., worker_id: _Optional[str] = ..., expiry: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetSubscriptionTokenResponse(_message.Message):
    __slots__ = ("acquired",)
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    acquired: bool
    def __init__(self, acquired: _Optional[bool] = ...) -> None: ...

class ClearSubscriptionTokenRequest(_message.Message):
    __slots__ = ("id", "token")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class ClearSubscriptionTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
