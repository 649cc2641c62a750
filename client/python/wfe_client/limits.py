"""The numbers server and clients agree on: message size, deadlines, batches, pages, leases, bounds.

The contract (``protos/wfe/persistence/v1``) states each of these in words; this module is the one
place the Python code takes them from. The Rust and TypeScript adapters use the same values.
"""

from __future__ import annotations

from datetime import timedelta

from .errors import InvalidArgument

__all__ = [
    "BATCH_GET_IDS",
    "CLAIM_BATCH",
    "DEFAULT_DEADLINE_SECONDS",
    "DEFAULT_LEASE",
    "DEFAULT_LOCK_TTL",
    "DEFAULT_PAGE_SIZE",
    "INT64_MAX",
    "LIST_PAGE_SIZE",
    "MAX_BATCH_GET_IDS",
    "MAX_CLAIM",
    "MAX_ID_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LEASE",
    "MAX_LIST_PAGE_SIZE",
    "MAX_LOCK_RESOURCES",
    "MAX_LOCK_TTL",
    "MAX_MESSAGE_BYTES",
    "MAX_PAGE_SIZE",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_TERMS",
    "MAX_RENEW_RESOURCES",
    "MAX_SEQUENCE_BLOCK",
    "MAX_TIMESTAMP_SECONDS",
    "MAX_WAIT",
    "MIN_LEASE",
    "MIN_LOCK_TTL",
    "PURGE_DEADLINE_SECONDS",
    "UINT32_MAX",
    "check_claim",
    "check_flag",
    "check_lock_ttl",
    "check_sequence_count",
    "check_wait",
]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message either way (64 MiB): a 16 MiB payload plus its workflow and JSON escaping fits."""

DEFAULT_DEADLINE_SECONDS = 30.0
"""Deadline of each call an adapter makes, in seconds, unless its caller chooses another."""

BATCH_GET_IDS = 1000
"""Ids an adapter puts in one ``BatchGetWorkflows`` request (larger lists are sent as several)."""

MAX_BATCH_GET_IDS = 10_000
"""Most ids one ``BatchGetWorkflows`` request may carry; more is INVALID_ARGUMENT."""

DEFAULT_PAGE_SIZE = 1000
"""Items per page when a request's ``page_size`` is 0."""

MAX_PAGE_SIZE = 10_000
"""Largest page; a larger ``page_size`` is capped to it."""

LIST_PAGE_SIZE = 100
"""Summaries per ``ListWorkflows`` page or ``SearchWorkflows`` window when the request says 0."""

MAX_LIST_PAGE_SIZE = 1000
"""Largest ``ListWorkflows`` page or ``SearchWorkflows`` window; larger ones are capped to it."""

MAX_QUERY_CHARS = 1024
"""Longest ``SearchWorkflows`` query, in characters."""

MAX_QUERY_TERMS = 16
"""Most whitespace-separated terms in one ``SearchWorkflows`` query."""

PURGE_DEADLINE_SECONDS = 3600.0
"""Deadline of a ``PurgeWorkflows`` call an adapter makes: a purge of millions runs batch after batch."""

CLAIM_BATCH = 100
"""Commands claimed at a time: ``ClaimCommands`` with ``max_commands`` 0, and ``process_commands``."""

MAX_CLAIM = 1000
"""Most commands one claim holds; a larger ``max_commands`` is capped to it."""

MAX_SEQUENCE_BLOCK = 10_000
"""Most numbers one ``NextDefinitionSequence`` call may reserve (``count``); more is INVALID_ARGUMENT."""

DEFAULT_LEASE = timedelta(seconds=30)
"""How long a claim on scheduled commands holds before they are offered to others again."""

MIN_LEASE = timedelta(milliseconds=1)
"""Shortest lease a claim may ask for."""

MAX_LEASE = timedelta(hours=1)
"""Longest lease a claim may ask for."""

DEFAULT_LOCK_TTL = timedelta(seconds=30)
"""Time-to-live of a lock's lease when the request gives none (``AcquireLock``, ``RenewLocks``)."""

MIN_LOCK_TTL = timedelta(milliseconds=100)
"""Shortest time-to-live of a lock's lease."""

MAX_LOCK_TTL = timedelta(hours=1)
"""Longest time-to-live of a lock's lease."""

MAX_LOCK_RESOURCES = 16
"""Most ``also_resources`` one ``AcquireLock`` or ``ReleaseLock`` request may name."""

MAX_RENEW_RESOURCES = 10_000
"""Most resources one ``RenewLocks`` request may name."""

MAX_WAIT = timedelta(seconds=60)
"""Longest wait of one ``DequeueWork`` (long poll)."""

MAX_ID_BYTES = 1024
"""Longest id, name, key, token or command data accepted, in UTF-8 bytes."""

UINT32_MAX = 2**32 - 1
"""Largest ``uint32`` (workflow version, step id, retry count)."""

INT64_MAX = 2**63 - 1
"""Largest ``int64`` (``next_execution``, ``execute_time``, epoch milliseconds)."""

MAX_TIMESTAMP_SECONDS = 253402300799
"""The latest instant a Timestamp may hold, 9999-12-31T23:59:59Z, in seconds since the epoch."""

MAX_JSON_DEPTH = 512
"""Deepest nesting of arrays and objects a JSON value may have (``[]`` is 1, a scalar 0)."""


def check_claim(max_commands: int, lease: timedelta) -> None:
    """Refuse a claim outside these limits: ``InvalidArgument`` naming ``max_commands`` or ``lease``."""
    if isinstance(max_commands, bool) or not isinstance(max_commands, int) or max_commands < 1:
        raise InvalidArgument("max_commands: must be a positive integer", field="max_commands")
    if not isinstance(lease, timedelta) or not MIN_LEASE <= lease <= MAX_LEASE:
        raise InvalidArgument("lease: must be between 1 ms and 1 hour", field="lease")


def check_sequence_count(count: int) -> int:
    """How many definition numbers to reserve at once: 1 to ``MAX_SEQUENCE_BLOCK``, else
    ``InvalidArgument`` naming ``count``."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SEQUENCE_BLOCK:
        raise InvalidArgument(f"count: must be an integer from 1 to {MAX_SEQUENCE_BLOCK}, got {count!r}", field="count")
    return count


def check_lock_ttl(ttl: timedelta) -> timedelta:
    """A lock time-to-live within the limits, else ``InvalidArgument`` naming ``ttl``."""
    if not isinstance(ttl, timedelta) or not MIN_LOCK_TTL <= ttl <= MAX_LOCK_TTL:
        raise InvalidArgument(f"ttl: must be a timedelta between {MIN_LOCK_TTL} and {MAX_LOCK_TTL}", field="ttl")
    return ttl


def check_flag(value: object, field: str) -> bool:
    """A flag (a bool field of a model, a purge's ``dry_run``): True or False only, else
    ``InvalidArgument`` naming ``field``; 1, "yes" or None are not taken for their truthiness."""
    if value is not True and value is not False:
        raise InvalidArgument(f"{field}: expected True or False, got {value!r}", field=field)
    return value


def check_wait(wait: timedelta | None) -> timedelta:
    """A dequeue wait (None: none) within the limits, else ``InvalidArgument`` naming ``wait``."""
    if wait is None:
        return timedelta(0)
    if not isinstance(wait, timedelta) or not timedelta(0) <= wait <= MAX_WAIT:
        raise InvalidArgument(f"wait: must be None or a timedelta between 0 and {MAX_WAIT}", field="wait")
    return wait
