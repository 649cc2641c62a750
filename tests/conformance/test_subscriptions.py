"""Conformance: event subscriptions (create, get, list, terminate, first open, tokens)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from conformance_support import T0, UTC, is_uuid4, now, subscription

from wfe_client import (
    AlreadyExists,
    EventSubscription,
    NotFound,
    PersistenceProvider,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
)


async def test_create_subscription_keeps_id_and_round_trips(provider: PersistenceProvider) -> None:
    s = EventSubscription(
        id="sub-1",
        workflow_id="wf-9",
        step_id=3,
        execution_pointer_id="ptr-9",
        event_name="approved",
        event_key="order-9",
        subscribe_as_of=datetime(2024, 1, 2, 3, 4, 5, 600007, tzinfo=UTC),
        subscription_data={"threshold": 2**40, "ok": True},
    )
    assert await provider.create_event_subscription(s) == "sub-1"
    got = await provider.get_subscription("sub-1")
    assert got == s
    assert got.external_token is None and got.external_worker_id is None and got.external_token_expiry is None


async def test_create_subscription_with_token_fields(provider: PersistenceProvider) -> None:
    s = subscription()
    s.external_token, s.external_worker_id = "tok", "worker"
    s.external_token_expiry = datetime(2031, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    await provider.create_event_subscription(s)
    assert await provider.get_subscription(s.id) == s


async def test_create_subscription_generates_uuid4(provider: PersistenceProvider) -> None:
    s = subscription()
    s.id = ""
    sid = await provider.create_event_subscription(s)
    assert is_uuid4(sid), sid
    got = await provider.get_subscription(sid)
    assert got.id == sid and got.workflow_id == "wf-1" and got.subscribe_as_of == T0


async def test_create_subscription_duplicate(provider: PersistenceProvider) -> None:
    s = subscription(workflow_id="first")
    await provider.create_event_subscription(s)
    dup = subscription(workflow_id="second")
    dup.id = s.id
    with pytest.raises(SubscriptionAlreadyExists) as info:
        await provider.create_event_subscription(dup)
    assert isinstance(info.value, AlreadyExists)
    assert (await provider.get_subscription(s.id)).workflow_id == "first"


async def test_get_subscription_missing(provider: PersistenceProvider) -> None:
    with pytest.raises(SubscriptionNotFound) as info:
        await provider.get_subscription("missing")
    assert isinstance(info.value, NotFound)


async def test_get_subscriptions_filters(provider: PersistenceProvider) -> None:
    early = subscription("e", "k", T0 - timedelta(minutes=2))
    at = subscription("e", "k", T0)
    later = subscription("e", "k", T0 + timedelta(minutes=2))
    other_key = subscription("e", "k2", T0 - timedelta(minutes=2))
    other_name = subscription("e2", "k", T0 - timedelta(minutes=2))
    terminated = subscription("e", "k", T0 - timedelta(minutes=3))
    for s in (later, at, other_key, early, other_name, terminated):
        await provider.create_event_subscription(s)
    await provider.terminate_subscription(terminated.id)
    got = await provider.get_subscriptions("e", "k", T0)
    assert [s.id for s in got] == [early.id, at.id]
    assert got[0] == early
    assert [s.id for s in await provider.get_subscriptions("e", "k", T0 + timedelta(hours=1))] == [
        early.id,
        at.id,
        later.id,
    ]
    assert await provider.get_subscriptions("e", "k", T0 - timedelta(hours=1)) == []
    assert [s.id for s in await provider.get_subscriptions("e", "k2", T0)] == [other_key.id]


async def test_terminate_subscription(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    await provider.terminate_subscription(s.id)
    # Still readable by id, no longer listed nor offered.
    assert (await provider.get_subscription(s.id)).id == s.id
    assert await provider.get_subscriptions("evt", "k", T0) == []
    assert await provider.get_first_open_subscription("evt", "k", T0) is None


async def test_terminate_missing_subscription(provider: PersistenceProvider) -> None:
    with pytest.raises(SubscriptionNotFound):
        await provider.terminate_subscription("missing")


async def test_first_open_subscription_oldest_first(provider: PersistenceProvider) -> None:
    newer = subscription("e", "k", T0 - timedelta(seconds=1))
    oldest = subscription("e", "k", T0 - timedelta(seconds=5))
    middle = subscription("e", "k", T0 - timedelta(seconds=3))
    for s in (newer, oldest, middle):
        await provider.create_event_subscription(s)
    assert (await provider.get_first_open_subscription("e", "k", T0)) == oldest
    await provider.terminate_subscription(oldest.id)
    assert (await provider.get_first_open_subscription("e", "k", T0)).id == middle.id
    # as_of before every remaining subscription: none.
    assert await provider.get_first_open_subscription("e", "k", T0 - timedelta(seconds=4)) is None
    assert await provider.get_first_open_subscription("e", "other", T0) is None
    assert await provider.get_first_open_subscription("other", "k", T0) is None


async def test_first_open_subscription_skips_live_token_and_returns_it_after_expiry(
    provider: PersistenceProvider,
) -> None:
    held = subscription("e", "k", T0 - timedelta(seconds=5))
    free = subscription("e", "k", T0 - timedelta(seconds=1))
    await provider.create_event_subscription(held)
    await provider.create_event_subscription(free)
    expiry = now() + timedelta(milliseconds=300)
    assert await provider.set_subscription_token(held.id, "tok", "w1", expiry)
    first = await provider.get_first_open_subscription("e", "k", T0)
    await provider.terminate_subscription(free.id)
    second = await provider.get_first_open_subscription("e", "k", T0)
    if now() < expiry:  # a loaded machine may take longer than the token lives
        assert first is not None and first.id == free.id
        assert second is None
    await asyncio.sleep(max(0.0, (expiry - now()).total_seconds()) + 0.02)
    got = await provider.get_first_open_subscription("e", "k", T0)
    assert got is not None and got.id == held.id
    assert got.external_token == "tok"


async def test_first_open_subscription_skips_live_token_deterministic(provider: PersistenceProvider) -> None:
    held = subscription("e", "k", T0 - timedelta(seconds=5))
    free = subscription("e", "k", T0 - timedelta(seconds=1))
    await provider.create_event_subscription(held)
    await provider.create_event_subscription(free)
    assert await provider.set_subscription_token(held.id, "tok", "w1", now() + timedelta(hours=1))
    assert (await provider.get_first_open_subscription("e", "k", T0)).id == free.id
    await provider.terminate_subscription(free.id)
    assert await provider.get_first_open_subscription("e", "k", T0) is None


async def test_first_open_subscription_returns_one_whose_token_expired(provider: PersistenceProvider) -> None:
    newer = subscription("e", "k", T0 - timedelta(seconds=1))
    expired = subscription("e", "k", T0 - timedelta(seconds=5))
    expired.external_token, expired.external_worker_id = "stale", "gone-worker"
    expired.external_token_expiry = now() - timedelta(seconds=1)
    await provider.create_event_subscription(newer)
    await provider.create_event_subscription(expired)
    got = await provider.get_first_open_subscription("e", "k", T0)
    assert got is not None and got.id == expired.id  # oldest, and its token no longer counts


async def test_first_open_subscription_returns_it_after_token_cleared(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    assert await provider.set_subscription_token(s.id, "tok", "w", now() + timedelta(hours=1))
    assert await provider.get_first_open_subscription("evt", "k", T0) is None
    await provider.clear_subscription_token(s.id, "tok")
    assert (await provider.get_first_open_subscription("evt", "k", T0)).id == s.id


async def test_set_subscription_token_stores_fields(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    expiry = datetime(2099, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
    assert await provider.set_subscription_token(s.id, "token-a", "worker-a", expiry) is True
    got = await provider.get_subscription(s.id)
    assert (got.external_token, got.external_worker_id, got.external_token_expiry) == ("token-a", "worker-a", expiry)


async def test_set_subscription_token_refused_while_live_token_holds(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    expiry = now() + timedelta(hours=1)
    assert await provider.set_subscription_token(s.id, "token-a", "worker-a", expiry) is True
    assert await provider.set_subscription_token(s.id, "token-b", "worker-b", expiry) is False
    got = await provider.get_subscription(s.id)
    assert (got.external_token, got.external_worker_id) == ("token-a", "worker-a")
    # The holder may renew its own token.
    later = expiry + timedelta(hours=1)
    assert await provider.set_subscription_token(s.id, "token-a", "worker-a", later) is True
    assert (await provider.get_subscription(s.id)).external_token_expiry == later


async def test_set_subscription_token_reclaims_expired_token(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    assert await provider.set_subscription_token(s.id, "old", "w-old", now() - timedelta(seconds=1)) is True
    new_expiry = now() + timedelta(hours=1)
    assert await provider.set_subscription_token(s.id, "new", "w-new", new_expiry) is True
    got = await provider.get_subscription(s.id)
    assert (got.external_token, got.external_worker_id, got.external_token_expiry) == ("new", "w-new", new_expiry)
    # The former holder can no longer clear it.
    with pytest.raises(SubscriptionNotFound):
        await provider.clear_subscription_token(s.id, "old")
    assert (await provider.get_subscription(s.id)).external_token == "new"


async def test_set_subscription_token_missing(provider: PersistenceProvider) -> None:
    with pytest.raises(SubscriptionNotFound):
        await provider.set_subscription_token("missing", "tok", "w", now() + timedelta(minutes=1))


async def test_set_subscription_token_concurrent_exactly_one_wins(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    expiry = now() + timedelta(hours=1)
    results = await asyncio.gather(
        *(provider.set_subscription_token(s.id, f"token-{i}", f"worker-{i}", expiry) for i in range(20))
    )
    assert sum(1 for r in results if r is True) == 1
    assert all(r is False for r in results if r is not True)
    winner = results.index(True)
    got = await provider.get_subscription(s.id)
    assert (got.external_token, got.external_worker_id) == (f"token-{winner}", f"worker-{winner}")


async def test_clear_subscription_token(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    assert await provider.set_subscription_token(s.id, "tok", "w", now() + timedelta(hours=1))
    await provider.clear_subscription_token(s.id, "tok")
    got = await provider.get_subscription(s.id)
    assert (got.external_token, got.external_worker_id, got.external_token_expiry) == (None, None, None)
    # Free again: anyone may take it.
    assert await provider.set_subscription_token(s.id, "other", "w2", now() + timedelta(hours=1)) is True


async def test_clear_subscription_token_wrong_token(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    expiry = now() + timedelta(hours=1)
    assert await provider.set_subscription_token(s.id, "right", "w", expiry)
    with pytest.raises(SubscriptionNotFound):
        await provider.clear_subscription_token(s.id, "wrong")
    got = await provider.get_subscription(s.id)
    assert (got.external_token, got.external_worker_id, got.external_token_expiry) == ("right", "w", expiry)


async def test_clear_subscription_token_when_none_held(provider: PersistenceProvider) -> None:
    s = subscription()
    await provider.create_event_subscription(s)
    with pytest.raises(SubscriptionNotFound):
        await provider.clear_subscription_token(s.id, "tok")


async def test_clear_subscription_token_missing(provider: PersistenceProvider) -> None:
    with pytest.raises(SubscriptionNotFound):
        await provider.clear_subscription_token("missing", "tok")
