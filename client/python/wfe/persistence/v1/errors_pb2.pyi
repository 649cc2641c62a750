from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    WORKFLOW_NOT_FOUND: _ClassVar[ErrorReason]
    EVENT_NOT_FOUND: _ClassVar[ErrorReason]
    SUBSCRIPTION_NOT_FOUND: _ClassVar[ErrorReason]
    WORKFLOW_ALREADY_EXISTS: _ClassVar[ErrorReason]
    WORKFLOW_NAME_TAKEN: _ClassVar[ErrorReason]
    EVENT_ALREADY_EXISTS: _ClassVar[ErrorReason]
    SUBSCRIPTION_ALREADY_EXISTS: _ClassVar[ErrorReason]
    INVALID_ARGUMENT: _ClassVar[ErrorReason]
    LEASE_LOST: _ClassVar[ErrorReason]
    STORAGE_FULL: _ClassVar[ErrorReason]
    STORAGE_UNAVAILABLE: _ClassVar[ErrorReason]
    UNAUTHENTICATED: _ClassVar[ErrorReason]
    REVISION_CONFLICT: _ClassVar[ErrorReason]
    STREAM_IDLE: _ClassVar[ErrorReason]
    WATCHER_FELL_BEHIND: _ClassVar[ErrorReason]
    TOO_MANY_WAITING_DEQUEUES: _ClassVar[ErrorReason]
    TOO_MANY_WATCHERS: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
WORKFLOW_NOT_FOUND: ErrorReason
EVENT_NOT_FOUND: ErrorReason
SUBSCRIPTION_NOT_FOUND: ErrorReason
WORKFLOW_ALREADY_EXISTS: ErrorReason
WORKFLOW_NAME_TAKEN: ErrorReason
EVENT_ALREADY_EXISTS: ErrorReason
SUBSCRIPTION_ALREADY_EXISTS: ErrorReason
INVALID_ARGUMENT: ErrorReason
LEASE_LOST: ErrorReason
STORAGE_FULL: ErrorReason
STORAGE_UNAVAILABLE: ErrorReason
UNAUTHENTICATED: ErrorReason
REVISION_CONFLICT: ErrorReason
STREAM_IDLE: ErrorReason
WATCHER_FELL_BEHIND: ErrorReason
TOO_MANY_WAITING_DEQUEUES: ErrorReason
TOO_MANY_WATCHERS: ErrorReason
