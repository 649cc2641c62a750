import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from wfe.persistence.v1 import events_pb2 as _events_pb2
from wfe.persistence.v1 import subscriptions_pb2 as _subscriptions_pb2
from wfe.persistence.v1 import workflows_pb2 as _workflows_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueueType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUEUE_TYPE_UNSPECIFIED: _ClassVar[QueueType]
    QUEUE_TYPE_WORKFLOW: _ClassVar[QueueType]
    QUEUE_TYPE_EVENT: _ClassVar[QueueType]
    QUEUE_TYPE_INDEX: _ClassVar[QueueType]
QUEUE_TYPE_UNSPECIFIED: QueueType
QUEUE_TYPE_WORKFLOW: QueueType
QUEUE_TYPE_EVENT: QueueType
QUEUE_TYPE_INDEX: QueueType

class QueueWorkRequest(_message.Message):
    __slots__ = ("id", "queue")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: QueueType
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[_Union[QueueType, str]] = ...) -> None: ...

class QueueWorkResponse(_message.Message):
    __slots__ = ("queued",)
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    queued: bool
    def __init__(self, queued: _Optional[bool] = ...) -> None: ...

class DequeueWorkRequest(_message.Message):
    __slots__ = ("queue", "wait", "include_workflow", "leases", "release_resources", "include_event", "mark_processed_if_unsubscribed")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    RELEASE_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EVENT_FIELD_NUMBER: _ClassVar[int]
    MARK_PROCESSED_IF_UNSUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    queue: QueueType
    wait: _duration_pb2.Duration
    include_workflow: bool
    leases: DequeueLeases
    release_resources: _containers.RepeatedScalarFieldContainer[str]
    include_event: bool
    mark_processed_if_unsubscribed: bool
    def __init__(self, queue: _Optional[_Union[QueueType, str]] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., include_workflow: _Optional[bool] = ..., leases: _Optional[_Union[DequeueLeases, _Mapping]] = ..., release_resources: _Optional[_Iterable[str]] = ..., include_event: _Optional[bool] = ..., mark_processed_if_unsubscribed: _Optional[bool] = ...) -> None: ...

class DequeueLeases(_message.Message):
    __slots__ = ("owner", "ttl", "prefixes")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    owner: str
    ttl: _duration_pb2.Duration
    prefixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, owner: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., prefixes: _Optional[_Iterable[str]] = ...) -> None: ...

class DequeueWorkResponse(_message.Message):
    __slots__ = ("id", "workflow", "fencing_tokens", "lease_expire_time", "event", "subscriptions_included", "subscriptions", "marked_processed")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_INCLUDED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    MARKED_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    id: str
    workflow: _workflows_pb2.WorkflowInstance
    fencing_tokens: _containers.RepeatedScalarFieldContainer[int]
    lease_expire_time: _timestamp_pb2.Timestamp
    event: _events_pb2.Event
    subscriptions_included: bool
    subscriptions: _containers.RepeatedCompositeFieldContainer[_subscriptions_pb2.EventSubscription]
    marked_processed: bool
    def __init__(self, id: _Optional[str] = ..., workflow: _Optional[_Union[_workflows_pb2.WorkflowInstance, _Mapping]] = ..., fencing_tokens: _Optional[_Iterable[int]] = ..., lease_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[_Union[_events_pb2.Event, _Mapping]] = ..., subscriptions_included: _Optional[bool] = ..., subscriptions: _Optional[_Iterable[_Union[_subscriptions_pb2.EventSubscription, _Mapping]]] = ..., marked_processed: _Optional[bool] = ...) -> None: ...
