"""Log set-up of the command line: plain text, or one JSON object per line (``--log-format json``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

__all__ = ["TEXT_FORMAT", "JsonFormatter", "configure_logging", "status_line"]

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
