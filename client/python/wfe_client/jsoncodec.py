"""JSON values as JSON text: the one encoder and decoder both providers and the wire use."""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidArgument

__all__ = ["json_text", "parse_json"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_text(value: Any, field: str = "value") -> str:
    """Compact JSON text of a JSON value (exact for integers of any size)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field}: not valid Unicode text (lone surrogate)", field=field) from None
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"{field}: not a JSON value: {error}", field=field) from None
    return text


def parse_json(text: str, field: str) -> Any:
    """The JSON value in ``text``; InvalidArgument (naming ``field``) when it is not JSON."""
    if not text:
        raise InvalidArgument(f"{field}: empty; JSON text is required (use 'null' for no value)", field=field)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidArgument(f"{field}: JSON nested too deeply", field=field) from None
    except ValueError as error:
        raise InvalidArgument(f"{field}: invalid JSON text: {error}", field=field) from None
