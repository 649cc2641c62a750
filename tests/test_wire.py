"""The server's fast wire path (message <-> rows, ``_wire``) is the model path, only faster.

For generated workflow messages, every optional field present or absent and values at their
extremes: the rows the fast path stores are the rows the model path (``workflow_from_proto`` then
``workflow_row``/``pointer_rows``) stores, the message the fast path reads back is the one the model
path (``workflow_from_rows`` then ``workflow_to_proto``) builds, and a message with one invalid
field gets the same ``InvalidArgument`` (message and field) from both.

One difference is by design (README, "Decisions"): an optional JSON field of a pointer holding
JSON ``null`` keeps that ``null`` on the wire path (WFE's WaitFor needs ``Some(null)``), while the
models have one "no value" (None) for absent and ``null``. The comparisons below map exactly that,
and nothing else, to the model's view.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wfe.persistence.v1 import subscriptions_pb2, workflows_pb2
from wfe_client.conversion import subscription_from_proto, workflow_from_proto, workflow_to_proto
from wfe_client.errors import InvalidArgument
from wfe_client.limits import INT64_MAX, MAX_ID_BYTES, MAX_TIMESTAMP_SECONDS, UINT32_MAX
from wfe_sqlite._provider import new_subscription_rows
from wfe_sqlite._rows import (
    StoredWorkflow,
    SubscriptionRow,
    new_ids,
    pointer_rows,
    workflow_from_rows,
    workflow_row,
)
from wfe_sqlite._wire import new_subscription_rows_from_messages, workflow_message, workflow_rows_from_message

EXAMPLES = int(os.environ.get("WFE_HYPOTHESIS_EXAMPLES") or 100)  # make stress raises it
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies --------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
ID = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    st.just("é" * (MAX_ID_BYTES // 2)),  # exactly the byte limit
    st.just("x" * MAX_ID_BYTES),
)
JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
JSON_TEXT = st.builds(
    lambda value, indent: json.dumps(value, indent=indent, ensure_ascii=indent is None),
    JSON_VALUE,
    st.sampled_from([None, 0, 2]),
)
TIMESTAMP = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.one_of(st.integers(0, MAX_TIMESTAMP_SECONDS), st.sampled_from([0, MAX_TIMESTAMP_SECONDS])),
    nanos=st.integers(0, 999_999_999),
)
UINT32 = st.one_of(st.integers(0, UINT32_MAX), st.sampled_from([0, UINT32_MAX]))


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def pointers(draw: st.DrawFn) -> workflows_pb2.ExecutionPointer:
    msg = workflows_pb2.ExecutionPointer(
        id=draw(ID),
        step_id=draw(UINT32),
        active=draw(st.booleans()),
        status=draw(st.sampled_from(range(1, len(workflows_pb2.PointerStatus.keys())))),
        event_published=draw(st.booleans()),
        retry_count=draw(UINT32),
        children=draw(st.lists(TEXT, max_size=3)),
        scope=draw(st.lists(TEXT, max_size=3)),
        extension_attributes=draw(st.dictionaries(TEXT, JSON_TEXT, max_size=3)),
    )
    for name in ("sleep_until", "start_time", "end_time"):
        value = draw(_optional(TIMESTAMP))
        if value is not None:
            getattr(msg, name).CopyFrom(value)
    for name in ("persistence_data", "event_data", "context_item", "outcome"):
        value = draw(_optional(JSON_TEXT))
        if value is not None:
            setattr(msg, name, value)
    for name in ("event_name", "event_key", "step_name", "predecessor_id"):
        value = draw(_optional(TEXT))
        if value is not None:
            setattr(msg, name, value)
    return msg


@st.composite
def workflows(draw: st.DrawFn) -> workflows_pb2.WorkflowInstance:
    msg = workflows_pb2.WorkflowInstance(
        id=draw(st.just("") | ID),
        name=draw(st.just("") | ID),
        workflow_definition_id=draw(ID),
        version=draw(UINT32),
        execution_pointers=draw(st.lists(pointers(), max_size=4, unique_by=lambda p: p.id)),
        status=draw(st.sampled_from(range(1, len(workflows_pb2.WorkflowStatus.keys())))),
        data=draw(JSON_TEXT),
        create_time=draw(TIMESTAMP),
    )
    root = draw(_optional(st.just("") | ID))
    if root is not None:
        msg.root_workflow_id = root
    for name in ("description", "reference"):
        value = draw(_optional(TEXT))
        if value is not None:
            setattr(msg, name, value)
    next_execution = draw(_optional(st.integers(0, INT64_MAX) | st.sampled_from([0, INT64_MAX])))
    if next_execution is not None:
        msg.next_execution = next_execution
    complete = draw(_optional(TIMESTAMP))
    if complete is not None:
        msg.complete_time.CopyFrom(complete)
    return msg


_OPTIONAL_JSON = ("persistence_data", "event_data", "context_item", "outcome")


def _as_models_see(stored: StoredWorkflow) -> StoredWorkflow:
    """The rows with each pointer's optional JSON ``null`` as None (absent), as the models hold it."""
    row, stored_pointers = stored
    return row, [
        p._replace(**{name: None for name in _OPTIONAL_JSON if getattr(p, name) == "null"}) for p in stored_pointers
    ]


