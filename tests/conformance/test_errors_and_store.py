"""Conformance: execution errors, the store itself, and invalid arguments."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conformance_support import EPOCH, T0, UTC, event, subscription, workflow

from conftest import Peek
from wfe_client import (
    CommandName,
    EventNotFound,
    ExecutionError,
    ExecutionPointer,
    GrpcPersistenceProvider,
    InvalidArgument,
    LeaseLost,
    PersistenceProvider,
    ScheduledCommand,
    StorageUnavailable,
    SubscriptionNotFound,
    WorkflowNotFound,
)
from wfe_sqlite import open_provider
from wfe_sqlite.server import RunningServer


def _micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


async def _error_rows(peek: Peek) -> list[tuple[object, ...]]:
    return await peek("SELECT error_time, workflow_id, execution_pointer_id, message FROM execution_errors ORDER BY id")


async def test_persist_errors_stores_every_error(provider: PersistenceProvider, peek: Peek) -> None:
    errors = [
        ExecutionError(T0, "wf-1", "ptr-1", "boom"),
        ExecutionError(T0 + timedelta(microseconds=1), "wf-1", "ptr-2", "ünïcødé 😀 漢字 e\u0301\nline two"),
        ExecutionError(
            datetime(2024, 3, 10, 17, 30, 0, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "wf-2",
            "ptr-3",
            "x" * 100_000,
        ),
    ]
    await provider.persist_errors(errors)
    rows = await _error_rows(peek)
    assert rows == [(_micros(e.error_time), e.workflow_id, e.execution_pointer_id, e.message) for e in errors]
    # The third error's instant is 12:00:00.000005 UTC.
    assert rows[2][0] == _micros(T0) + 5


async def test_persist_errors_appends(provider: PersistenceProvider, peek: Peek) -> None:
    await provider.persist_errors([ExecutionError.new("wf", "p", "first")])
    await provider.persist_errors([ExecutionError.new("wf", "p", "first")])  # same content, second row
    await provider.persist_errors([ExecutionError.new("wf", "p", f"m{i}") for i in range(50)])
    rows = await _error_rows(peek)
    assert [r[3] for r in rows] == ["first", "first"] + [f"m{i}" for i in range(50)]


async def test_persist_no_errors(provider: PersistenceProvider, peek: Peek) -> None:
    await provider.persist_errors([])
    assert await _error_rows(peek) == []


async def test_persist_errors_all_or_nothing(provider: PersistenceProvider, peek: Peek) -> None:
    good = ExecutionError.new("wf", "p", "good")
    bad = ExecutionError(datetime(2024, 1, 1), "wf", "p", "naive time")  # naive: invalid
    with pytest.raises(ValueError):
        await provider.persist_errors([good, bad])
    assert await _error_rows(peek) == []


async def test_ensure_store_exists_is_idempotent(provider: PersistenceProvider, peek: Peek, store_url: str) -> None:
    w = workflow(name="survivor")
    await provider.create_new_workflow(w)
    await provider.create_event(event(id="e-1", time=T0))
    await provider.create_event_subscription(subscription())
    await provider.ensure_store_exists()
    await provider.ensure_store_exists()
    assert (await provider.get_workflow_instance_by_name("survivor")).id == w.id
    assert (await provider.get_event("e-1")).event_time == T0
    assert await provider.next_definition_sequence("order") == 1
    if store_url.startswith("postgresql://"):
        tables = {r[0] for r in await peek("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        version = (await peek("SELECT max(version) FROM schema_version"))[0][0]
    else:
        tables = {r[0] for r in await peek("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = (await peek("PRAGMA user_version"))[0][0]
    assert {
        "workflows",
        "execution_pointers",
        "events",
        "event_subscriptions",
        "scheduled_commands",
        "execution_errors",
        "definition_sequences",
    } <= tables
    assert isinstance(version, int) and version >= 1
    assert await peek("SELECT count(*) FROM workflows") == [(1,)]
    # Still fully usable afterwards.
    other = workflow()
    await provider.create_new_workflow(other)
    assert other.name == "order-2"


async def test_acknowledged_writes_are_visible_in_the_file(provider: PersistenceProvider, peek: Peek) -> None:
    w = workflow(id="on-disk", name="disk")
    await provider.create_new_workflow(w)
    assert await peek("SELECT name FROM workflows WHERE id = 'on-disk'") == [("disk",)]
    assert await peek("SELECT count(*) FROM execution_pointers WHERE workflow_id = 'on-disk'") == [(1,)]


@pytest.mark.parametrize(
    "bad_data",
    [float("nan"), float("inf"), {"k": -math.inf}, {1, 2}, object(), b"bytes"],
    ids=["nan", "inf", "nested-inf", "set", "object", "bytes"],
)
async def test_non_json_data_is_invalid_argument(provider: PersistenceProvider, bad_data: object) -> None:
    w = workflow(id="bad-json", data={"ok": 1})
    w.data = bad_data
    with pytest.raises(InvalidArgument):
        await provider.create_new_workflow(w)
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance("bad-json")
    e = event(time=T0)
    e.event_data = bad_data
    with pytest.raises(InvalidArgument):
        await provider.create_event(e)
    assert await provider.get_runnable_events(T0) == []


async def test_invalid_argument_is_a_value_error() -> None:
    assert issubclass(InvalidArgument, ValueError)


def _invalid_workflows() -> dict[str, Any]:
    def with_(**changes: Any) -> Any:
        w = workflow(id="invalid")
        for name, value in changes.items():
            setattr(w, name, value)
        return w

    def with_pointer(**changes: Any) -> Any:
        pointer = ExecutionPointer.new(0)
        for name, value in changes.items():
            setattr(pointer, name, value)
        return workflow(id="invalid", pointers=[pointer])

    return {
        "version-negative": with_(version=-1),
        "version-over-uint32": with_(version=2**32),
        "version-float": with_(version=1.0),
        "next-execution-negative": with_(next_execution=-1),
        "next-execution-over-int64": with_(next_execution=2**63),
        "definition-empty": with_(workflow_definition_id=""),
        "id-over-1024-bytes": with_(id="é" * 513),
        "name-lone-surrogate": with_(name="bad\ud800"),
        "description-lone-surrogate": with_(description="bad\udfff"),
        "data-lone-surrogate": with_(data={"text": "bad\ud800"}),
        "data-key-lone-surrogate": with_(data={"bad\ud800": 1}),
        "step-id-negative": with_pointer(step_id=-1),
        "retry-count-negative": with_pointer(retry_count=-1),
        "retry-count-float": with_pointer(retry_count=2.0),
        "extension-attribute-int-key": with_pointer(extension_attributes={1: "x"}),
        "extension-attribute-nan": with_pointer(extension_attributes={"x": math.nan}),
        "pointer-id-empty": with_pointer(id=""),
        "children-not-strings": with_pointer(children=[1, 2]),
    }


@pytest.mark.parametrize("case", list(_invalid_workflows()))
async def test_invalid_workflow_is_invalid_argument(provider: PersistenceProvider, case: str) -> None:
    with pytest.raises(InvalidArgument):
        await provider.create_new_workflow(_invalid_workflows()[case])
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance("invalid")
    # persist_workflow rejects it too, leaving the stored workflow as it was.
    stored = workflow(id="invalid", name="stored")
    await provider.create_new_workflow(stored)
    before = await provider.get_workflow_instance("invalid")
    with pytest.raises(InvalidArgument):
        await provider.persist_workflow(_invalid_workflows()[case])
    assert await provider.get_workflow_instance("invalid") == before


@pytest.mark.parametrize(
    "change",
    [
        {"event_name": "bad\ud800"},
        {"event_key": "bad\ud800"},
        {"event_data": ["bad\ud800"]},
        {"id": "x" * 1025},
    ],
    ids=["name-surrogate", "key-surrogate", "data-surrogate", "id-too-long"],
)
async def test_invalid_event_is_invalid_argument(provider: PersistenceProvider, change: dict[str, Any]) -> None:
    e = event(time=T0)
    for name, value in change.items():
        setattr(e, name, value)
    with pytest.raises(InvalidArgument):
        await provider.create_event(e)
    assert await provider.get_runnable_events(T0) == []


@pytest.mark.parametrize(
    "change",
    [{"step_id": -1}, {"step_id": 2**32}, {"event_name": "bad\ud800"}, {"subscription_data": {"x": math.inf}}],
    ids=["step-negative", "step-over-uint32", "name-surrogate", "data-inf"],
)
async def test_invalid_subscription_is_invalid_argument(provider: PersistenceProvider, change: dict[str, Any]) -> None:
    s = subscription()
    for name, value in change.items():
        setattr(s, name, value)
    with pytest.raises(InvalidArgument):
        await provider.create_event_subscription(s)
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription(s.id)


@pytest.mark.parametrize(
    "command",
    [
        ScheduledCommand(CommandName.PROCESS_WORKFLOW, "wf", -1),
        ScheduledCommand(CommandName.PROCESS_WORKFLOW, "wf", 2**63),
        ScheduledCommand(CommandName.PROCESS_EVENT, "bad\ud800", 1),
        ScheduledCommand(CommandName.PROCESS_EVENT, "x" * 1025, 1),
    ],
    ids=["time-negative", "time-over-int64", "data-surrogate", "data-too-long"],
)
async def test_invalid_command_is_invalid_argument(provider: PersistenceProvider, command: ScheduledCommand) -> None:
    with pytest.raises(InvalidArgument):
        await provider.schedule_command(command)
    assert (await provider.claim_commands(datetime(9999, 1, 1, tzinfo=UTC))).commands == []


def _empty_strings() -> dict[str, Any]:
    """An empty id, name, token or lease id where one is required, call by call."""
    command = ScheduledCommand(CommandName.PROCESS_WORKFLOW, "wf", 0)
    return {
        "get-workflow-empty-id": lambda p: p.get_workflow_instance(""),
        "get-workflow-empty-name": lambda p: p.get_workflow_instance_by_name(""),
        "get-workflows-empty-id": lambda p: p.get_workflow_instances(["a", ""]),
        "next-sequence-empty-definition": lambda p: p.next_definition_sequence(""),
        "get-event-empty-id": lambda p: p.get_event(""),
        "mark-processed-empty-id": lambda p: p.mark_event_processed(""),
        "mark-unprocessed-empty-id": lambda p: p.mark_event_unprocessed(""),
        "get-subscription-empty-id": lambda p: p.get_subscription(""),
        "terminate-subscription-empty-id": lambda p: p.terminate_subscription(""),
        "set-token-empty-id": lambda p: p.set_subscription_token("", "t", "w", T0),
        "set-token-empty-token": lambda p: p.set_subscription_token("s", "", "w", T0),
        "clear-token-empty-id": lambda p: p.clear_subscription_token("", "t"),
        "clear-token-empty-token": lambda p: p.clear_subscription_token("s", ""),
        "acknowledge-empty-lease": lambda p: p.acknowledge_command(command, ""),
        "release-empty-lease": lambda p: p.release_command(command, ""),
    }


def _none_for_text() -> dict[str, Any]:
    """None where a string goes (protobuf would send it as "", not set: the server made up an id)."""

    def with_(model: Any, **changes: Any) -> Any:
        for name, value in changes.items():
            setattr(model, name, value)
        return model

    return {
        "workflow-id-none": lambda p: p.create_new_workflow(with_(workflow(), id=None)),
        "workflow-name-none": lambda p: p.create_new_workflow(with_(workflow(), name=None)),
        "workflow-definition-none": lambda p: p.create_new_workflow(with_(workflow(), workflow_definition_id=None)),
        "pointer-id-none": lambda p: p.create_new_workflow(
            workflow(pointers=[with_(ExecutionPointer.new(0), id=None)])
        ),
        "event-id-none": lambda p: p.create_event(with_(event(time=T0), id=None)),
        "event-name-none": lambda p: p.create_event(with_(event(time=T0), event_name=None)),
        "subscription-workflow-none": lambda p: p.create_event_subscription(with_(subscription(), workflow_id=None)),
        "command-data-none": lambda p: p.schedule_command(ScheduledCommand(CommandName.PROCESS_WORKFLOW, None, 0)),
        "error-message-none": lambda p: p.persist_errors([ExecutionError(T0, "w", "p", None)]),
    }


def _not_models() -> dict[str, Any]:
    """Something else where a model, a list of them, an enum member or a list of strings goes."""
    children = ExecutionPointer.new(0)
    children.children = "ab"  # a string is not a list of its characters
    scope = ExecutionPointer.new(0)
    scope.scope = "ab"
    return {
        "create-not-a-workflow": lambda p: p.create_new_workflow("workflow"),
        "create-pointers-not-a-list": lambda p: p.create_new_workflow(workflow(pointers="ab")),
        "create-pointer-not-a-pointer": lambda p: p.create_new_workflow(
            workflow(pointers=[ExecutionPointer.new(0), 1])
        ),
        "create-children-a-string": lambda p: p.create_new_workflow(workflow(pointers=[children])),
        "create-scope-a-string": lambda p: p.create_new_workflow(workflow(pointers=[scope])),
        "create-status-unknown": lambda p: p.create_new_workflow(workflow(status="NOPE")),
        "create-pointer-status-unknown": lambda p: p.create_new_workflow(
            workflow(pointers=[ExecutionPointer(id="p", step_id=0, status="NOPE")])
        ),
        "create-event-not-an-event": lambda p: p.create_event("event"),
        "create-subscription-not-one": lambda p: p.create_event_subscription("subscription"),
        "persist-subscriptions-not-ones": lambda p: p.persist_workflow_with_subscriptions(
            workflow(), [subscription(), 1]
        ),
        "schedule-not-a-command": lambda p: p.schedule_command("command"),
        "schedule-name-unknown": lambda p: p.schedule_command(ScheduledCommand("NOPE", "wf", 0)),
        "persist-errors-not-errors": lambda p: p.persist_errors([ExecutionError(T0, "w", "p", "m"), "error"]),
    }


def _wrong_inputs() -> dict[str, Any]:
    """Calls with one wrong value each (``provider -> awaitable``), for comparing the providers' messages."""
    naive = datetime(2024, 3, 10, 12, 0, 0)

    def bad_workflow(case: str) -> Any:
        return lambda p: p.create_new_workflow(_invalid_workflows()[case])

    def bad_event(**changes: Any) -> Any:
        e = event(time=T0)
        for name, value in changes.items():
            setattr(e, name, value)
        return lambda p: p.create_event(e)

    def bad_subscription(**changes: Any) -> Any:
        s = subscription()
        for name, value in changes.items():
            setattr(s, name, value)
        return lambda p: p.create_event_subscription(s)

    def persisted_with(*subscriptions: Any) -> Any:
        return lambda p: p.persist_workflow_with_subscriptions(workflow(id="wrong-inputs"), list(subscriptions))

    naive_subscription = subscription()
    naive_subscription.subscribe_as_of = naive
    stale = workflow(id="wrong-inputs")
    stale.revision = -1
    pointer = ExecutionPointer.new(0)
    pointer.end_time = naive
    scoped = ExecutionPointer.new(0)
    scoped.scope = ["ok", "bad\ud800"]
    timeless = workflow()
    timeless.create_time = None  # type: ignore[assignment]
    return {
        **{f"workflow-{case}": bad_workflow(case) for case in _invalid_workflows()},
        "workflow-scope-surrogate": lambda p: p.create_new_workflow(workflow(pointers=[scoped])),
        "workflow-pointer-naive": lambda p: p.create_new_workflow(
            workflow(pointers=[ExecutionPointer.new(1), pointer])
        ),
        "workflow-revision-negative": lambda p: p.persist_workflow(stale),
        "workflow-create-time-none": lambda p: p.create_new_workflow(timeless),
        "event-name-surrogate": bad_event(event_name="bad\ud800"),
        "event-key-surrogate": bad_event(event_key="bad\ud800"),
        "event-time-none": bad_event(event_time=None),
        "subscription-step-negative": bad_subscription(step_id=-1),
        "subscription-step-over-uint32": bad_subscription(step_id=2**32),
        "subscription-name-surrogate": bad_subscription(event_name="bad\ud800"),
        "subscription-time-none": bad_subscription(subscribe_as_of=None),
        "subscriptions-second-naive": persisted_with(subscription(), naive_subscription),
        "errors-second-naive": lambda p: p.persist_errors(
            [ExecutionError(T0, "w", "p", "m"), ExecutionError(naive, "w", "p", "m")]
        ),
        "errors-second-none": lambda p: p.persist_errors(
            [ExecutionError(T0, "w", "p", "m"), ExecutionError(None, "w", "p", "m")]
        ),
        "command-time-negative": lambda p: p.schedule_command(ScheduledCommand(CommandName.PROCESS_WORKFLOW, "wf", -1)),
        "command-time-over-int64": lambda p: p.schedule_command(
            ScheduledCommand(CommandName.PROCESS_WORKFLOW, "wf", 2**63)
        ),
        "delete-empty-id": lambda p: p.delete_workflow(""),
        "claim-worker-id-int": lambda p: p.claim_commands(T0, worker_id=5),
        "claim-worker-id-none": lambda p: p.claim_commands(T0, worker_id=None),
        **_not_models(),
        **_none_for_text(),
        **_empty_strings(),
        "purge-before-1970": lambda p: p.purge_workflows(EPOCH - timedelta(days=1)),
        "purge-just-before-1970": lambda p: p.purge_workflows(EPOCH - timedelta(microseconds=1)),
        "command-data-surrogate": lambda p: p.schedule_command(
            ScheduledCommand(CommandName.PROCESS_EVENT, "bad\ud800", 1)
        ),
        "search-query-surrogate": lambda p: p.search_workflows("bad\ud800"),
        "list-page-token-surrogate": lambda p: p.list_workflows(page_token="bad\ud800"),
        "list-page-token-int": lambda p: p.list_workflows(page_token=5),
        "purge-dry-run-str": lambda p: p.purge_workflows(T0, dry_run="yes"),
        "purge-dry-run-int": lambda p: p.purge_workflows(T0, dry_run=1),
        **{f"flag-{case}": call for case, call in _not_a_flag("yes").items()},
        **{f"flag-none-{case}": call for case, call in _not_a_flag(None).items()},
    }


