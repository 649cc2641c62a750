import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionError(_message.Message):
    __slots__ = ("error_time", "workflow_id", "execution_pointer_id", "message")
    ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_POINTER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    error_time: _timestamp_pb2.Timestamp
    workflow_id: str
    execution_pointer_id: str
    message: str
    def __init__(self, error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workflow_id: _Optional[str] = ..., execution_pointer_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PersistErrorsRequest(_message.Message):
    __slots__ = ("errors",)
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    errors: _containers.RepeatedCompositeFieldContainer[ExecutionError]
    def __init__(self, errors: _Optional[_Iterable[_Union[ExecutionError, _Mapping]]] = ...) -> None: ...

class PersistErrorsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnsureStoreExistsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnsureStoreExistsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
