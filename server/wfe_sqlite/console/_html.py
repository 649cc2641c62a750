"""HTML built from escaped parts: every value is escaped unless it is already ``Html``.

Templates are literal strings in the code; what fills them comes from the store and is escaped on
the way in (``html("<td>{}</td>", name)``), so a workflow named ``<script>`` is text on the page.
"""

from __future__ import annotations

import html as _html
import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Html", "escape", "html", "join", "pretty_json", "url"]


class Html(str):
    """Markup that is safe to put on a page as it is (built by ``html`` or ``escape``)."""

    __slots__ = ()


def escape(value: Any) -> Html:
    """``value`` as text on a page: ``Html`` as it is, None as empty, anything else escaped."""
    if isinstance(value, Html):
        return value
    if value is None:
        return Html("")
    return Html(_html.escape(str(value), quote=True))


def html(template: str, *args: Any, **kwargs: Any) -> Html:
    """``template.format`` with every argument escaped (``Html`` arguments go in as they are)."""
    return Html(template.format(*(escape(a) for a in args), **{k: escape(v) for k, v in kwargs.items()}))


def join(parts: Iterable[Any], separator: str = "") -> Html:
    """The parts, each escaped, one after the other."""
    return Html(escape(separator).join(escape(part) for part in parts))


def url(path: str, query: Mapping[str, Any] | None = None) -> str:
    """``path`` with ``query`` (values None or empty left out; a list repeats the name)."""
    pairs: list[tuple[str, str]] = []
    for name, value in (query or {}).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        pairs.extend((name, str(v)) for v in values if v is not None and v != "")
    return path + ("?" + urllib.parse.urlencode(pairs) if pairs else "")


def pretty_json(value: Any, limit: int) -> tuple[str, bool, int]:
    """A JSON value as text for reading, cut at ``limit`` characters: (text, whether it was cut, full length).

    Indented when it is short enough to be read whole; a long one stays compact (the C encoder:
    indenting runs the pure-Python one, far too slow for megabytes).
    """
    compact = json.dumps(value, ensure_ascii=False)
    if len(compact) > limit:
        return compact[:limit], True, len(compact)
    indented = json.dumps(value, indent=2, ensure_ascii=False)
    return indented[:limit], len(indented) > limit, len(indented)