def _not_a_flag(value: Any) -> dict[str, Any]:
    """Calls storing ``value`` (not True or False) in each bool field of a model."""
    active = ExecutionPointer.new(0)
    active.active = value
    published = ExecutionPointer.new(0)
    published.event_published = value
    persisted = workflow(id="not-a-flag")
    persisted.execution_pointers = [ExecutionPointer.new(0), active]
    processed = event(time=T0)
    processed.is_processed = value
    return {
        "pointer-active": lambda p: p.create_new_workflow(workflow(pointers=[active])),
        "pointer-event-published": lambda p: p.create_new_workflow(workflow(pointers=[published])),
        "persisted-pointer-active": lambda p: p.persist_workflow(persisted),
        "event-is-processed": lambda p: p.create_event(processed),
    }


@pytest.mark.parametrize("value", [1, 0, "yes", None], ids=["one", "zero", "yes", "none"])
async def test_a_flag_that_is_not_true_or_false_is_invalid_argument(provider: PersistenceProvider, value: Any) -> None:
    # pointer.active, pointer.event_published and event.is_processed: True or False only, as a purge's
    # dry_run. Before, the embedded provider stored the value's truthiness and the gRPC client sent 1,
    # 0 and None as protobuf took them and refused "yes" in protobuf's words.
    fields = {
        "pointer-active": "workflow.execution_pointers[0].active",
        "pointer-event-published": "workflow.execution_pointers[0].event_published",
        "persisted-pointer-active": "workflow.execution_pointers[1].active",
        "event-is-processed": "event.is_processed",
    }
    await provider.create_new_workflow(workflow(id="not-a-flag"))
    for case, call in _not_a_flag(value).items():
        field = fields[case]
        with pytest.raises(InvalidArgument) as info:
            await call(provider)
        assert str(info.value) == f"{field}: expected True or False, got {value!r}", case
        assert info.value.metadata.get("field") == field, case
    # Nothing was stored: the one workflow created above, unchanged; no event.
    stored = await provider.get_workflow_instance("not-a-flag")
    assert stored.revision == 1
    assert len(stored.execution_pointers) == 1
    assert await provider.get_runnable_events(T0 + timedelta(days=1)) == []


