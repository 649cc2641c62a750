"""HTTP/2 keepalive through a real ``wfe-sqlite serve`` process: the Python adapter pings, so a call
with no deadline (an open lifecycle watch) or a long one (a waiting dequeue) on a frozen server
(SIGSTOP: its TCP connection stays up, so nothing else notices) ends with UNAVAILABLE; and the
server accepts pings at the adapters' rate instead of closing the connection (GOAWAY
``too_many_pings``, gRPC core's answer to pings more often than every 5 minutes).

The tests ping every second (the server accepting every half second): the same ratio as the
defaults, 20 s pings to a server that accepts them down to 10 s.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest

from conftest import WFE_SQLITE, ServerProcess, start_server_process
from wfe_client import (
    GrpcLifecyclePublisher,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    InvalidArgument,
    LifecycleEvent,
    LifecycleEventType,
    QueueType,
    WfeError,
)
from wfe_client._grpc_provider import KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT
from wfe_sqlite._config import ServerConfig

PING = {"keepalive_interval": 1.0, "keepalive_timeout": 1.0}
"""The adapters' keepalive, 20 times faster."""

ACCEPTING = ("--keepalive-min-interval", "0.5")
"""The server's default, 20 times faster."""

EVENT = LifecycleEvent(LifecycleEventType.STARTED, "wf-1", "def-a", 1)


@pytest.fixture
def server(db_url: str) -> Iterator[ServerProcess]:
    started = start_server_process(db_url, *ACCEPTING)
    try:
        yield started
    finally:
        started.process.send_signal(signal.SIGCONT)  # a test that froze it and failed
        started.kill()


def test_the_server_accepts_pings_at_the_adapters_default_rate() -> None:
    # The ratio the tests below use: the adapters' pings are accepted with room for timer jitter.
    assert ServerConfig().keepalive_min_interval * 2 <= KEEPALIVE_INTERVAL
    assert KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT <= 60  # a frozen server found within a minute


async def test_a_frozen_server_ends_an_open_watch_and_a_waiting_dequeue_with_unavailable(
    server: ServerProcess,
) -> None:
    # Before: no pings; the watch (no deadline) waited for ever and the dequeue for its whole
    # wait plus the call deadline (90 s here), as the frozen server's connection looked fine.
    async with (
        GrpcLifecyclePublisher.connect(server.address, **PING) as publisher,
        GrpcQueueProvider.connect(server.address, **PING) as queue,
    ):
        watch = publisher.watch()
        await watch.started()
        dequeue = asyncio.ensure_future(queue.dequeue_work(QueueType.WORKFLOW, wait=timedelta(seconds=60)))
        await asyncio.sleep(0.5)  # the dequeue waits on the server
        assert not dequeue.done()
        server.process.send_signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(WfeError) as ended:
                await asyncio.wait_for(anext(watch), 15)
            watch_after = time.monotonic() - began
            with pytest.raises(WfeError) as dequeue_ended:
                await asyncio.wait_for(dequeue, 15)
            dequeue_after = time.monotonic() - began
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert ended.value.code == "UNAVAILABLE", ended.value
        assert dequeue_ended.value.code == "UNAVAILABLE", dequeue_ended.value
        # At most one interval until the ping and one timeout for its answer, plus a margin.
        assert watch_after < 5, watch_after
        assert dequeue_after < 5, dequeue_after
        watch.close()
        # The server answers again: the adapter connects again, a new watch and calls work. The
        # first call may still meet the connection being closed (UNAVAILABLE, "Delayed close due to
        # in-progress write (ping timeout)", 2 runs in 5): as after any lost connection, the caller
        # tries again (one server: the Python adapter leaves that to it).
        again = publisher.watch()
        for _ in range(20):
            try:
                await again.started()
                break
            except WfeError as error:
                assert error.code == "UNAVAILABLE", error
                again.close()
                await asyncio.sleep(0.2)
                again = publisher.watch()
        async with again as events:
            assert await publisher.publish(EVENT) == 1
            assert (await asyncio.wait_for(anext(events), 10)).workflow_instance_id == "wf-1"
        assert await queue.dequeue_work(QueueType.WORKFLOW) is None


async def _closed_while_pinging(seconds: float, address: str) -> set[str]:
    """Ping ``address`` for ``seconds`` on a connection with no call, then for as long with a watch
    open (its stream sends no data); which of the two the server closed ("idle", "watch"). One
    after the other: channels with the same options to one address share their connection."""
    closed: set[str] = set()
    async with GrpcPersistenceProvider.connect(address, **PING) as idle:
        assert await idle.get_workflow_instances([]) == []
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            # A GOAWAY leaves the channel IDLE (it connects again only for a call).
            if idle._channel.get_state() != grpc.ChannelConnectivity.READY:
                closed.add("idle")
            await asyncio.sleep(0.1)
    async with GrpcLifecyclePublisher.connect(address, **PING) as publisher, publisher.watch() as events:
        reading = asyncio.ensure_future(anext(events))
        await asyncio.wait([reading], timeout=seconds)
        if reading.done():
            error = reading.exception()
            assert isinstance(error, WfeError) and error.code == "UNAVAILABLE", error
            closed.add("watch")
        else:
            assert await publisher.publish(EVENT) == 1  # the watch's stream is still open
            assert (await asyncio.wait_for(reading, 10)).workflow_instance_id == "wf-1"
    return closed


async def test_pings_at_the_accepted_rate_do_not_close_connections(server: ServerProcess) -> None:
    # Before: gRPC core's defaults (a ping per 5 minutes with calls in flight, per 2 hours without,
    # 2 strikes) closed both connections with GOAWAY too_many_pings after the fourth ping.
    assert await _closed_while_pinging(5, server.address) == set()


async def test_pings_more_often_than_the_server_accepts_close_the_connection(db_url: str) -> None:
    # The server still protects itself from a client that pings too often (here: its default, 10 s).
    server = start_server_process(db_url)
    try:
        assert await _closed_while_pinging(5, server.address) == {"watch", "idle"}
    finally:
        server.kill()


@pytest.mark.parametrize("value", [0, -1, 86_400.5, float("inf"), "1", True])
async def test_a_bad_keepalive_setting_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await GrpcPersistenceProvider.connect("127.0.0.1:1", keepalive_interval=value)  # type: ignore[arg-type]
    assert refused.value.metadata.get("field") == "keepalive_interval"


async def test_a_keepalive_of_a_day_is_accepted(server: ServerProcess) -> None:
    # At most a day, as in the TypeScript and Rust adapters (before: a day itself was refused here).
    async with GrpcPersistenceProvider.connect(
        server.address, keepalive_interval=86_400, keepalive_timeout=86_400
    ) as store:
        assert await store.get_workflow_instances([]) == []


async def test_keepalive_off_is_none(server: ServerProcess) -> None:
    async with GrpcPersistenceProvider.connect(server.address, keepalive_interval=None) as store:
        assert await store.get_workflow_instances([]) == []


@pytest.mark.parametrize("value", ["-1", "86401", "1e12", "soon"])
def test_a_bad_keepalive_min_interval_stops_start_up(value: str) -> None:
    # Before, 1e12 got past the setting's check and failed in gRPC with an OverflowError traceback.
    ended = subprocess.run(
        [str(WFE_SQLITE), "serve", "--db", ":memory:", "--listen", "127.0.0.1:0", "--keepalive-min-interval", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ended.returncode == 2, ended.stderr
    assert "invalid setting keepalive_min_interval:" in ended.stderr, ended.stderr
