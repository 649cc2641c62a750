"""Instants: timezone-aware datetimes, stored and sent as integer microseconds since the epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .errors import InvalidArgument

__all__ = ["EPOCH", "from_micros", "require_aware", "to_micros", "utc_now"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The Unix epoch, 1970-01-01T00:00:00Z."""

_MICRO = timedelta(microseconds=1)


def utc_now() -> datetime:
    """The current instant in UTC."""
    return datetime.now(UTC)


def require_aware(value: datetime, field: str) -> datetime:
    """Return ``value`` if it is a timezone-aware datetime, else raise ``InvalidArgument`` naming ``field``.

    ``InvalidArgument`` is a ``ValueError``: a naive datetime is the ``ValueError`` the interface
    promises, and the same exception from both providers, whichever argument or record it is in.
    """
    if value.__class__ is datetime and value.tzinfo is UTC:
        return value  # the common case, checked in one step
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{field}: expected a timezone-aware datetime", field=field)
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidArgument(
            f"{field}: naive datetime {value.isoformat()}; pass a timezone-aware datetime", field=field
        )
    return value


def to_micros(value: datetime, field: str = "datetime") -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    require_aware(value, field)
    return (value - EPOCH) // _MICRO


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=micros)