async def test_both_providers_say_the_same_about_the_same_wrong_input(
    store_url: str, running_server: RunningServer
) -> None:
    """Not only the same exception class: the same message, the field named in the same words.
    Before, the gRPC client's messages for values protobuf refused were protobuf's ('workflow: Value
    out of range: -1', 'execution_pointer: bad argument type for built-in operation') and named a
    pointer, subscription or error without its place in the call ('execution_pointer.end_time')."""
    embedded = await open_provider(store_url)
    try:
        async with GrpcPersistenceProvider.connect(running_server.address) as remote:
            differ = {}
            for case, call in _wrong_inputs().items():
                said = []
                for provider in (embedded, remote):
                    with pytest.raises(InvalidArgument) as info:
                        await call(provider)
                    said.append((str(info.value), info.value.metadata.get("field")))
                if said[0] != said[1]:
                    differ[case] = said
            assert differ == {}
    finally:
        await embedded.close()


async def test_persist_many_errors_in_one_call(provider: PersistenceProvider, peek: Peek) -> None:
    errors = [ExecutionError(T0, f"wf-{i}", "p", f"m{i}") for i in range(12_000)]
    await provider.persist_errors(errors)
    rows = await _error_rows(peek)
    assert len(rows) == 12_000
    assert rows[-1] == (_micros(T0), "wf-11999", "p", "m11999")


