"""Conformance: execution errors, the store itself, and invalid arguments."""

from __future__ import annotations

import math
import pathlib
from datetime import datetime, timedelta, timezone

import pytest

from conformance_support import EPOCH, T0, event, read_only, subscription, workflow
from wfe_client import ExecutionError, InvalidArgument, PersistenceProvider, WorkflowNotFound


def _micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def _error_rows(db_path: pathlib.Path) -> list[tuple[int, str, str, str]]:
    conn = read_only(db_path)
    try:
        return conn.execute(
            "SELECT error_time, workflow_id, execution_pointer_id, message FROM execution_errors ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


async def test_persist_errors_stores_every_error(provider: PersistenceProvider, db_path: pathlib.Path) -> None:
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
    rows = _error_rows(db_path)
    assert rows == [(_micros(e.error_time), e.workflow_id, e.execution_pointer_id, e.message) for e in errors]
    # The third error's instant is 12:00:00.000005 UTC.
    assert rows[2][0] == _micros(T0) + 5


async def test_persist_errors_appends(provider: PersistenceProvider, db_path: pathlib.Path) -> None:
    await provider.persist_errors([ExecutionError.new("wf", "p", "first")])
    await provider.persist_errors([ExecutionError.new("wf", "p", "first")])  # same content, second row
    await provider.persist_errors([ExecutionError.new("wf", "p", f"m{i}") for i in range(50)])
    rows = _error_rows(db_path)
    assert [r[3] for r in rows] == ["first", "first"] + [f"m{i}" for i in range(50)]


async def test_persist_no_errors(provider: PersistenceProvider, db_path: pathlib.Path) -> None:
    await provider.persist_errors([])
    assert _error_rows(db_path) == []


async def test_persist_errors_all_or_nothing(provider: PersistenceProvider, db_path: pathlib.Path) -> None:
    good = ExecutionError.new("wf", "p", "good")
    bad = ExecutionError(datetime(2024, 1, 1), "wf", "p", "naive time")  # naive: invalid
    with pytest.raises(ValueError):
        await provider.persist_errors([good, bad])
    assert _error_rows(db_path) == []


async def test_ensure_store_exists_is_idempotent(provider: PersistenceProvider, db_path: pathlib.Path) -> None:
    w = workflow(name="survivor")
    await provider.create_new_workflow(w)
    await provider.create_event(event(id="e-1", time=T0))
    await provider.create_event_subscription(subscription())
    await provider.ensure_store_exists()
    await provider.ensure_store_exists()
    assert (await provider.get_workflow_instance_by_name("survivor")).id == w.id
    assert (await provider.get_event("e-1")).event_time == T0
    assert await provider.next_definition_sequence("order") == 1
    conn = read_only(db_path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {
            "workflows",
            "execution_pointers",
            "events",
            "event_subscriptions",
            "scheduled_commands",
            "execution_errors",
            "definition_sequences",
        } <= tables
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
        assert conn.execute("SELECT count(*) FROM workflows").fetchone()[0] == 1
    finally:
        conn.close()
    # Still fully usable afterwards.
    other = workflow()
    await provider.create_new_workflow(other)
    assert other.name == "order-2"


async def test_acknowledged_writes_are_visible_in_the_file(provider: PersistenceProvider, db_path: pathlib.Path) -> None:
    w = workflow(id="on-disk", name="disk")
    await provider.create_new_workflow(w)
    conn = read_only(db_path)
    try:
        assert conn.execute("SELECT name FROM workflows WHERE id = 'on-disk'").fetchall() == [("disk",)]
        assert conn.execute("SELECT count(*) FROM execution_pointers WHERE workflow_id = 'on-disk'").fetchone()[0] == 1
    finally:
        conn.close()


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
