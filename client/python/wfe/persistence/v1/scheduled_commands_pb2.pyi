import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommandName(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_NAME_UNSPECIFIED: _ClassVar[CommandName]
    COMMAND_NAME_PROCESS_WORKFLOW: _ClassVar[CommandName]
    COMMAND_NAME_PROCESS_EVENT: _ClassVar[CommandName]
COMMAND_NAME_UNSPECIFIED: CommandName
COMMAND_NAME_PROCESS_WORKFLOW: CommandName
COMMAND_NAME_PROCESS_EVENT: CommandName

class ScheduledCommand(_message.Message):
    __slots__ = ("command_name", "data", "execute_time")
    COMMAND_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_TIME_FIELD_NUMBER: _ClassVar[int]
    command_name: CommandName
    data: str
    execute_time: int
    def __init__(self, command_name: _Optional[_Union[CommandName, str]] = ..., data: _Optional[str] = ..., execute_time: _Optional[int] = ...) -> None: ...

class ScheduleCommandRequest(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: ScheduledCommand
    def __init__(self, command: _Optional[_Union[ScheduledCommand, _Mapping]] = ...) -> None: ...

class ScheduleCommandResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClaimCommandsRequest(_message.Message):
    __slots__ = ("as_of", "max_commands", "lease_duration", "worker_id")
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    MAX_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    as_of: _timestamp_pb2.Timestamp
    max_commands: int
    lease_duration: _duration_pb2.Duration
    worker_id: str
    def __init__(self, as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_commands: _Optional[int] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ClaimedCommand(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: ScheduledCommand
    def __init__(self, command: _Optional[_Union[ScheduledCommand, _Mapping]] = ...) -> None: ...

class ClaimCommandsResponse(_message.Message):
    __slots__ = ("commands", "lease_id", "lease_expiry")
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[ClaimedCommand]
    lease_id: str
    lease_expiry: _timestamp_pb2.Timestamp
    def __init__(self, commands: _Optional[_Iterable[_Union[ClaimedCommand, _Mapping]]] = ..., lease_id: _Optional[str] = ..., lease_expiry: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AcknowledgeCommandRequest(_message.Message):
    __slots__ = ("command_name", "data", "lease_id")
    COMMAND_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    command_name: CommandName
    data: str
    lease_id: str
    def __init__(self, command_name: _Optional[_Union[CommandName, str]] = ..., data: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class AcknowledgeCommandResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseCommandRequest(_message.Message):
    __slots__ = ("command_name", "data", "lease_id")
    COMMAND_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    command_name: CommandName
    data: str
    lease_id: str
    def __init__(self, command_name: _Optional[_Union[CommandName, str]] = ..., data: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class ReleaseCommandResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