async def test_a_lookup_by_text_with_a_nul_character_finds_nothing(provider: PersistenceProvider) -> None:
    """No stored id, name or key holds a NUL character (PostgreSQL's text cannot): a lookup by one
    gets what a lookup of a value nobody stored gets, on every backend, not an invalid argument."""
    nul = "a\x00b"
    await provider.create_new_workflow(workflow())  # something stored, so "nothing" is not an empty store
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance(nul)
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance_by_name(nul)
    assert await provider.get_workflow_instances([nul]) == []
    for event_call in (provider.get_event, provider.mark_event_processed, provider.mark_event_unprocessed):
        with pytest.raises(EventNotFound):
            await event_call(nul)
    assert await provider.get_events(nul, "key", T0) == []
    assert await provider.get_events("name", nul, T0) == []
    assert await provider.get_subscriptions(nul, "key", T0) == []
    assert await provider.get_first_open_subscription("name", nul, T0) is None
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription(nul)
    with pytest.raises(SubscriptionNotFound):
        await provider.terminate_subscription(nul)
    with pytest.raises(SubscriptionNotFound):
        await provider.set_subscription_token(nul, "token", "worker", T0 + timedelta(minutes=5))
    with pytest.raises(SubscriptionNotFound):
        await provider.clear_subscription_token(nul, "token")
    command = ScheduledCommand(CommandName.PROCESS_WORKFLOW, nul, 0)
    with pytest.raises(LeaseLost):
        await provider.acknowledge_command(command, "lease")
    with pytest.raises(LeaseLost):
        await provider.release_command(command, "lease")


