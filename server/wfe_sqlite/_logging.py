"""Log set-up of the command line: plain text, or one JSON object per line (``--log-format json``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["TEXT_FORMAT", "JsonFormatter", "RetriedFailure", "configure_logging", "status_line"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_EXTRA_FIELDS = ("rpc", "code", "duration_ms", "peer")
"""Structured fields some records carry (access logs), copied into the JSON object."""


def _entry(created: float, level: str, logger: str, message: str) -> dict[str, object]:
    return {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
    }


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}`` on one line; access records add their fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname, record.name, record.getMessage())
        for name in _EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Root logging to stderr at ``level`` in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def status_line(log_format: str, message: str, logger: str, level: str = "INFO", **fields: object) -> str:
    """A line the command line prints itself (``listening on HOST:PORT``, a start-up failure).

    ``text``: the message as it is. ``json``: one JSON object like a log line's, with ``fields``
    added (``{"time", "level", "logger", "message", "address"}``), so that a log pipeline reading
    the server's output sees nothing but JSON.
    """
    if log_format != "json":
        return message
    return json.dumps({**_entry(time.time(), level, logger, message), **fields}, ensure_ascii=False, default=str)


class RetriedFailure:
    """The warnings of a background job that retries until it works again (a sweep, a timer, a
    reconnect), so that an outage of the database gives a few lines, not one per try.

    The first failure, and each message not seen since, is logged at once. The same message again
    is logged at most once every ``repeat_every`` seconds, saying how many tries failed meanwhile.
    The first success after failures logs one line saying so (INFO).
    """

    MAX_MESSAGES = 16
    """Distinct messages remembered per outage; past that, new ones count as repeats."""

    def __init__(
        self,
        logger: logging.Logger,
        name: str,
        *,
        repeat_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._name = name
        self._repeat_every = repeat_every
        self._clock = clock
        self._since: float | None = None
        self._failures = 0
        self._messages: set[str] = set()
        self._logged_at = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last try failed."""
        return self._since is not None

    def failed(self, error: BaseException | str, retry: str) -> None:
        """A try failed with ``error``; ``retry`` says when the next one comes ("retrying in 1 s")."""
        now = self._clock()
        message = str(error) or type(error).__name__
        if self._since is None:
            self._since = now
        self._failures += 1
        if message not in self._messages and len(self._messages) < self.MAX_MESSAGES:
            self._messages.add(message)
            self._log.warning("%s failed (%s): %s", self._name, retry, message)
            self._logged_at = now
        elif now - self._logged_at >= self._repeat_every:
            self._log.warning(
                "%s still failing (%s): %d tries failed in %.0f s, the last with: %s",
                self._name,
                retry,
                self._failures,
                now - self._since,
                message,
            )
            self._logged_at = now

    def succeeded(self) -> None:
        """A try worked: after failures, say so once and start counting afresh."""
        if self._since is None:
            return
        self._log.info(
            "%s works again, after %d failed tries in %.1f s", self._name, self._failures, self._clock() - self._since
        )
        self._since = None
        self._failures = 0
        self._messages.clear()
