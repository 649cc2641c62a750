"""Conformance: events (create, get, runnable, by name and key, processed flags)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from conformance_support import T0, UTC, event, is_uuid4

from wfe_client import AlreadyExists, Event, EventAlreadyExists, EventNotFound, NotFound, PersistenceProvider


async def test_create_event_keeps_supplied_id_and_round_trips(provider: PersistenceProvider) -> None:
    e = Event(
        id="evt-1",
        event_name="payment",
        event_key="order-7",
        event_data={"amount": 10, "lines": [{"sku": "a"}]},
        event_time=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        is_processed=False,
    )
    assert await provider.create_event(e) == "evt-1"
    got = await provider.get_event("evt-1")
    assert got == e
    assert got.event_time.utcoffset() == timedelta(0)


async def test_create_event_generates_uuid4_for_empty_id(provider: PersistenceProvider) -> None:
    e = event(time=T0)
    e.id = ""
    eid = await provider.create_event(e)
    assert is_uuid4(eid), eid
    got = await provider.get_event(eid)
    assert got.id == eid
    assert got.event_name == "evt" and got.event_key == "k" and got.event_time == T0


async def test_create_event_already_processed(provider: PersistenceProvider) -> None:
    e = event(time=T0)
    e.is_processed = True
    await provider.create_event(e)
    assert (await provider.get_event(e.id)).is_processed is True
    assert await provider.get_runnable_events(T0 + timedelta(days=1)) == []


async def test_create_event_duplicate_id(provider: PersistenceProvider) -> None:
    await provider.create_event(event(id="same", time=T0, data={"v": "first"}))
    with pytest.raises(EventAlreadyExists) as info:
        await provider.create_event(event(id="same", time=T0, data={"v": "second"}))
    assert isinstance(info.value, AlreadyExists)
    assert (await provider.get_event("same")).event_data == {"v": "first"}


async def test_get_event_missing(provider: PersistenceProvider) -> None:
    with pytest.raises(EventNotFound) as info:
        await provider.get_event("missing")
    assert isinstance(info.value, NotFound)


async def test_mark_missing_event(provider: PersistenceProvider) -> None:
    with pytest.raises(EventNotFound):
        await provider.mark_event_processed("missing")
    with pytest.raises(EventNotFound):
        await provider.mark_event_unprocessed("missing")


async def test_mark_processed_and_unprocessed(provider: PersistenceProvider) -> None:
    e = event(time=T0)
    await provider.create_event(e)
    assert (await provider.get_event(e.id)).is_processed is False
    await provider.mark_event_processed(e.id)
    assert (await provider.get_event(e.id)).is_processed is True
    await provider.mark_event_processed(e.id)  # idempotent
    assert (await provider.get_event(e.id)).is_processed is True
    await provider.mark_event_unprocessed(e.id)
    assert (await provider.get_event(e.id)).is_processed is False
    await provider.mark_event_unprocessed(e.id)
    assert (await provider.get_event(e.id)).is_processed is False


async def test_runnable_events_oldest_first_excluding_processed_and_future(provider: PersistenceProvider) -> None:
    third = event(id="third", time=T0 + timedelta(seconds=3))
    first = event(id="first", time=T0 + timedelta(seconds=1))
    second = event(id="second", time=T0 + timedelta(seconds=2))
    done = event(id="done", time=T0)
    future = event(id="future", time=T0 + timedelta(hours=1))
    for e in (third, first, second, done, future):
        await provider.create_event(e)
    await provider.mark_event_processed("done")
    as_at = T0 + timedelta(seconds=10)
    assert await provider.get_runnable_events(as_at) == ["first", "second", "third"]
    await provider.mark_event_processed("second")
    assert await provider.get_runnable_events(as_at) == ["first", "third"]
    await provider.mark_event_unprocessed("done")
    assert await provider.get_runnable_events(as_at) == ["done", "first", "third"]
    assert await provider.get_runnable_events(T0 - timedelta(microseconds=1)) == []
    assert await provider.get_runnable_events(T0 + timedelta(hours=2)) == ["done", "first", "third", "future"]


async def test_runnable_events_many(provider: PersistenceProvider) -> None:
    events = [event(time=T0 - timedelta(milliseconds=i), data={"i": i}) for i in range(300)]
    await asyncio.gather(*(provider.create_event(e) for e in events))
    assert await provider.get_runnable_events(T0) == [e.id for e in reversed(events)]


async def test_get_events_matches_name_key_and_as_of(provider: PersistenceProvider) -> None:
    old = event("order.paid", "o-1", T0 - timedelta(minutes=5), id="old")
    at = event("order.paid", "o-1", T0, id="at")
    after = event("order.paid", "o-1", T0 + timedelta(minutes=5), id="after")
    other_key = event("order.paid", "o-2", T0 - timedelta(minutes=1), id="other-key")
    other_name = event("order.shipped", "o-1", T0 - timedelta(minutes=1), id="other-name")
    for e in (after, at, other_key, old, other_name):
        await provider.create_event(e)
    await provider.mark_event_processed("old")  # processed events are still listed
    assert await provider.get_events("order.paid", "o-1", T0) == ["old", "at"]
    assert await provider.get_events("order.paid", "o-1", T0 + timedelta(hours=1)) == ["old", "at", "after"]
    assert await provider.get_events("order.paid", "o-1", T0 - timedelta(hours=1)) == []
    assert await provider.get_events("order.paid", "o-2", T0) == ["other-key"]
    assert await provider.get_events("order.shipped", "o-1", T0) == ["other-name"]
    assert await provider.get_events("order.PAID", "o-1", T0) == []
    assert await provider.get_events("order.paid", "", T0) == []


async def test_get_events_with_empty_key(provider: PersistenceProvider) -> None:
    await provider.create_event(event("tick", "", T0, id="tick-1"))
    assert await provider.get_events("tick", "", T0) == ["tick-1"]
    assert await provider.get_events("tick", "x", T0) == []