# -- wrong argument types: the same exception from both providers --------------------------------

NAIVE = datetime(2024, 3, 10, 12, 0, 0)


@pytest.mark.parametrize("when", [NAIVE, None, "2024-03-10T12:00:00Z"], ids=["naive", "none", "str"])
async def test_a_bad_instant_argument_is_invalid_argument_naming_it(provider: PersistenceProvider, when: Any) -> None:
    # Both providers: InvalidArgument (a ValueError, so a naive datetime is still the ValueError the
    # interface promises), the field named, whatever the argument and whichever provider.
    calls = {
        "as_at": lambda: provider.get_runnable_instances(when),
        "as_of": lambda: provider.get_events("e", "k", when),
        "expiry": lambda: provider.set_subscription_token("s", "t", "w", when),
        "older_than": lambda: provider.purge_workflows(when),
    }
    if when is not None:  # None is "no bound" for a list's creation window
        calls["created_after"] = lambda: provider.list_workflows(created_after=when)
        calls["created_before"] = lambda: provider.search_workflows("x", created_before=when)
    for field, call in calls.items():
        with pytest.raises(InvalidArgument) as info:
            await call()
        assert info.value.metadata.get("field") == field, field
        assert str(info.value).startswith(f"{field}: "), str(info.value)
    e = event()
    e.event_time = when
    with pytest.raises(InvalidArgument):
        await provider.create_event(e)


