import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from wfe.persistence.v1 import workflows_pb2 as _workflows_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowSummary(_message.Message):
    __slots__ = ("id", "name", "workflow_definition_id", "version", "status", "reference", "description", "create_time", "complete_time", "next_execution", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_DEFINITION_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_EXECUTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    workflow_definition_id: str
    version: int
    status: _workflows_pb2.WorkflowStatus
    reference: str
    description: str
    create_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    next_execution: int
    revision: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., workflow_definition_id: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[_Union[_workflows_pb2.WorkflowStatus, str]] = ..., reference: _Optional[str] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_execution: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class WorkflowFilter(_message.Message):
    __slots__ = ("statuses", "workflow_definition_id", "reference", "created_after", "created_before")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_DEFINITION_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[_workflows_pb2.WorkflowStatus]
    workflow_definition_id: str
    reference: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    def __init__(self, statuses: _Optional[_Iterable[_Union[_workflows_pb2.WorkflowStatus, str]]] = ..., workflow_definition_id: _Optional[str] = ..., reference: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: WorkflowFilter
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[WorkflowFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "next_page_token")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowSummary]
    next_page_token: str
    def __init__(self, workflows: _Optional[_Iterable[_Union[WorkflowSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchWorkflowsRequest(_message.Message):
    __slots__ = ("query", "filter", "skip", "take")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    query: str
    filter: WorkflowFilter
    skip: int
    take: int
    def __init__(self, query: _Optional[str] = ..., filter: _Optional[_Union[WorkflowFilter, _Mapping]] = ..., skip: _Optional[int] = ..., take: _Optional[int] = ...) -> None: ...

class SearchWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "total")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowSummary]
    total: int
    def __init__(self, workflows: _Optional[_Iterable[_Union[WorkflowSummary, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class DeleteWorkflowRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeWorkflowsRequest(_message.Message):
    __slots__ = ("older_than", "statuses", "dry_run")
    OLDER_THAN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    older_than: _timestamp_pb2.Timestamp
    statuses: _containers.RepeatedScalarFieldContainer[_workflows_pb2.WorkflowStatus]
    dry_run: bool
    def __init__(self, older_than: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., statuses: _Optional[_Iterable[_Union[_workflows_pb2.WorkflowStatus, str]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PurgeWorkflowsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...
