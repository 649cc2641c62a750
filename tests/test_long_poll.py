"""The long-poll dispatcher both backends share, where a wire test cannot time it: a leased item
handed to a waiter that left in the meantime goes back to the head of its queue, its leases freed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from wfe_sqlite import open_provider
from wfe_sqlite._cluster import Cluster
from wfe_sqlite._cluster_api import Handout, LeaseAsk
from wfe_sqlite._locks_store import LOOK_BUDGET, PASS_OVER
from wfe_sqlite._long_poll import LongPoll

INDEX = "INDEX"


def _poll(cluster: object) -> LongPoll:
    poll = cluster.queues._poll if isinstance(cluster, Cluster) else cluster._poll  # type: ignore[attr-defined]
    assert isinstance(poll, LongPoll)
    return poll


async def test_a_leased_item_whose_waiter_left_goes_back_with_its_leases_freed(store_url: str) -> None:
    store = await open_provider(store_url)
    try:
        cluster = store.cluster
        poll = _poll(cluster)
        real_take = poll._take
        entered, gate, taken = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def gated(queue: str, asks: Sequence[LeaseAsk | None]) -> list[Handout | None]:
            entered.set()
            await gate.wait()
            try:
                return await real_take(queue, asks)
            finally:
                taken.set()

        poll._take = gated  # type: ignore[method-assign]
        for item in ("first", "second"):
            assert await cluster.queue_work(INDEX, item)
        ask = LeaseAsk("leaving", 30_000_000, ("lease:",))
        waiter = asyncio.ensure_future(cluster.dequeue_leased(INDEX, 10.0, ask))
        await asyncio.wait_for(entered.wait(), 10)
        waiter.cancel()  # the caller leaves while its item is being handed out
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # The take must have taken its lease before another owner tries for it below: one that got
        # in first would make the take pass "first" over and hand out "second" instead.
        await asyncio.wait_for(taken.wait(), 10)
        poll._take = real_take  # type: ignore[method-assign]
        # Put back at the head (before "second"), and its lease freed: another owner takes both.
        for _ in range(100):
            if await cluster.acquire_lock("lease:first", "other", 1_000_000) is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the lease taken for the waiter that left was never freed")
        await cluster.release_lock("lease:first", "other")
        assert await cluster.dequeue_work(INDEX) == "first"
        assert await cluster.dequeue_work(INDEX) == "second"
    finally:
        await store.close()


async def test_a_waiter_not_served_keeps_its_place_and_its_release_is_done_once(store_url: str) -> None:
    store = await open_provider(store_url)
    try:
        cluster = store.cluster
        assert await cluster.acquire_lock("lease:a", "me", 30_000_000) is not None
        assert await cluster.queue_work(INDEX, "a")
        # Held by another owner: passed over; my release (of a lease I hold) is done right away.
        blocker = await cluster.acquire_lock("lease2:a", "other", 30_000_000)
        assert blocker is not None
        ask = LeaseAsk("me", 30_000_000, ("lease2:",), release=("lease:a",))
        waiter = asyncio.ensure_future(cluster.dequeue_leased(INDEX, 10.0, ask))
        for _ in range(100):
            if await cluster.acquire_lock("lease:a", "me", 30_000_000) is not None:
                break  # released by the waiting dequeue, although it got nothing yet; taken again
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the release carried by a waiting dequeue was not done")
        assert not waiter.done()
        # Released by its holder: the waiter gets the item; its release is not repeated (the lease
        # taken again since stays).
        await cluster.release_lock("lease2:a", "other")
        handout = await asyncio.wait_for(waiter, 10)
        assert handout is not None and handout.item_id == "a" and len(handout.leases) == 1
        assert await cluster.acquire_lock("lease:a", "fourth", 30_000_000) is None
    finally:
        await store.close()


async def test_many_waiters_on_held_items_cost_a_take_about_one_look_per_item(store_url: str) -> None:
    """A take for 100 leased waiters over 150 held items costs about what one waiter's does.

    Before, every waiter tried every item (SQLite: a lease query per waiter and item, PostgreSQL: a
    savepoint and an acquisition): 300 such waiters on 400 held items held every other write of a
    SQLite server up by about 0.2 s per take, 1000 on 1100 by up to 5 s, and each queue change
    starts a take.
    """
    store = await open_provider(store_url)
    try:
        cluster = store.cluster
        items = [f"held-{i:03}" for i in range(150)]
        for item in items:
            assert await cluster.queue_work(INDEX, item)
        for start in range(0, len(items), 16):
            assert await cluster.acquire_locks(items[start : start + 16], "holder", 600_000_000) is not None
        poll = _poll(cluster)

        async def take(waiters: int) -> float:
            asks = [LeaseAsk(f"waiter-{i}", 30_000_000, ("",)) for i in range(waiters)]
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                assert await poll._take(INDEX, asks) == [None] * waiters
                best = min(best, time.perf_counter() - started)
            return best

        one, many = await take(1), await take(100)
        assert many < 25 * one, f"one waiter {one * 1000:.1f} ms, 100 waiters {many * 1000:.1f} ms"
        assert await cluster.dequeue_work(INDEX) == "held-000"  # nothing was handed out or moved
    finally:
        await store.close()


async def test_waiters_needing_leases_of_their_own_are_looked_at_up_to_a_budget_per_take(store_url: str) -> None:
    """Waiters that each need leases of their own cannot share a take's looks: each looks at every
    item. A take looks up at most ``LOOK_BUDGET`` resources; the waiters after that get nothing in
    it (they stay in line), however their items stand.

    Before, such a take had no bound: 300 waiters whose 300 items were all held under their own
    prefixes held every other write of a SQLite server up for 0.95 s per take, and 50 on 100 items
    held a PostgreSQL transaction open for 1.4 s (a savepoint per waiter and item).
    """
    store = await open_provider(store_url)
    try:
        cluster = store.cluster
        items = [f"held-{i:03}" for i in range(100)]
        for item in items:
            assert await cluster.queue_work(INDEX, item)
        blocked = 60  # each looks up its prefix on a window of 60 + PASS_OVER items: past the budget
        assert blocked * (blocked + PASS_OVER) > LOOK_BUDGET > 4 * (blocked + PASS_OVER)
        for waiter in range(blocked):
            for start in range(0, len(items), 16):
                chunk = [f"w{waiter}:{item}" for item in items[start : start + 16]]
                assert await cluster.acquire_locks(chunk, "holder", 600_000_000) is not None
        poll = _poll(cluster)
        asks = [LeaseAsk(f"waiter-{i}", 30_000_000, (f"w{i}:",)) for i in range(blocked)]
        free = LeaseAsk("free", 30_000_000, ("free:",))  # nothing holds its leases
        assert await poll._take(INDEX, [*asks, free]) == [None] * (blocked + 1)
        # Nothing was handed out or moved; on its own (first in line) it gets the oldest item.
        handout = await poll._take(INDEX, [free])
        assert handout[0] is not None and handout[0].item_id == "held-000"
        assert handout[0].resources == ("free:held-000",)
    finally:
        await store.close()