@pytest.mark.parametrize("value", [None, 7, b"id"], ids=["none", "int", "bytes"])
async def test_a_non_string_id_name_or_key_is_invalid_argument_naming_it(
    provider: PersistenceProvider, value: Any
) -> None:
    # gRPC used to send None as "" (get_events(name, None, t) answered [] instead of refusing) and
    # let protobuf's TypeError through for an int; the embedded provider refused both.
    when = datetime.now(UTC)
    calls = {
        "id": [
            lambda: provider.get_workflow_instance(value),
            lambda: provider.get_event(value),
            lambda: provider.mark_event_processed(value),
            lambda: provider.get_subscription(value),
            lambda: provider.terminate_subscription(value),
            lambda: provider.delete_workflow(value),
        ],
        "name": [lambda: provider.get_workflow_instance_by_name(value)],
        "definition_id": [lambda: provider.next_definition_sequence(value)],
        "event_name": [
            lambda: provider.get_events(value, "k", when),
            lambda: provider.get_subscriptions(value, "k", when),
        ],
        "event_key": [
            lambda: provider.get_events("e", value, when),
            lambda: provider.get_subscriptions("e", value, when),
            lambda: provider.get_first_open_subscription("e", value, when),
        ],
        "token": [lambda: provider.clear_subscription_token("s", value)],
        "lease_id": [
            lambda: provider.acknowledge_command(ScheduledCommand.process_workflow("wf", 0), value),
            lambda: provider.release_command(ScheduledCommand.process_workflow("wf", 0), value),
        ],
    }
    for field, field_calls in calls.items():
        for call in field_calls:
            with pytest.raises(InvalidArgument) as info:
                await call()
            assert info.value.metadata.get("field") == field, (field, str(info.value))
            assert str(info.value) == f"{field}: expected a string, got {type(value).__name__}"
    with pytest.raises(InvalidArgument) as info:
        await provider.get_workflow_instances(["some-id", value])
    assert info.value.metadata.get("field") == "ids[1]"
    assert str(info.value) == f"ids[1]: expected a string, got {type(value).__name__}"


