"""Conformance: instants (boundaries, time zones, precision, naive datetimes) and data fidelity."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conformance_support import (
    EPOCH,
    T0,
    US,
    UTC,
    at_ms,
    event,
    full_pointer,
    full_workflow,
    ms,
    now,
    subscription,
    workflow,
)

from wfe_client import (
    Event,
    EventNotFound,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    PersistenceProvider,
    PointerStatus,
    ScheduledCommand,
    SubscriptionNotFound,
    WorkflowInstance,
    WorkflowNotFound,
    WorkflowStatus,
)

IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))
INSTANT = T0 + timedelta(microseconds=123_457)
"""An instant that is not on a millisecond boundary."""


def strict_equal(a: Any, b: Any) -> bool:
    """JSON equality that also tells bool from int and int from float (``True == 1 == 1.0`` in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_strict_equal_tells_types_apart() -> None:
    assert strict_equal({"a": [1, 2.5, True, None, "x"]}, {"a": [1, 2.5, True, None, "x"]})
    assert not strict_equal(True, 1)
    assert not strict_equal(1, 1.0)
    assert not strict_equal([1], [1, 2])
    assert not strict_equal({"a": 1}, {"b": 1})


# -- boundaries -----------------------------------------------------------------------------------


async def test_event_boundaries(provider: PersistenceProvider) -> None:
    await provider.create_event(event("b", "k", INSTANT, id="edge"))
    assert await provider.get_runnable_events(INSTANT) == ["edge"]
    assert await provider.get_runnable_events(INSTANT - US) == []
    assert await provider.get_runnable_events(INSTANT + US) == ["edge"]
    assert await provider.get_events("b", "k", INSTANT) == ["edge"]
    assert await provider.get_events("b", "k", INSTANT - US) == []
    assert await provider.get_events("b", "k", INSTANT + US) == ["edge"]


async def test_subscription_boundaries(provider: PersistenceProvider) -> None:
    s = subscription("b", "k", INSTANT)
    await provider.create_event_subscription(s)
    assert [x.id for x in await provider.get_subscriptions("b", "k", INSTANT)] == [s.id]
    assert await provider.get_subscriptions("b", "k", INSTANT - US) == []
    assert [x.id for x in await provider.get_subscriptions("b", "k", INSTANT + US)] == [s.id]
    assert (await provider.get_first_open_subscription("b", "k", INSTANT)).id == s.id
    assert await provider.get_first_open_subscription("b", "k", INSTANT - US) is None
    assert (await provider.get_first_open_subscription("b", "k", INSTANT + US)).id == s.id


async def test_runnable_instance_boundaries(provider: PersistenceProvider) -> None:
    due = ms(T0) + 7
    await provider.create_new_workflow(workflow(id="edge", next_execution=due))
    assert await provider.get_runnable_instances(at_ms(due)) == ["edge"]
    assert await provider.get_runnable_instances(at_ms(due) - US) == []
    assert await provider.get_runnable_instances(at_ms(due) + US) == ["edge"]
    assert await provider.get_runnable_instances(at_ms(due).astimezone(IST)) == ["edge"]
    assert await provider.get_runnable_instances((at_ms(due) - US).astimezone(PST)) == []


async def test_next_execution_zero_and_epoch(provider: PersistenceProvider) -> None:
    await provider.create_new_workflow(workflow(id="zero", next_execution=0))
    assert await provider.get_runnable_instances(EPOCH) == ["zero"]
    assert (await provider.get_workflow_instance("zero")).next_execution == 0


# -- time zones -----------------------------------------------------------------------------------


async def test_other_time_zones_compare_as_instants(provider: PersistenceProvider) -> None:
    noon = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    same_in_ist = datetime(2024, 3, 10, 17, 30, tzinfo=IST)
    same_in_pst = datetime(2024, 3, 10, 4, 0, tzinfo=PST)
    assert same_in_ist == noon == same_in_pst
    await provider.create_event(event("tz", "k", noon, id="noon"))
    for as_of in (same_in_ist, same_in_pst):
        assert await provider.get_events("tz", "k", as_of) == ["noon"]
        assert await provider.get_runnable_events(as_of) == ["noon"]
        assert await provider.get_events("tz", "k", as_of - US) == []
        assert await provider.get_runnable_events(as_of - US) == []


async def test_stored_instants_from_other_zones_order_as_instants(provider: PersistenceProvider) -> None:
    # Wall clocks disagree with instants: 10:00-08:00 is 18:00Z, 20:00+05:30 is 14:30Z.
    late = datetime(2024, 3, 10, 10, 0, tzinfo=PST)
    early = datetime(2024, 3, 10, 20, 0, tzinfo=IST)
    await provider.create_event(event("ord", "k", late, id="late"))
    await provider.create_event(event("ord", "k", early, id="early"))
    assert await provider.get_runnable_events(datetime(2024, 3, 11, tzinfo=UTC)) == ["early", "late"]
    assert await provider.get_events("ord", "k", datetime(2024, 3, 10, 15, 0, tzinfo=UTC)) == ["early"]
    got = await provider.get_event("late")
    assert got.event_time == late
    assert got.event_time.utcoffset() is not None

    s_late = subscription("ord", "k", late)
    s_early = subscription("ord", "k", early)
    await provider.create_event_subscription(s_late)
    await provider.create_event_subscription(s_early)
    assert (await provider.get_first_open_subscription("ord", "k", late)).id == s_early.id
    assert [s.id for s in await provider.get_subscriptions("ord", "k", late)] == [s_early.id, s_late.id]
    assert (await provider.get_subscription(s_late.id)).subscribe_as_of == late


async def test_named_time_zone_with_dst(provider: PersistenceProvider) -> None:
    la = ZoneInfo("America/Los_Angeles")
    summer = datetime(2024, 7, 1, 5, 0, 0, 1, tzinfo=la)  # PDT, UTC-07:00: 12:00:00.000001Z
    winter = datetime(2024, 1, 1, 4, 0, 0, 2, tzinfo=la)  # PST, UTC-08:00: 12:00:00.000002Z
    await provider.create_event(event("dst", "k", summer, id="summer"))
    await provider.create_event(event("dst", "k", winter, id="winter"))
    assert (await provider.get_event("summer")).event_time == datetime(2024, 7, 1, 12, 0, 0, 1, tzinfo=UTC)
    assert (await provider.get_event("winter")).event_time == datetime(2024, 1, 1, 12, 0, 0, 2, tzinfo=UTC)
    assert await provider.get_events("dst", "k", datetime(2024, 7, 1, 12, 0, 0, 1, tzinfo=UTC)) == ["winter", "summer"]
    assert await provider.get_events("dst", "k", datetime(2024, 7, 1, 5, 0, 0, 0, tzinfo=la)) == ["winter"]


async def test_token_expiry_in_other_zones(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    live = (now() + timedelta(hours=1)).astimezone(PST)
    assert await provider.set_subscription_token(s.id, "a", "w", live)
    assert await provider.set_subscription_token(s.id, "b", "w", live) is False
    assert (await provider.get_subscription(s.id)).external_token_expiry == live
    other = subscription()
    await provider.create_event_subscription(other)
    expired = (now() - timedelta(seconds=5)).astimezone(IST)
    assert await provider.set_subscription_token(other.id, "a", "w", expired)
    assert await provider.set_subscription_token(other.id, "b", "w", now() + timedelta(hours=1)) is True


async def test_process_commands_as_of_in_other_zone(provider: PersistenceProvider) -> None:
    due = ms(T0) + 250
    await provider.schedule_command(ScheduledCommand.process_workflow("tz", due))
    seen: list[str] = []

    async def handler(command: ScheduledCommand) -> None:
        seen.append(command.data)

    await provider.process_commands((at_ms(due) - US).astimezone(IST), handler)
    assert seen == []
    await provider.process_commands(at_ms(due).astimezone(PST), handler)
    assert seen == ["tz"]


# -- precision ------------------------------------------------------------------------------------


async def test_microseconds_round_trip_everywhere(provider: PersistenceProvider) -> None:
    t = [datetime(2024, 7, 1, 1, 2, 3, micro, tzinfo=UTC) for micro in (1, 999_999, 500_001, 123_456, 7)]
    pointer = ExecutionPointer.new(0)
    pointer.sleep_until, pointer.start_time, pointer.end_time = t[0], t[1], t[2]
    w = workflow(pointers=[pointer])
    w.create_time, w.complete_time = t[3], t[4]
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert (got.create_time, got.complete_time) == (t[3], t[4])
    gp = got.execution_pointers[0]
    assert (gp.sleep_until, gp.start_time, gp.end_time) == (t[0], t[1], t[2])

    e = event(time=t[1])
    await provider.create_event(e)
    assert (await provider.get_event(e.id)).event_time == t[1]

    s = subscription(as_of=t[4])
    s.external_token, s.external_worker_id, s.external_token_expiry = "x", "y", t[0]
    await provider.create_event_subscription(s)
    got_s = await provider.get_subscription(s.id)
    assert (got_s.subscribe_as_of, got_s.external_token_expiry) == (t[4], t[0])


async def test_returned_datetimes_are_aware(provider: PersistenceProvider) -> None:
    w = full_workflow()
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    instants = [got.create_time, got.complete_time]
    for p in got.execution_pointers:
        instants += [p.sleep_until, p.start_time, p.end_time]
    assert all(i is not None and i.utcoffset() is not None for i in instants)


@pytest.mark.parametrize(
    "instant",
    [
        EPOCH,
        datetime(2038, 1, 19, 3, 14, 8, 1, tzinfo=UTC),
        datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC),  # past the int64-nanosecond limit
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=["epoch", "2038", "2262", "9999"],
)
async def test_extreme_instants_round_trip(provider: PersistenceProvider, instant: datetime) -> None:
    e = event("extreme", "k", instant)
    await provider.create_event(e)
    assert (await provider.get_event(e.id)).event_time == instant
    assert await provider.get_events("extreme", "k", instant) == [e.id]
    if instant > EPOCH:  # instants before 1970 are rejected as arguments
        assert await provider.get_events("extreme", "k", instant - US) == []


# -- naive datetimes ------------------------------------------------------------------------------

NAIVE = datetime(2024, 3, 10, 12, 0, 0)

Call = Callable[[PersistenceProvider], Awaitable[Any]]


async def _noop(command: ScheduledCommand) -> None:
    return None


NAIVE_ARGUMENTS: dict[str, Call] = {
    "get_runnable_instances": lambda p: p.get_runnable_instances(NAIVE),
    "get_runnable_events": lambda p: p.get_runnable_events(NAIVE),
    "get_events": lambda p: p.get_events("e", "k", NAIVE),
    "get_subscriptions": lambda p: p.get_subscriptions("e", "k", NAIVE),
    "get_first_open_subscription": lambda p: p.get_first_open_subscription("e", "k", NAIVE),
    "process_commands": lambda p: p.process_commands(NAIVE, _noop),
    "claim_commands": lambda p: p.claim_commands(NAIVE),
}


@pytest.mark.parametrize("call", list(NAIVE_ARGUMENTS.values()), ids=list(NAIVE_ARGUMENTS))
async def test_naive_datetime_argument_is_value_error(provider: PersistenceProvider, call: Call) -> None:
    with pytest.raises(ValueError):
        await call(provider)


async def test_naive_token_expiry_is_value_error(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    with pytest.raises(ValueError):
        await provider.set_subscription_token(s.id, "tok", "w", NAIVE)
    assert (await provider.get_subscription(s.id)).external_token is None


def _naive_workflows() -> dict[str, WorkflowInstance]:
    cases = {}
    for field in ("create_time", "complete_time"):
        w = workflow(id=f"naive-{field}")
        setattr(w, field, NAIVE)
        cases[field] = w
    for field in ("sleep_until", "start_time", "end_time"):
        p = ExecutionPointer.new(0)
        setattr(p, field, NAIVE)
        cases[f"pointer.{field}"] = workflow(id=f"naive-pointer-{field}", pointers=[ExecutionPointer.new(1), p])
    return cases


@pytest.mark.parametrize("case", list(_naive_workflows()))
async def test_naive_datetime_in_workflow_is_value_error(provider: PersistenceProvider, case: str) -> None:
    w = _naive_workflows()[case]
    with pytest.raises(ValueError):
        await provider.create_new_workflow(w)
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance(w.id)

    # persist_workflow and persist_workflow_with_subscriptions reject it too, changing nothing.
    good = _naive_workflows()[case]
    good.create_time, good.complete_time = T0, None
    good.execution_pointers = [ExecutionPointer.new(0)]
    good.data = {"state": "stored"}
    await provider.create_new_workflow(good)
    stored = await provider.get_workflow_instance(good.id)
    w.data = {"state": "changed"}
    with pytest.raises(ValueError):
        await provider.persist_workflow(w)
    s = subscription(workflow_id=w.id)
    with pytest.raises(ValueError):
        await provider.persist_workflow_with_subscriptions(w, [s])
    assert await provider.get_workflow_instance(good.id) == stored
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription(s.id)


async def test_naive_datetime_in_subscriptions_of_persist_is_value_error(provider: PersistenceProvider) -> None:
    w = workflow(data={"state": "stored"})
    await provider.create_new_workflow(w)
    bad = subscription(as_of=NAIVE, workflow_id=w.id)
    w.data = {"state": "changed"}
    with pytest.raises(ValueError):
        await provider.persist_workflow_with_subscriptions(w, [subscription(workflow_id=w.id), bad])
    assert (await provider.get_workflow_instance(w.id)).data == {"state": "stored"}


async def test_naive_event_time_is_value_error(provider: PersistenceProvider) -> None:
    e = event(id="naive-event")
    e.event_time = NAIVE
    with pytest.raises(ValueError):
        await provider.create_event(e)
    with pytest.raises(EventNotFound):
        await provider.get_event("naive-event")


@pytest.mark.parametrize("field", ["subscribe_as_of", "external_token_expiry"])
async def test_naive_subscription_times_are_value_error(provider: PersistenceProvider, field: str) -> None:
    s = subscription()
    s.external_token = "tok"
    s.external_token_expiry = T0
    setattr(s, field, NAIVE)
    with pytest.raises(ValueError):
        await provider.create_event_subscription(s)
    with pytest.raises(SubscriptionNotFound):
        await provider.get_subscription(s.id)


async def test_naive_error_time_is_value_error(provider: PersistenceProvider) -> None:
    with pytest.raises(ValueError):
        await provider.persist_errors([ExecutionError(NAIVE, "wf", "p", "m")])


# -- data fidelity --------------------------------------------------------------------------------

UNICODE = "emoji 😀👩‍👩‍👧‍👦🇫🇷, CJK 漢字かなカナ한국어, combining e\u0301 vs é, RTL שלום, zero-width \u200b, NUL-free"


def _deep(depth: int) -> Any:
    value: Any = {"leaf": [None, True, False, 0, -0.5, "end"]}
    for i in range(depth):
        value = {"level": i, "child": value} if i % 2 else [i, value, {"empty": {}, "none": None}, []]
    return value


JSON_VALUES: dict[str, Any] = {
    "null": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int62": 2**62,
    "int64-min": -(2**63),
    "uint64-max": 2**64 - 1,
    "int53-plus-one": 2**53 + 1,
    "float": 0.1,
    "float-whole": 3.0,
    "float-extremes": [1.7976931348623157e308, 5e-324, -2.5e-10, 1e21],
    "string": UNICODE,
    "escapes": 'quote " backslash \\ newline \n tab \t nul \u0000 control \u001f',
    "empty-string": "",
    "empty-object": {},
    "empty-array": [],
    "mixed-array": [1, "two", 3.5, None, True, {"k": [False]}],
    "unicode-keys": {"ключ": 1, "鍵": 2, "🔑": 3, "e\u0301": 4, "é": 5, "": 6},
    "deep": _deep(60),
    "numbers-in-object": {"a": 2**64 - 1, "b": -(2**63), "c": 2**62, "d": 1.5, "e": True},
}


@pytest.mark.parametrize("value", list(JSON_VALUES.values()), ids=list(JSON_VALUES))
async def test_json_round_trips_exactly(provider: PersistenceProvider, value: Any) -> None:
    pointer = ExecutionPointer.new(0)
    pointer.persistence_data = value if value is not None else {"x": None}
    pointer.event_data = value if value is not None else [None]
    pointer.context_item = value if value is not None else 0
    pointer.outcome = value if value is not None else ""
    pointer.extension_attributes = {"attr": value}
    w = workflow(data=None, pointers=[pointer])
    w.data = value
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert strict_equal(got.data, value)
    gp = got.execution_pointers[0]
    for field in ("persistence_data", "event_data", "context_item", "outcome", "extension_attributes"):
        assert strict_equal(getattr(gp, field), getattr(pointer, field)), field

    e = event(time=T0)
    e.event_data = value
    await provider.create_event(e)
    assert strict_equal((await provider.get_event(e.id)).event_data, value)

    s = subscription()
    s.subscription_data = value if value is not None else {"null": None}
    await provider.create_event_subscription(s)
    assert strict_equal((await provider.get_subscription(s.id)).subscription_data, s.subscription_data)


async def test_json_survives_persist(provider: PersistenceProvider) -> None:
    w = workflow(data={"v": 1})
    await provider.create_new_workflow(w)
    w.data = JSON_VALUES["numbers-in-object"]
    await provider.persist_workflow(w)
    assert strict_equal((await provider.get_workflow_instance(w.id)).data, JSON_VALUES["numbers-in-object"])


async def test_unicode_in_every_text_field(provider: PersistenceProvider) -> None:
    pointer = full_pointer(0)
    pointer.id = "ptr-😀"
    pointer.step_name = UNICODE
    pointer.event_name, pointer.event_key = "évènement-名", "clé-🔑"
    pointer.children, pointer.scope = ["子-1", "e\u0301"], ["范围", "é"]
    pointer.predecessor_id = "前-1"
    pointer.extension_attributes = {"属性-e\u0301": UNICODE}
    w = WorkflowInstance(
        id="wf-漢字-😀",
        workflow_definition_id="定義-déf",
        version=1,
        name="名前-e\u0301",
        root_workflow_id="根-1",
        description=UNICODE,
        reference="référence-🔗",
        execution_pointers=[pointer],
        data={UNICODE: UNICODE},
    )
    await provider.create_new_workflow(w)
    assert await provider.get_workflow_instance("wf-漢字-😀") == w
    assert (await provider.get_workflow_instance_by_name("名前-e\u0301")).id == w.id
    with pytest.raises(WorkflowNotFound):
        await provider.get_workflow_instance_by_name("名前-é")  # no Unicode normalisation

    auto = workflow("定義-déf")
    await provider.create_new_workflow(auto)
    assert auto.name == "定義-déf-1"

    e = Event(id="ev-😀", event_name="名-e\u0301", event_key="鍵-🔑", event_data=UNICODE, event_time=T0)
    await provider.create_event(e)
    assert await provider.get_event("ev-😀") == e
    assert await provider.get_events("名-e\u0301", "鍵-🔑", T0) == ["ev-😀"]
    assert await provider.get_events("名-é", "鍵-🔑", T0) == []

    s = EventSubscription(
        id="sub-😀",
        workflow_id="wf-漢字-😀",
        step_id=0,
        execution_pointer_id="ptr-😀",
        event_name="名-e\u0301",
        event_key="鍵-🔑",
        subscribe_as_of=T0,
        subscription_data=[UNICODE],
    )
    await provider.create_event_subscription(s)
    assert await provider.get_subscription("sub-😀") == s
    assert await provider.set_subscription_token("sub-😀", "トークン", "作業者-1", now() + timedelta(hours=1))
    got = await provider.get_subscription("sub-😀")
    assert (got.external_token, got.external_worker_id) == ("トークン", "作業者-1")
    await provider.clear_subscription_token("sub-😀", "トークン")
    assert (await provider.get_first_open_subscription("名-e\u0301", "鍵-🔑", T0)) == s


async def test_large_payloads(provider: PersistenceProvider) -> None:
    mib = "x" * (1024 * 1024 - 7) + "😀漢字e\u0301"
    w = workflow(data={"blob": mib})
    w.execution_pointers[0].persistence_data = mib
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert got.data["blob"] == mib
    assert got.execution_pointers[0].persistence_data == mib
    assert (await provider.get_workflow_instances([w.id]))[0].data == {"blob": mib}

    e = event(time=T0, data=mib)
    await provider.create_event(e)
    assert (await provider.get_event(e.id)).event_data == mib


async def test_16_mib_payload(provider: PersistenceProvider) -> None:
    blob = "y" * (16 * 1024 * 1024 - 2)  # JSON text of exactly 16 MiB
    w = workflow(data=blob)
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert len(got.data) == len(blob) and got.data == blob
    e = event(time=T0, data=blob[: 4 * 1024 * 1024])
    await provider.create_event(e)
    assert (await provider.get_event(e.id)).event_data == blob[: 4 * 1024 * 1024]


async def test_escape_heavy_payload(provider: PersistenceProvider) -> None:
    blob = '"\\\n\u0001' * (512 * 1024)  # 2 MiB of characters that JSON escapes
    w = workflow(data={"blob": blob})
    await provider.create_new_workflow(w)
    assert (await provider.get_workflow_instance(w.id)).data == {"blob": blob}


async def test_large_results_are_complete(provider: PersistenceProvider) -> None:
    # Together larger than any sensible single page: results must be paged or streamed, none lost.
    mib = 1024 * 1024
    instances = [workflow("big", data={"i": i, "blob": str(i) * (2 * mib)}) for i in range(5)]
    for w in instances:
        await provider.create_new_workflow(w)
    got = await provider.get_workflow_instances([w.id for w in instances])
    assert sorted(w.data["i"] for w in got) == list(range(5))
    assert all(w.data["blob"] == str(w.data["i"]) * (2 * mib) for w in got)

    subs = [subscription("big", "k", T0) for _ in range(5)]
    for i, s in enumerate(subs):
        s.subscription_data = str(i) * (2 * mib)
        await provider.create_event_subscription(s)
    listed = await provider.get_subscriptions("big", "k", T0)
    assert sorted(s.id for s in listed) == sorted(s.id for s in subs)
    assert {s.id: s.subscription_data for s in listed} == {s.id: s.subscription_data for s in subs}


async def test_many_pointers(provider: PersistenceProvider) -> None:
    pointers = [full_pointer(i, list(PointerStatus)[i % len(PointerStatus)]) for i in range(300)]
    w = workflow(pointers=pointers)
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert got.execution_pointers == pointers


async def test_every_field_set_round_trips(provider: PersistenceProvider) -> None:
    w = full_workflow()
    await provider.create_new_workflow(w)
    expected = full_workflow()
    expected.id, expected.root_workflow_id = w.id, w.root_workflow_id
    expected.execution_pointers = w.execution_pointers
    got = await provider.get_workflow_instance(w.id)
    for field in WorkflowInstance.__dataclass_fields__:
        if field != "execution_pointers":
            assert getattr(got, field) == getattr(w, field), field
    assert len(got.execution_pointers) == len(PointerStatus)
    for got_pointer, pointer in zip(got.execution_pointers, w.execution_pointers, strict=True):
        for field in ExecutionPointer.__dataclass_fields__:
            assert getattr(got_pointer, field) == getattr(pointer, field), field
            if isinstance(getattr(pointer, field), (dict, list, bool, int, float)):
                assert strict_equal(getattr(got_pointer, field), getattr(pointer, field)), field
    assert [p.status for p in got.execution_pointers] == list(PointerStatus)
    assert got == w
    assert got.status is WorkflowStatus.SUSPENDED
    assert got.version == 4_294_967_295
    assert (await provider.get_workflow_instance_by_name(w.name)) == w
    assert (await provider.get_workflow_instances([w.id])) == [w]


@pytest.mark.parametrize("status", list(WorkflowStatus), ids=lambda s: s.name)
async def test_every_workflow_status_round_trips(provider: PersistenceProvider, status: WorkflowStatus) -> None:
    w = workflow(status=status)
    await provider.create_new_workflow(w)
    assert (await provider.get_workflow_instance(w.id)).status is status


async def test_absent_optionals_stay_absent(provider: PersistenceProvider) -> None:
    pointer = ExecutionPointer(id="bare", step_id=0)
    w = WorkflowInstance(
        id="minimal",
        workflow_definition_id="min",
        version=0,
        name="minimal-name",
        execution_pointers=[pointer],
        next_execution=None,
        data=None,
    )
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance("minimal")
    assert got == w
    assert (got.root_workflow_id, got.description, got.reference, got.complete_time) == (None,) * 4
    assert got.next_execution is None and got.data is None and got.version == 0
    gp = got.execution_pointers[0]
    for field in (
        "sleep_until",
        "persistence_data",
        "start_time",
        "end_time",
        "event_name",
        "event_key",
        "event_data",
        "step_name",
        "context_item",
        "predecessor_id",
        "outcome",
    ):
        assert getattr(gp, field) is None, field
    assert (gp.children, gp.scope, gp.extension_attributes) == ([], [], {})
    assert (gp.active, gp.event_published, gp.retry_count, gp.status) == (True, False, 0, PointerStatus.PENDING)

    s = subscription()
    await provider.create_event_subscription(s)
    got_s = await provider.get_subscription(s.id)
    assert got_s.subscription_data is None
    assert (got_s.external_token, got_s.external_worker_id, got_s.external_token_expiry) == (None, None, None)


async def test_empty_strings_are_not_absent(provider: PersistenceProvider) -> None:
    pointer = ExecutionPointer(id="p", step_id=0, event_name="", event_key="", step_name="", predecessor_id="")
    pointer.outcome = ""
    w = workflow(pointers=[pointer])
    w.description, w.reference, w.root_workflow_id = "", "", ""
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert (got.description, got.reference, got.root_workflow_id) == ("", "", "")
    gp = got.execution_pointers[0]
    assert (gp.event_name, gp.event_key, gp.step_name, gp.predecessor_id, gp.outcome) == ("", "", "", "", "")


async def test_json_null_in_optional_json_is_absent(provider: PersistenceProvider) -> None:
    # Optional JSON fields: None means absent; a JSON null inside a value is kept.
    pointer = ExecutionPointer.new(0)
    pointer.persistence_data = {"inner": None}
    pointer.outcome = [None]
    w = workflow(pointers=[pointer])
    await provider.create_new_workflow(w)
    gp = (await provider.get_workflow_instance(w.id)).execution_pointers[0]
    assert gp.persistence_data == {"inner": None} and gp.outcome == [None]
    assert gp.event_data is None and gp.context_item is None


async def test_integer_limits_of_numeric_fields(provider: PersistenceProvider) -> None:
    pointer = ExecutionPointer(id="p", step_id=2**32 - 1, retry_count=2**32 - 1)
    w = workflow(pointers=[pointer], next_execution=2**63 - 1)
    w.version = 2**32 - 1
    await provider.create_new_workflow(w)
    got = await provider.get_workflow_instance(w.id)
    assert got.next_execution == 2**63 - 1
    assert got.version == 2**32 - 1
    assert (got.execution_pointers[0].step_id, got.execution_pointers[0].retry_count) == (2**32 - 1, 2**32 - 1)
    s = subscription(step_id=2**32 - 1)
    await provider.create_event_subscription(s)
    assert (await provider.get_subscription(s.id)).step_id == 2**32 - 1
    await provider.schedule_command(ScheduledCommand.process_workflow("far", 2**63 - 1))
    claim = await provider.claim_commands(datetime(9999, 12, 31, tzinfo=UTC))
    assert claim.commands == []  # 2**63-1 ms is far beyond year 9999


async def test_concurrent_mixed_operations(provider: PersistenceProvider) -> None:
    workflows = [workflow("mix", data={"i": i}) for i in range(20)]
    events = [event("mix", str(i), T0 + timedelta(microseconds=i), id=f"mix-{i}") for i in range(20)]
    subs = [subscription("mix", str(i), T0) for i in range(20)]
    await asyncio.gather(
        *(provider.create_new_workflow(w) for w in workflows),
        *(provider.create_event(e) for e in events),
        *(provider.create_event_subscription(s) for s in subs),
        *(provider.next_definition_sequence("other") for _ in range(20)),
    )
    assert sorted(w.name for w in workflows) == sorted(f"mix-{n}" for n in range(1, 21))
    assert await provider.get_runnable_events(T0 + timedelta(seconds=1)) == [f"mix-{i}" for i in range(20)]
    assert await provider.next_definition_sequence("other") == 21
