import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from wfe.persistence.v1 import subscriptions_pb2 as _subscriptions_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKFLOW_STATUS_UNSPECIFIED: _ClassVar[WorkflowStatus]
    WORKFLOW_STATUS_RUNNABLE: _ClassVar[WorkflowStatus]
    WORKFLOW_STATUS_SUSPENDED: _ClassVar[WorkflowStatus]
    WORKFLOW_STATUS_COMPLETE: _ClassVar[WorkflowStatus]
    WORKFLOW_STATUS_TERMINATED: _ClassVar[WorkflowStatus]

class PointerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POINTER_STATUS_UNSPECIFIED: _ClassVar[PointerStatus]
    POINTER_STATUS_PENDING: _ClassVar[PointerStatus]
    POINTER_STATUS_RUNNING: _ClassVar[PointerStatus]
    POINTER_STATUS_COMPLETE: _ClassVar[PointerStatus]
    POINTER_STATUS_SKIPPED: _ClassVar[PointerStatus]
    POINTER_STATUS_SLEEPING: _ClassVar[PointerStatus]
    POINTER_STATUS_WAITING_FOR_EVENT: _ClassVar[PointerStatus]
    POINTER_STATUS_FAILED: _ClassVar[PointerStatus]
    POINTER_STATUS_COMPENSATED: _ClassVar[PointerStatus]
    POINTER_STATUS_CANCELLED: _ClassVar[PointerStatus]
    POINTER_STATUS_PENDING_PREDECESSOR: _ClassVar[PointerStatus]
WORKFLOW_STATUS_UNSPECIFIED: WorkflowStatus
WORKFLOW_STATUS_RUNNABLE: WorkflowStatus
WORKFLOW_STATUS_SUSPENDED: WorkflowStatus
WORKFLOW_STATUS_COMPLETE: WorkflowStatus
WORKFLOW_STATUS_TERMINATED: WorkflowStatus
POINTER_STATUS_UNSPECIFIED: PointerStatus
POINTER_STATUS_PENDING: PointerStatus
POINTER_STATUS_RUNNING: PointerStatus
POINTER_STATUS_COMPLETE: PointerStatus
POINTER_STATUS_SKIPPED: PointerStatus
POINTER_STATUS_SLEEPING: PointerStatus
POINTER_STATUS_WAITING_FOR_EVENT: PointerStatus
POINTER_STATUS_FAILED: PointerStatus
POINTER_STATUS_COMPENSATED: PointerStatus
POINTER_STATUS_CANCELLED: PointerStatus
POINTER_STATUS_PENDING_PREDECESSOR: PointerStatus

class WorkflowInstance(_message.Message):
    __slots__ = ("id", "name", "root_workflow_id", "workflow_definition_id", "version", "description", "reference", "execution_pointers", "next_execution", "status", "data", "create_time", "complete_time", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_DEFINITION_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_POINTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_EXECUTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    root_workflow_id: str
    workflow_definition_id: str
    version: int
    description: str
    reference: str
    execution_pointers: _containers.RepeatedCompositeFieldContainer[ExecutionPointer]
    next_execution: int
    status: WorkflowStatus
    data: str
    create_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    revision: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., root_workflow_id: _Optional[str] = ..., workflow_definition_id: _Optional[str] = ..., version: _Optional[int] = ..., description: _Optional[str] = ..., reference: _Optional[str] = ..., execution_pointers: _Optional[_Iterable[_Union[ExecutionPointer, _Mapping]]] = ..., next_execution: _Optional[int] = ..., status: _Optional[_Union[WorkflowStatus, str]] = ..., data: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class ExecutionPointer(_message.Message):
    __slots__ = ("id", "step_id", "active", "status", "sleep_until", "persistence_data", "start_time", "end_time", "event_name", "event_key", "event_published", "event_data", "step_name", "retry_count", "children", "context_item", "predecessor_id", "outcome", "scope", "extension_attributes")
    class ExtensionAttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SLEEP_UNTIL_FIELD_NUMBER: _ClassVar[int]
    PERSISTENCE_DATA_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    EVENT_DATA_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    RETRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ITEM_FIELD_NUMBER: _ClassVar[int]
    PREDECESSOR_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    step_id: int
    active: bool
    status: PointerStatus
    sleep_until: _timestamp_pb2.Timestamp
    persistence_data: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    event_name: str
    event_key: str
    event_published: bool
    event_data: str
    step_name: str
    retry_count: int
    children: _containers.RepeatedScalarFieldContainer[str]
    context_item: str
    predecessor_id: str
    outcome: str
    scope: _containers.RepeatedScalarFieldContainer[str]
    extension_attributes: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., step_id: _Optional[int] = ..., active: _Optional[bool] = ..., status: _Optional[_Union[PointerStatus, str]] = ..., sleep_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., persistence_data: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_name: _Optional[str] = ..., event_key: _Optional[str] = ..., event_published: _Optional[bool] = ..., event_data: _Optional[str] = ..., step_name: _Optional[str] = ..., retry_count: _Optional[int] = ..., children: _Optional[_Iterable[str]] = ..., context_item: _Optional[str] = ..., predecessor_id: _Optional[str] = ..., outcome: _Optional[str] = ..., scope: _Optional[_Iterable[str]] = ..., extension_attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateWorkflowRequest(_message.Message):
    __slots__ = ("workflow",)
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    workflow: WorkflowInstance
    def __init__(self, workflow: _Optional[_Union[WorkflowInstance, _Mapping]] = ...) -> None: ...

class CreateWorkflowResponse(_message.Message):
    __slots__ = ("id", "name", "revision", "server_queues")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SERVER_QUEUES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    revision: int
    server_queues: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., revision: _Optional[int] = ..., server_queues: _Optional[bool] = ...) -> None: ...