async def test_a_closed_provider_raises_storage_unavailable(provider: PersistenceProvider) -> None:
    w = workflow()
    await provider.create_new_workflow(w)
    await provider.close()
    for call in (
        lambda: provider.get_workflow_instance(w.id),
        lambda: provider.persist_workflow(w),
        lambda: provider.get_runnable_instances(datetime.now(UTC)),
        lambda: provider.get_workflow_instances([w.id]),
        lambda: provider.list_workflows(),
    ):
        with pytest.raises(StorageUnavailable, match="the store is closed"):
            await call()
    await provider.close()  # closing again is harmless


async def test_the_embedded_providers_open_with_async_with_as_grpc_connects(store_url: str) -> None:
    # ``async with GrpcPersistenceProvider.connect(...) as store`` (the README's example) works with
    # the embedded providers' ``open`` too ("the same code runs in-process"), and closes the store.
    from wfe_sqlite import PostgresPersistenceProvider, SqlitePersistenceProvider

    opener = PostgresPersistenceProvider if store_url.startswith("postgresql://") else SqlitePersistenceProvider
    async with opener.open(store_url) as store:
        w = workflow()
        await store.create_new_workflow(w)
        assert (await store.get_workflow_instance(w.id)).revision == 1
    with pytest.raises(StorageUnavailable, match="the store is closed"):
        await store.get_workflow_instance(w.id)
    store = await opener.open(store_url)  # and plain await, as before
    try:
        assert (await store.get_workflow_instance(w.id)).id == w.id
    finally:
        await store.close()


