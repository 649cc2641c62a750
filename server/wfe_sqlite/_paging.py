"""Pages cut by a row limit and a byte budget, and wire-size estimates: shared by both stores (no SQL)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from ._rows import PointerRow, WorkflowRow

__all__ = ["cut_page", "row_bytes", "workflow_bytes"]


def row_bytes(row: Sequence[Any]) -> int:
    """About how many bytes a row takes on the wire: its text and blob lengths, 8 per other value."""
    return sum(len(value) if isinstance(value, (str, bytes)) else 8 for value in row)


def cut_page(rows: Iterable[Sequence[Any]], limit: int | None, budget: int | None) -> tuple[list[Any], bool]:
    """The rows of a query run with one row past ``limit``, cut as a page: (rows, more follow).

    Rows are read one at a time and reading stops at the first one past either bound (a page
    always holds at least one row, however large).
    """
    page: list[Any] = []
    used = 0
    for row in rows:
        if limit is not None and len(page) == limit:
            return page, True
        if budget is not None:
            used += row_bytes(row)
            if page and used > budget:
                return page, True
        page.append(row)
    return page, False


def _text_columns(row: type[NamedTuple]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values of a row type's text columns (those annotated ``str``), by name."""
    names = [name for name, kind in row.__annotations__.items() if "str" in str(kind)]
    return operator.itemgetter(*(row._fields.index(name) for name in names))


_WORKFLOW_TEXT = _text_columns(WorkflowRow)
_POINTER_TEXT = _text_columns(PointerRow)


def workflow_bytes(row: WorkflowRow, pointers: Sequence[PointerRow]) -> int:
    """About how many bytes a stored workflow takes on the wire: its texts' lengths, 64 per record."""
    size = sum(map(len, filter(None, _WORKFLOW_TEXT(row)))) + 64
    for pointer in pointers:
        size += sum(map(len, filter(None, _POINTER_TEXT(pointer)))) + 64
    return size
