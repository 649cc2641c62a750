"""A Python lifecycle publisher given several servers goes back to the first one when it answers again.

Two ``wfe-sqlite serve`` processes on one SQLite file; the first is SIGKILLed and started again on
the same port. A server relays lifecycle events only to its own watchers, so publishers and
watchers given the same list must meet on the first server of the list that is up: the Rust and
TypeScript publishers and the Rust watch go back to it as soon as it answers again (Rust:
``lifecycle::RETURN_PROBE``, 1 s). Here the stand-ins for them are Python clients given the first
server alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from conftest import ServerProcess, again_while_unavailable, start_server_process
from wfe_client import GrpcLifecyclePublisher, LifecycleEvent, LifecycleEventType, WfeError
from wfe_client._grpc_cluster import LifecycleWatch

BACK_WITHIN = 10.0
"""Seconds after the first server answers again by which the publisher is back on it: it probes
about once a second, and its connection may take longer on a loaded machine (polled, not waited
for in full)."""


@pytest.fixture
def two_servers(db_url: str) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        started.extend(start_server_process(db_url) for _ in range(2))
        yield started
    finally:
        for server in started:
            server.kill()


def _event(tag: str) -> LifecycleEvent:
    return LifecycleEvent(LifecycleEventType.STARTED, tag)


async def _publish(publisher: GrpcLifecyclePublisher, tag: str) -> int:
    """Publish, trying again while the server that was used has just died (UNAVAILABLE)."""
    return await again_while_unavailable(lambda: publisher.publish(_event(tag)))


async def _next(events: LifecycleWatch, seconds: float = 5) -> str:
    return (await asyncio.wait_for(anext(events), seconds)).workflow_instance_id


def _restart_first(servers: list[ServerProcess], db_url: str) -> None:
    """Start the first server again (killed before) on its port."""
    port = servers[0].address.rsplit(":", 1)[1]
    servers[0] = start_server_process(db_url, "--listen", f"127.0.0.1:{port}")


async def _started_somewhere(watcher: GrpcLifecyclePublisher) -> None:
    """Open a watch (trying again while the server that was used has just died) and close it."""

    async def open_and_close() -> None:
        async with watcher.watch():
            return

    await again_while_unavailable(open_and_close)


async def _opened(watcher: GrpcLifecyclePublisher) -> LifecycleWatch:
    """An open watch (trying again while the server that was used has just died)."""

    async def started() -> LifecycleWatch:
        watch = watcher.watch()
        try:
            await watch.started()
        except WfeError:
            watch.close()
            raise
        return watch

    return await again_while_unavailable(started)


@pytest.fixture
async def on_first() -> AsyncIterator[list[GrpcLifecyclePublisher]]:
    """Clients given the first server alone (closed at the end)."""
    opened: list[GrpcLifecyclePublisher] = []
    yield opened
    for client in opened:
        await client.close()


async def test_publisher_goes_back_to_the_first_server(
    two_servers: list[ServerProcess], db_url: str, on_first: list[GrpcLifecyclePublisher]
) -> None:
    """Killed and restarted on the same port: the publisher's events reach a watcher on the first
    server again (before, gRPC's pick_first stayed on the second until that one failed)."""
    addresses = [server.address for server in two_servers]
    async with GrpcLifecyclePublisher.connect(addresses) as publisher:
        on_first.append(await GrpcLifecyclePublisher.connect(addresses[0]))
        async with on_first[0].watch() as events:
            assert await _publish(publisher, "before") == 1
            assert await _next(events) == "before"

        two_servers[0].kill()
        assert await _publish(publisher, "while-away") == 0  # on the second server: nobody watches
        _restart_first(two_servers, db_url)
        on_first.append(await GrpcLifecyclePublisher.connect(addresses[0]))
        async with on_first[1].watch() as events:
            # Probes until one reaches the watcher on the first server: the publisher is back.
            deadline = time.monotonic() + BACK_WITHIN
            while await publisher.publish(_event("probe")) == 0:
                assert time.monotonic() < deadline, "the publisher did not go back to the first server"
                await asyncio.sleep(0.1)
            assert await _next(events) == "probe"
            for n in range(5):
                assert await publisher.publish(_event(f"back-{n}")) == 1, f"event {n} not on the first server"
            assert [await _next(events) for _ in range(5)] == [f"back-{n}" for n in range(5)]


async def test_a_watch_opened_later_is_on_the_first_server(
    two_servers: list[ServerProcess], db_url: str, on_first: list[GrpcLifecyclePublisher]
) -> None:
    """A watch opened after the first server came back sees what publishers on the first server
    publish (before, it opened on the second: the one pick_first had moved to)."""
    addresses = [server.address for server in two_servers]
    async with GrpcLifecyclePublisher.connect(addresses) as watcher:
        async with watcher.watch():
            pass  # a watch on the first server
        two_servers[0].kill()
        await _started_somewhere(watcher)  # on the second server
        _restart_first(two_servers, db_url)
        on_first.append(await GrpcLifecyclePublisher.connect(addresses[0]))
        # A new watch opens on the first server once the watcher is connected to it again.
        deadline = time.monotonic() + BACK_WITHIN
        while True:
            async with watcher.watch() as events:
                if await on_first[0].publish(_event("from-first")) == 1:
                    assert await _next(events) == "from-first"
                    break
            assert time.monotonic() < deadline, "a new watch did not open on the first server"
            await asyncio.sleep(0.2)


async def test_an_open_watch_moves_back_to_the_first_server(
    two_servers: list[ServerProcess], db_url: str, on_first: list[GrpcLifecyclePublisher]
) -> None:
    """A watch opened while the first server was down (so on the second) moves back to the first
    when it answers again, as the Rust watch does, and sees what is published there (before, it
    stayed on the second: events on the first never reached it)."""
    addresses = [server.address for server in two_servers]
    async with GrpcLifecyclePublisher.connect(addresses) as watcher:
        two_servers[0].kill()
        on_first.append(await GrpcLifecyclePublisher.connect(addresses[1]))  # the second alone
        watch = await _opened(watcher)
        try:
            assert await on_first[0].publish(_event("on-second")) == 1
            assert await _next(watch) == "on-second"
            _restart_first(two_servers, db_url)
            on_first.append(await GrpcLifecyclePublisher.connect(addresses[0]))
            # The watch moves while it is read (it looks for an earlier server every second).
            reading = asyncio.ensure_future(anext(watch))
            deadline = time.monotonic() + BACK_WITHIN
            published = 0
            while not published and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                assert not reading.done(), reading
                published = await on_first[1].publish(_event("on-first"))
            assert published == 1, "the watch did not move back to the first server"
            assert (await asyncio.wait_for(reading, 5)).workflow_instance_id == "on-first"
            # The stream left on the second server is still read for a moment (MOVE_LINGER):
            # publishers there that have not moved back yet are not missed.
            assert await on_first[0].publish(_event("late-on-second")) == 1
            assert await _next(watch) == "late-on-second"
        finally:
            watch.close()