async def test_calls_in_flight_at_close_end_without_cancelling_their_callers(provider: PersistenceProvider) -> None:
    # Closing the gRPC channel cancels its calls: they used to raise asyncio.CancelledError in tasks
    # nobody cancelled (past ``except Exception``, and read by a TaskGroup as a cancellation). Now they
    # end as the embedded provider's do: answered, or StorageUnavailable.
    w = workflow()
    await provider.create_new_workflow(w)
    calls = [asyncio.create_task(provider.get_runnable_instances(datetime.now(UTC))) for _ in range(20)]
    calls += [asyncio.create_task(provider.get_workflow_instances([w.id])) for _ in range(20)]  # a stream
    await asyncio.sleep(0.001)
    await provider.close()
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        assert isinstance(outcome, (list, StorageUnavailable)), repr(outcome)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("workflow.version", lambda w: setattr(w, "version", "1")),
        ("workflow.next_execution", lambda w: setattr(w, "next_execution", "0")),
        ("step_id", lambda w: setattr(w.execution_pointers[0], "step_id", "0")),
        ("retry_count", lambda w: setattr(w.execution_pointers[0], "retry_count", 1.5)),
    ],
    ids=["version", "next_execution", "step_id", "retry_count"],
)
async def test_a_model_integer_of_another_type_is_invalid_argument_naming_its_field(
    provider: PersistenceProvider, field: str, change: Any
) -> None:
    # The gRPC client used to name only the record ("workflow: 'str' object cannot be interpreted as
    # an integer"); the README promises INVALID_ARGUMENT naming the field.
    w = workflow()
    change(w)
    with pytest.raises(InvalidArgument) as info:
        await provider.create_new_workflow(w)
    assert info.value.metadata.get("field", "").endswith(field), info.value.metadata
    assert f"{field}: expected an integer, got " in str(info.value)


async def test_a_command_execute_time_of_another_type_is_invalid_argument_naming_it(
    provider: PersistenceProvider,
) -> None:
    with pytest.raises(InvalidArgument) as info:
        await provider.schedule_command(ScheduledCommand.process_workflow("wf", "5"))  # type: ignore[arg-type]
    assert info.value.metadata.get("field") == "command.execute_time"
    assert str(info.value) == "command.execute_time: expected an integer, got str"
