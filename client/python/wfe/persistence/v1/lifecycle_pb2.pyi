import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LifecycleEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIFECYCLE_EVENT_TYPE_UNSPECIFIED: _ClassVar[LifecycleEventType]
    LIFECYCLE_EVENT_TYPE_STARTED: _ClassVar[LifecycleEventType]
    LIFECYCLE_EVENT_TYPE_RESUMED: _ClassVar[LifecycleEventType]
    LIFECYCLE_EVENT_TYPE_SUSPENDED: _ClassVar[LifecycleEventType]
    LIFECYCLE_EVENT_TYPE_COMPLETED: _ClassVar[LifecycleEventType]
    LIFECYCLE_EVENT_TYPE_TERMINATED: _ClassVar[LifecycleEventType]
    LIFECYCLE_EVENT_TYPE_ERROR: _ClassVar[LifecycleEventType]
    LIFECYCLE_EVENT_TYPE_STEP_STARTED: _ClassVar[LifecycleEventType]
    LIFECYCLE_EVENT_TYPE_STEP_COMPLETED: _ClassVar[LifecycleEventType]
LIFECYCLE_EVENT_TYPE_UNSPECIFIED: LifecycleEventType
LIFECYCLE_EVENT_TYPE_STARTED: LifecycleEventType
LIFECYCLE_EVENT_TYPE_RESUMED: LifecycleEventType
LIFECYCLE_EVENT_TYPE_SUSPENDED: LifecycleEventType
LIFECYCLE_EVENT_TYPE_COMPLETED: LifecycleEventType
LIFECYCLE_EVENT_TYPE_TERMINATED: LifecycleEventType
LIFECYCLE_EVENT_TYPE_ERROR: LifecycleEventType
LIFECYCLE_EVENT_TYPE_STEP_STARTED: LifecycleEventType
LIFECYCLE_EVENT_TYPE_STEP_COMPLETED: LifecycleEventType

class LifecycleEvent(_message.Message):
    __slots__ = ("event_time", "workflow_instance_id", "workflow_definition_id", "version", "reference", "type", "step_id", "step_name", "message")
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_DEFINITION_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    event_time: _timestamp_pb2.Timestamp
    workflow_instance_id: str
    workflow_definition_id: str
    version: int
    reference: str
    type: LifecycleEventType
    step_id: int
    step_name: str
    message: str
    def __init__(self, event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workflow_instance_id: _Optional[str] = ..., workflow_definition_id: _Optional[str] = ..., version: _Optional[int] = ..., reference: _Optional[str] = ..., type: _Optional[_Union[LifecycleEventType, str]] = ..., step_id: _Optional[int] = ..., step_name: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PublishLifecycleEventRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: LifecycleEvent
    def __init__(self, event: _Optional[_Union[LifecycleEvent, _Mapping]] = ...) -> None: ...

class PublishLifecycleEventResponse(_message.Message):
    __slots__ = ("watchers",)
    WATCHERS_FIELD_NUMBER: _ClassVar[int]
    watchers: int
    def __init__(self, watchers: _Optional[int] = ...) -> None: ...

class WatchLifecycleEventsRequest(_message.Message):
    __slots__ = ("workflow_instance_id", "workflow_definition_id")
    WORKFLOW_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_DEFINITION_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_instance_id: str
    workflow_definition_id: str
    def __init__(self, workflow_instance_id: _Optional[str] = ..., workflow_definition_id: _Optional[str] = ...) -> None: ...

class WatchLifecycleEventsResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: LifecycleEvent
    def __init__(self, event: _Optional[_Union[LifecycleEvent, _Mapping]] = ...) -> None: ...
