"""Visibility rows and their conversions: summaries, the checked filter in storage units, page
tokens, and a workflow's details. Backend-neutral: any store returns these rows."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

from wfe_client.errors import InvalidArgument
from wfe_client.limits import MAX_QUERY_CHARS, MAX_QUERY_TERMS
from wfe_client.models import EventSubscription, ExecutionError, WorkflowInstance, WorkflowStatus, WorkflowSummary
from wfe_client.timeutil import from_micros
from wfe_client.visibility import NOT_A_PAGE_TOKEN, WorkflowFilter

from ._rows import ErrorRow, PageKey, StoredWorkflow, SubscriptionRow, micros, subscription_from_row, workflow_from_rows

__all__ = [
    "DetailsRows",
    "FilterRow",
    "SummaryRow",
    "WorkflowDetails",
    "decode_page_token",
    "details_from_rows",
    "encode_page_token",
    "filter_row",
    "search_terms",
    "summary_from_row",
]

_MAX_TOKEN_CHARS = 4096


class SummaryRow(NamedTuple):
    """The columns of ``workflows`` a ``WorkflowSummary`` shows."""

    id: str
    name: str
    workflow_definition_id: str
    version: int
    status: str
    reference: str | None
    description: str | None
    create_time: int
    complete_time: int | None
    next_execution: int | None
    revision: int


class FilterRow(NamedTuple):
    """A checked ``WorkflowFilter`` in storage units: status member names, epoch microseconds."""

    statuses: tuple[str, ...]
    definition_id: str | None
    reference: str | None
    created_after: int | None
    created_before: int | None


class DetailsRows(NamedTuple):
    """A stored workflow, its subscriptions (each with whether it is terminated) and its errors."""

    workflow: StoredWorkflow
    subscriptions: list[tuple[SubscriptionRow, bool]]
    errors: list[ErrorRow]


def filter_row(f: WorkflowFilter) -> FilterRow:
    """The ``FilterRow`` of a checked filter; an instant before 1970 is InvalidArgument."""
    return FilterRow(
        statuses=tuple(s.name for s in f.statuses),
        definition_id=f.definition_id,
        reference=f.reference,
        created_after=None if f.created_after is None else micros(f.created_after, "created_after"),
        created_before=None if f.created_before is None else micros(f.created_before, "created_before"),
    )


def summary_from_row(r: SummaryRow) -> WorkflowSummary:
    return WorkflowSummary(
        id=r.id,
        name=r.name,
        workflow_definition_id=r.workflow_definition_id,
        version=r.version,
        status=WorkflowStatus[r.status],
        reference=r.reference,
        description=r.description,
        create_time=from_micros(r.create_time),
        complete_time=None if r.complete_time is None else from_micros(r.complete_time),
        next_execution=r.next_execution,
        revision=r.revision,
    )


# -- search text -------------------------------------------------------------------------------


def search_terms(text: object) -> list[tuple[str, bool]]:
    """The terms of a user's search text, each (word, whether it ends in ``*``: a prefix), checked.

    Terms are separated by whitespace; a term without letters or digits is left out; a text with
    no term left, too long or with too many terms is InvalidArgument (field ``query``). Each store
    turns the terms into its own full-text query, so nothing in the text is query syntax.
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"query: expected a string, got {type(text).__name__}", field="query")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"query: longer than {MAX_QUERY_CHARS} characters", field="query")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("query: not valid Unicode text (lone surrogate)", field="query") from None
    terms = []
    for term in text.split():
        word = term.rstrip("*")
        if any(ch.isalnum() for ch in word):
            terms.append((word, term.endswith("*")))
    if not terms:
        raise InvalidArgument("query: no word to search for (letters or digits)", field="query")
    if len(terms) > MAX_QUERY_TERMS:
        raise InvalidArgument(f"query: more than {MAX_QUERY_TERMS} words", field="query")
    return terms


# -- page tokens -------------------------------------------------------------------------------


def _seal(f: FilterRow, key: PageKey) -> str:
    """A short digest of a filter and a position: a token only continues the list it came from,
    and a token altered or cut short is refused instead of read as some other position."""
    parts = [
        ",".join(sorted(f.statuses)),
        f.definition_id or "",
        "\x00" if f.reference is None else "=" + f.reference,
        "" if f.created_after is None else str(f.created_after),
        "" if f.created_before is None else str(f.created_before),
        str(key[0]),
        key[1],
    ]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def encode_page_token(f: FilterRow, key: PageKey) -> str:
    """The opaque token of the page after ``key`` of the list selected by ``f``."""
    raw = f"{_seal(f, key)}:{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_page_token(f: FilterRow, token: object) -> PageKey | None:
    """The position a token continues after; InvalidArgument for a token not from this list."""
    if token is None or token == "":
        return None
    invalid = InvalidArgument(NOT_A_PAGE_TOKEN, field="page_token")
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode()
        seal, number, last = raw.split(":", 2)
        key = (int(number), last)
    except (ValueError, UnicodeError):
        raise invalid from None
    if seal != _seal(f, key):
        raise invalid
    return key


# -- one workflow with everything about it -----------------------------------------------------


@dataclass
class WorkflowDetails:
    """A workflow with its subscriptions and execution errors (what ``wfe-sqlite show`` prints)."""

    workflow: WorkflowInstance
    """The workflow with its pointers."""
    subscriptions: list[EventSubscription] = field(default_factory=list)
    """Its event subscriptions, oldest first, terminated ones included."""
    terminated: set[str] = field(default_factory=set)
    """Ids of the terminated ones among ``subscriptions``."""
    errors: list[ExecutionError] = field(default_factory=list)
    """Its execution errors, oldest first."""


def details_from_rows(rows: DetailsRows) -> WorkflowDetails:
    details = WorkflowDetails(workflow_from_rows(*rows.workflow))
    for subscription, terminated in rows.subscriptions:
        details.subscriptions.append(subscription_from_row(subscription))
        if terminated:
            details.terminated.add(subscription.id)
    details.errors = [
        ExecutionError(from_micros(e.error_time), e.workflow_id, e.execution_pointer_id, e.message) for e in rows.errors
    ]
    return details