class PersistWorkflowRequest(_message.Message):
    __slots__ = ("workflow", "expected_revision")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    workflow: WorkflowInstance
    expected_revision: int
    def __init__(self, workflow: _Optional[_Union[WorkflowInstance, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PersistWorkflowResponse(_message.Message):
    __slots__ = ("revision", "server_queues")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SERVER_QUEUES_FIELD_NUMBER: _ClassVar[int]
    revision: int
    server_queues: bool
    def __init__(self, revision: _Optional[int] = ..., server_queues: _Optional[bool] = ...) -> None: ...

class PersistWorkflowWithSubscriptionsRequest(_message.Message):
    __slots__ = ("workflow", "subscriptions", "expected_revision")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    workflow: WorkflowInstance
    subscriptions: _containers.RepeatedCompositeFieldContainer[_subscriptions_pb2.EventSubscription]
    expected_revision: int
    def __init__(self, workflow: _Optional[_Union[WorkflowInstance, _Mapping]] = ..., subscriptions: _Optional[_Iterable[_Union[_subscriptions_pb2.EventSubscription, _Mapping]]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PersistWorkflowWithSubscriptionsResponse(_message.Message):
    __slots__ = ("subscription_ids", "revision", "server_queues")
    SUBSCRIPTION_IDS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SERVER_QUEUES_FIELD_NUMBER: _ClassVar[int]
    subscription_ids: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    server_queues: bool
    def __init__(self, subscription_ids: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., server_queues: _Optional[bool] = ...) -> None: ...

class GetRunnableWorkflowsRequest(_message.Message):
    __slots__ = ("as_at", "page_size", "page_token")
    AS_AT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    as_at: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, as_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetRunnableWorkflowsResponse(_message.Message):
    __slots__ = ("workflow_ids", "next_page_token")
    WORKFLOW_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflow_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, workflow_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetWorkflowResponse(_message.Message):
    __slots__ = ("workflow",)
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    workflow: WorkflowInstance
    def __init__(self, workflow: _Optional[_Union[WorkflowInstance, _Mapping]] = ...) -> None: ...

class GetWorkflowByNameRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetWorkflowByNameResponse(_message.Message):
    __slots__ = ("workflow",)
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    workflow: WorkflowInstance
    def __init__(self, workflow: _Optional[_Union[WorkflowInstance, _Mapping]] = ...) -> None: ...

class BatchGetWorkflowsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetWorkflowsResponse(_message.Message):
    __slots__ = ("workflows",)
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowInstance]
    def __init__(self, workflows: _Optional[_Iterable[_Union[WorkflowInstance, _Mapping]]] = ...) -> None: ...

class NextDefinitionSequenceRequest(_message.Message):
    __slots__ = ("definition_id", "count")
    DEFINITION_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    definition_id: str
    count: int
    def __init__(self, definition_id: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class NextDefinitionSequenceResponse(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: int
    def __init__(self, value: _Optional[int] = ...) -> None: ...