def _model_rows(msg: workflows_pb2.WorkflowInstance) -> StoredWorkflow:
    model = workflow_from_proto(msg)
    row = workflow_row(model)
    return row, pointer_rows(row.id, model.execution_pointers)


# -- one invalid field -------------------------------------------------------------------------

Fault = Callable[[workflows_pb2.WorkflowInstance], None]


def _pointer(index: int, change: Callable[[workflows_pb2.ExecutionPointer], None]) -> Fault:
    def fault(msg: workflows_pb2.WorkflowInstance) -> None:
        if not msg.execution_pointers:
            msg.execution_pointers.add(id="p", status=workflows_pb2.POINTER_STATUS_PENDING)
        change(msg.execution_pointers[min(index, len(msg.execution_pointers) - 1)])

    return fault


def _set(name: str, value: Any) -> Callable[[Any], None]:
    def change(target: Any) -> None:
        if isinstance(value, timestamp_pb2.Timestamp):
            getattr(target, name).CopyFrom(value)
        else:
            setattr(target, name, value)

    return change


FAULTS: dict[str, Fault] = {
    "workflow status unknown": _set("status", 99),
    "workflow status unspecified": _set("status", 0),
    "create_time missing": lambda msg: msg.ClearField("create_time"),
    "create_time before 1970": _set("create_time", timestamp_pb2.Timestamp(seconds=-1)),
    "create_time after 9999": _set("create_time", timestamp_pb2.Timestamp(seconds=MAX_TIMESTAMP_SECONDS + 1)),
    "create_time nanos negative": _set("create_time", timestamp_pb2.Timestamp(seconds=1, nanos=-1)),
    "complete_time nanos too large": _set("complete_time", timestamp_pb2.Timestamp(nanos=1_000_000_000)),
    "data empty": _set("data", ""),
    "data not JSON": _set("data", "{"),
    "data NaN": _set("data", "NaN"),
    "next_execution negative": _set("next_execution", -1),
    "definition id empty": _set("workflow_definition_id", ""),
    "id too long": _set("id", "x" * (MAX_ID_BYTES + 1)),
    "name too long": _set("name", "é" * (MAX_ID_BYTES // 2 + 1)),
    "root id too long": _set("root_workflow_id", "r" * (MAX_ID_BYTES + 1)),
    "pointer status unknown": _pointer(0, _set("status", 42)),
    "pointer status unspecified": _pointer(1, _set("status", 0)),
    "pointer id empty": _pointer(0, _set("id", "")),
    "pointer id too long": _pointer(2, _set("id", "p" * (MAX_ID_BYTES + 1))),
    "pointer sleep_until before 1970": _pointer(0, _set("sleep_until", timestamp_pb2.Timestamp(seconds=-5))),
    "pointer end_time after 9999": _pointer(1, _set("end_time", timestamp_pb2.Timestamp(seconds=2**40))),
    "pointer persistence_data not JSON": _pointer(0, _set("persistence_data", "[1,")),
    "pointer event_data empty": _pointer(0, _set("event_data", "")),
    "pointer outcome Infinity": _pointer(1, _set("outcome", "Infinity")),
    "pointer extension attribute not JSON": _pointer(0, lambda p: p.extension_attributes.update({"k": "{oops"})),
    "pointer extension attribute too deep": _pointer(
        1, lambda p: p.extension_attributes.update({"d": "[" * 513 + "]" * 513})
    ),
    "pointer ids repeated": lambda msg: msg.execution_pointers.extend(
        [workflows_pb2.ExecutionPointer(id="twice", status=workflows_pb2.POINTER_STATUS_PENDING)] * 2
    ),
    "pointer event_name too long": _pointer(0, _set("event_name", "n" * (MAX_ID_BYTES + 1))),
    "pointer child id too long": _pointer(1, lambda p: p.children.append("c" * (MAX_ID_BYTES + 1))),
    "data too deep": _set("data", '{"x":' * 513 + "1" + "}" * 513),
}


@SETTINGS
@given(workflows())
def test_fast_path_stores_the_rows_the_model_path_stores(msg: workflows_pb2.WorkflowInstance) -> None:
    fast = workflow_rows_from_message(msg)
    assert _as_models_see(fast) == _model_rows(msg)
    for sent, stored in zip(msg.execution_pointers, fast[1], strict=True):
        for name in _OPTIONAL_JSON:  # the wire path keeps a present field present, null included
            assert (getattr(stored, name) is None) == (not sent.HasField(name))


@SETTINGS
@given(workflows())
def test_fast_path_reads_back_the_message_the_model_path_reads_back(msg: workflows_pb2.WorkflowInstance) -> None:
    row, stored_pointers = _as_models_see(workflow_rows_from_message(msg))
    fast = workflow_message(row, stored_pointers)
    model = workflow_to_proto(workflow_from_rows(row, stored_pointers))
    assert fast == model
    assert fast.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)


@SETTINGS
@given(st.lists(workflows(), max_size=3))
def test_a_message_built_in_place_is_the_message_built_alone(msgs: list[workflows_pb2.WorkflowInstance]) -> None:
    # BatchGetWorkflows builds each workflow right in the response (``add``), not alone and copied.
    response = workflows_pb2.BatchGetWorkflowsResponse()
    alone = []
    for msg in msgs:
        row, pointers = _as_models_see(workflow_rows_from_message(msg))
        workflow_message(row, pointers, response.workflows.add)
        alone.append(workflow_message(row, pointers))
    assert list(response.workflows) == alone


@pytest.mark.parametrize("fault", list(FAULTS))
@settings(max_examples=max(6, EXAMPLES // 15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=workflows())
def test_an_invalid_field_is_the_same_invalid_argument_on_both_paths(
    fault: str, msg: workflows_pb2.WorkflowInstance
) -> None:
    FAULTS[fault](msg)
    with pytest.raises(InvalidArgument) as fast:
        workflow_rows_from_message(msg)
    with pytest.raises(InvalidArgument) as model:
        _model_rows(msg)
    assert fast.value.metadata.get("field") == model.value.metadata.get("field")
    assert fast.value.metadata.get("field"), "the error names the field"
    assert fast.value.message == model.value.message


def test_each_row_type_is_its_tables_columns_in_order() -> None:
    """The schema's CREATE TABLEs and the row types agree: the store's SQL is built from the rows."""
    import sqlite3

    from wfe_sqlite._rows import CommandRow, ErrorRow, EventRow, PointerRow, SubscriptionRow, WorkflowRow
    from wfe_sqlite._schema import ensure_schema

    conn = sqlite3.connect(":memory:", isolation_level=None)
    ensure_schema(conn)

    def columns(table: str) -> tuple[str, ...]:
        return tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))

    assert columns("workflows") == WorkflowRow._fields
    assert columns("execution_pointers") == PointerRow._fields
    assert columns("events") == EventRow._fields
    assert columns("event_subscriptions") == (*SubscriptionRow._fields, "terminated")
    assert columns("scheduled_commands")[:3] == CommandRow._fields
    assert columns("execution_errors") == ("id", *ErrorRow._fields)


# -- subscriptions of a persist ----------------------------------------------------------------


@st.composite
def subscription_messages(draw: st.DrawFn) -> subscriptions_pb2.EventSubscription:
    msg = subscriptions_pb2.EventSubscription(
        id=draw(st.just("") | ID),
        workflow_id=draw(ID),
        step_id=draw(UINT32),
        execution_pointer_id=draw(TEXT),
        event_name=draw(TEXT),
        event_key=draw(TEXT),
        subscribe_as_of=draw(TIMESTAMP),
    )
    data = draw(_optional(JSON_TEXT))
    if data is not None:
        msg.subscription_data = data
    for name in ("external_token", "external_worker_id"):
        value = draw(_optional(TEXT))
        if value is not None:
            setattr(msg, name, value)
    expiry = draw(_optional(TIMESTAMP))
    if expiry is not None:
        msg.external_token_expiry.CopyFrom(expiry)
    return msg


def _model_subscription_rows(messages: list[subscriptions_pb2.EventSubscription]) -> list[SubscriptionRow]:
    models = [subscription_from_proto(m, f"subscriptions[{i}]") for i, m in enumerate(messages)]
    return new_subscription_rows(models)


def _is_uuid4(value: str) -> bool:
    parsed = uuid.UUID(value)
    return parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value


def test_subscription_data_null_is_stored_as_no_data_on_both_paths() -> None:
    msg = subscriptions_pb2.EventSubscription(id="s", workflow_id="w", subscription_data="null")
    msg.subscribe_as_of.seconds = 1
    assert new_subscription_rows_from_messages([msg]) == _model_subscription_rows([msg])
    assert new_subscription_rows_from_messages([msg])[0].subscription_data is None


@SETTINGS
@given(st.lists(subscription_messages(), max_size=5))
def test_fast_path_stores_the_subscription_rows_the_model_path_stores(
    messages: list[subscriptions_pb2.EventSubscription],
) -> None:
    fast = new_subscription_rows_from_messages(messages)
    model = _model_subscription_rows(messages)
    assert len(fast) == len(model) == len(messages)
    for sent, f, m in zip(messages, fast, model, strict=True):
        if sent.id:
            assert f == m
        else:  # a fresh id on each path
            assert f._replace(id="") == m._replace(id="")
            assert _is_uuid4(f.id) and _is_uuid4(m.id)


SUBSCRIPTION_FAULTS: dict[str, Callable[[subscriptions_pb2.EventSubscription], None]] = {
    "subscribe_as_of missing": lambda m: m.ClearField("subscribe_as_of"),
    "subscribe_as_of before 1970": _set("subscribe_as_of", timestamp_pb2.Timestamp(seconds=-1)),
    "subscribe_as_of nanos too large": _set("subscribe_as_of", timestamp_pb2.Timestamp(nanos=1_000_000_000)),
    "expiry after 9999": _set("external_token_expiry", timestamp_pb2.Timestamp(seconds=MAX_TIMESTAMP_SECONDS + 1)),
    "data not JSON": _set("subscription_data", "{"),
    "data empty": _set("subscription_data", ""),
    "id too long": _set("id", "x" * (MAX_ID_BYTES + 1)),
    "workflow id empty": _set("workflow_id", ""),
    "pointer id too long": _set("execution_pointer_id", "p" * (MAX_ID_BYTES + 1)),
    "event name too long": _set("event_name", "é" * (MAX_ID_BYTES // 2 + 1)),
    "event key too long": _set("event_key", "k" * (MAX_ID_BYTES + 1)),
    "token too long": _set("external_token", "t" * (MAX_ID_BYTES + 1)),
    "worker too long": _set("external_worker_id", "w" * (MAX_ID_BYTES + 1)),
}


@pytest.mark.parametrize("fault", list(SUBSCRIPTION_FAULTS))
@settings(max_examples=max(6, EXAMPLES // 15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(subscription_messages(), min_size=1, max_size=4), index=st.integers(0, 3))
def test_an_invalid_subscription_is_refused_by_both_paths(
    fault: str, messages: list[subscriptions_pb2.EventSubscription], index: int
) -> None:
    """The fast path refuses what the model path refuses (the servicer then raises the model path's
    error, with its field), and takes nothing the model path refuses."""
    SUBSCRIPTION_FAULTS[fault](messages[min(index, len(messages) - 1)])
    with pytest.raises(InvalidArgument):
        new_subscription_rows_from_messages(messages)
    with pytest.raises(InvalidArgument) as model:
        _model_subscription_rows(messages)
    assert model.value.metadata.get("field", "").startswith("subscriptions[")


@pytest.mark.parametrize("count", [0, 1, 2, 17, 10_000])
def test_new_ids_are_distinct_uuid4(count: int) -> None:
    ids = new_ids(count)
    assert len(ids) == count == len(set(ids))
    assert all(_is_uuid4(i) for i in ids)


def test_new_ids_set_only_the_version_and_variant_bits() -> None:
    """The other 122 bits are random: over many ids each hex digit of them takes every value."""
    ids = [i.replace("-", "") for i in new_ids(4000)]
    assert {i[12] for i in ids} == {"4"}
    assert {i[16] for i in ids} == set("89ab")
    for position in (*range(12), *range(13, 16), *range(17, 32)):
        assert len({i[position] for i in ids}) == 16, position
