"""A held lease whose renewals fail for longer than its TTL is reported lost by the lock provider,
through a real ``wfe-sqlite serve`` process frozen with SIGSTOP: the server lets such a lease run
out and hands it to another owner, so the holder must stop believing it holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import ServerProcess
from wfe_client import GrpcLockProvider
from wfe_sqlite import SqliteLockProvider, open_provider

TTL = timedelta(milliseconds=1500)
MARGIN = 1.0
"""Seconds the lost report may come after the TTL has passed (a loaded 2-core machine)."""


@pytest.fixture
def server(server_process: ServerProcess) -> ServerProcess:
    """conftest's server process (SIGKILLed at the end: frozen or not)."""
    return server_process


async def test_lease_not_renewed_within_its_ttl_is_reported_lost_once(server: ServerProcess) -> None:
    # Before: on_lost was called only when a renewal was answered "not held". With the server
    # frozen every renewal failed, nothing was reported and `held` listed the lease for ever,
    # while the server let it run out and another owner could take it.
    lost: list[tuple[str, float]] = []
    reported = asyncio.Event()

    def on_lost(resource: str) -> None:
        lost.append((resource, time.monotonic()))
        reported.set()

    async with GrpcLockProvider.connect(server.address, ttl=TTL, timeout=5) as locks:
        locks.on_lost = on_lost
        assert await locks.acquire_lock("frozen")
        lease = locks.lease("frozen")
        assert lease is not None
        await asyncio.sleep(0.7)  # a renewal or two went through
        server.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reported.wait(), TTL.total_seconds() + MARGIN)
            assert [resource for resource, _ in lost] == ["frozen"]
            assert lost[0][1] - stopped <= TTL.total_seconds() + MARGIN
            assert locks.held == []
            assert locks.lease("frozen") is None
        finally:
            server.process.send_signal(signal.SIGCONT)

        # Another owner takes it once the server answers again (its lease has run out, and the
        # lost lease was released, best effort): polled, the server may still be catching up.
        async with GrpcLockProvider.connect(server.address, owner="other", ttl=TTL) as other:
            until = time.monotonic() + TTL.total_seconds() + 3
            while not await other.acquire_lock("frozen"):
                assert time.monotonic() < until, "the lost lease was still held on the server"
                await asyncio.sleep(0.05)
            taken = other.lease("frozen")
            assert taken is not None and taken.fencing_token > lease.fencing_token

            # Renewals queued on the frozen server (answered now) do not make it held again: it
            # stays lost, reported once, and releasing it is not an error.
            await asyncio.sleep(TTL.total_seconds())
            assert locks.held == []
            assert [resource for resource, _ in lost] == ["frozen"]
            await locks.release_lock("frozen")
            assert other.held == ["frozen"]  # the release freed only the lost owner's lease


async def test_lease_lost_while_frozen_stays_lost_when_nobody_took_it(server: ServerProcess) -> None:
    # The server keeps a lapsed lease for its owner while nobody takes it (RenewLocks extends it).
    # Once reported lost it stays lost: it is released, so it is free at once, not held on the
    # server by an owner that no longer renews it.
    lost: list[str] = []
    reported = asyncio.Event()

    def on_lost(resource: str) -> None:
        lost.append(resource)
        reported.set()

    async with GrpcLockProvider.connect(server.address, ttl=TTL, timeout=5) as locks:
        locks.on_lost = on_lost
        assert await locks.acquire_lock("alone")
        server.process.send_signal(signal.SIGSTOP)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reported.wait(), TTL.total_seconds() + MARGIN)
            assert lost == ["alone"]
        finally:
            server.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(TTL.total_seconds())  # renewals and the release reach the server
        assert locks.held == []
        assert lost == ["alone"]
        async with GrpcLockProvider.connect(server.address, owner="other", ttl=TTL) as other:
            assert await other.acquire_lock("alone")
        # "other" released it at close: the provider takes it again, a new lease renewed as usual.
        assert await locks.acquire_lock("alone")
        await asyncio.sleep(TTL.total_seconds() * 2)
        assert locks.held == ["alone"]
        assert lost == ["alone"]


async def test_in_process_lease_not_renewed_within_its_ttl_is_reported_lost(db_url: str, db_path: Path) -> None:
    # The in-process SqliteLockProvider shares the bookkeeping: with the database locked by
    # another process (an exclusive transaction held longer than the TTL) its renewals cannot
    # write; before, nothing was reported and `held` kept the lease.
    store = await open_provider(db_url)
    lost: list[str] = []
    reported = asyncio.Event()

    def on_lost(resource: str) -> None:
        lost.append(resource)
        reported.set()

    try:
        locks = SqliteLockProvider(store, ttl=TTL)
        locks.on_lost = on_lost
        assert await locks.acquire_lock("blocked")
        locked = threading.Event()
        unlock = threading.Event()

        def hold_the_database() -> None:
            with sqlite3.connect(db_path, timeout=10) as conn:
                conn.execute("BEGIN EXCLUSIVE")
                locked.set()
                unlock.wait(30)
                conn.rollback()

        holder = threading.Thread(target=hold_the_database)
        holder.start()
        try:
            assert await asyncio.to_thread(locked.wait, 10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reported.wait(), TTL.total_seconds() + MARGIN)
            assert lost == ["blocked"]
            assert locks.held == []
        finally:
            unlock.set()
            await asyncio.to_thread(holder.join)
        other = SqliteLockProvider(store, owner="other", ttl=TTL)
        until = time.monotonic() + TTL.total_seconds() + 3
        while not await other.acquire_lock("blocked"):
            assert time.monotonic() < until, "the lost lease was still held in the database"
            await asyncio.sleep(0.05)
        await asyncio.sleep(TTL.total_seconds())
        assert locks.held == [] and lost == ["blocked"]
        await other.close()
        await locks.close()
    finally:
        await store.close()


async def test_lease_past_its_ttl_is_not_looked_up_before_the_timer_runs(server: ServerProcess) -> None:
    # The loop blocked for longer than the TTL (a long synchronous step, a GC pause): no renewal
    # went out, the server let the lease run out and handed it to another owner. Before: lease()
    # and held still gave the old lease (its fencing token) until the expiry timer got to run.
    lost: list[str] = []
    async with GrpcLockProvider.connect(server.address, ttl=TTL, timeout=5) as locks:
        locks.on_lost = lost.append
        assert await locks.acquire_lock("paused")
        mine = locks.lease("paused")
        assert mine is not None
        time.sleep(TTL.total_seconds() + 0.3)  # blocks the loop: neither renewal nor timer runs

        taken: list[int] = []

        def other_owner_takes_it() -> None:
            async def take() -> None:
                async with GrpcLockProvider.connect(server.address, owner="other", ttl=TTL) as other:
                    assert await other.acquire_lock("paused")
                    lease = other.lease("paused")
                    assert lease is not None
                    taken.append(lease.fencing_token)

            asyncio.run(take())

        thread = threading.Thread(target=other_owner_takes_it)
        thread.start()
        thread.join(30)  # still blocking this loop
        assert taken and taken[0] > mine.fencing_token, "the server did not hand the lease over"
        assert locks.lease("paused") is None
        assert locks.held == []
        await asyncio.sleep(0.1)  # the expiry timer runs: reported lost once
        assert lost == ["paused"]
        assert locks.lease("paused") is None
