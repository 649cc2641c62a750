import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from wfe.persistence.v1 import workflows_pb2 as _workflows_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AcquireLockRequest(_message.Message):
    __slots__ = ("resource", "owner", "ttl", "also_resources", "read_workflow_id")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ALSO_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    READ_WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    resource: str
    owner: str
    ttl: _duration_pb2.Duration
    also_resources: _containers.RepeatedScalarFieldContainer[str]
    read_workflow_id: str
    def __init__(self, resource: _Optional[str] = ..., owner: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., also_resources: _Optional[_Iterable[str]] = ..., read_workflow_id: _Optional[str] = ...) -> None: ...

class AcquireLockResponse(_message.Message):
    __slots__ = ("acquired", "fencing_token", "expire_time", "also_fencing_tokens", "workflow")
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ALSO_FENCING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    acquired: bool
    fencing_token: int
    expire_time: _timestamp_pb2.Timestamp
    also_fencing_tokens: _containers.RepeatedScalarFieldContainer[int]
    workflow: _workflows_pb2.WorkflowInstance
    def __init__(self, acquired: _Optional[bool] = ..., fencing_token: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., also_fencing_tokens: _Optional[_Iterable[int]] = ..., workflow: _Optional[_Union[_workflows_pb2.WorkflowInstance, _Mapping]] = ...) -> None: ...

class RenewLocksRequest(_message.Message):
    __slots__ = ("owner", "resources", "ttl")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    owner: str
    resources: _containers.RepeatedScalarFieldContainer[str]
    ttl: _duration_pb2.Duration
    def __init__(self, owner: _Optional[str] = ..., resources: _Optional[_Iterable[str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RenewLocksResponse(_message.Message):
    __slots__ = ("lost_resources",)
    LOST_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    lost_resources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lost_resources: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseLockRequest(_message.Message):
    __slots__ = ("resource", "owner", "also_resources")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ALSO_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resource: str
    owner: str
    also_resources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resource: _Optional[str] = ..., owner: _Optional[str] = ..., also_resources: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseLockResponse(_message.Message):
    __slots__ = ("released", "also_released")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    ALSO_RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    also_released: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, released: _Optional[bool] = ..., also_released: _Optional[_Iterable[str]] = ...) -> None: ...
