"""Several ``wfe-sqlite serve`` processes on one store (a SQLite file, a PostgreSQL database), one
client given all their addresses.

The client spreads its calls over the servers (gRPC round-robin; counted per server from each
server's own Prometheus endpoint), and when one server is SIGKILLed calls keep succeeding on the
others: reads in flight at the kill are tried again elsewhere, new calls go to the live servers.
The servers share the store as the cluster providers do: what one server wrote, another reads.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess, start_server_process
from test_security import Pki, pki  # noqa: F401  (the module's certificates fixture)
from wfe_client import (
    GrpcLifecyclePublisher,
    GrpcLockProvider,
    GrpcPersistenceProvider,
    GrpcQueueProvider,
    LifecycleEvent,
    LifecycleEventType,
    QueueType,
    StorageUnavailable,
    WfeError,
    WorkflowInstance,
)
from wfe_client._targets import resolve_target
from wfe_sqlite.server import RunningServer, ServerConfig

WORKFLOWS = "wfe.persistence.v1.WorkflowService"
LIFECYCLE = "wfe.persistence.v1.LifecycleService"


class Server:
    """A server process and the URL of its metrics endpoint."""

    def __init__(self, db_url: str, *args: str) -> None:
        self.process: ServerProcess = start_server_process(db_url, "--metrics-listen", "127.0.0.1:0", *args)
        assert self.process.process.stdout is not None
        line = self.process.process.stdout.readline().strip()
        assert line.startswith("metrics on http://"), line
        self.url = line.removeprefix("metrics on ")
        self.address = self.process.address

    def calls(self, method: str, service: str = WORKFLOWS) -> int:
        """How many calls of ``method`` this server has answered (any status)."""
        with urllib.request.urlopen(self.url, timeout=10) as response:
            text = response.read().decode()
        return int(
            sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "grpc_server_handled_total"
                and sample.labels.get("grpc_service") == service
                and sample.labels.get("grpc_method") == method
            )
        )


@pytest.fixture
def servers(store_url: str) -> Iterator[list[Server]]:
    """Three servers on one store: one SQLite file, or one PostgreSQL database."""
    started: list[Server] = []
    try:
        started.extend(Server(store_url) for _ in range(3))
        yield started
    finally:
        for server in started:
            server.process.kill()


async def _counts(servers: list[Server], method: str, service: str = WORKFLOWS) -> list[int]:
    return [await asyncio.to_thread(server.calls, method, service) for server in servers]


async def _grown(items: list[Any], beyond: int) -> None:
    """Wait until ``items`` (appended to by running tasks) holds more than ``beyond``, up to 10 s."""
    for _ in range(500):
        if len(items) > beyond:
            return
        await asyncio.sleep(0.02)


async def test_calls_are_spread_and_survive_a_killed_server(servers: list[Server]) -> None:
    addresses = [server.address for server in servers]
    async with GrpcPersistenceProvider.connect(addresses) as store:
        # Every server is connected before counting (connect returns once one answers).
        for _ in range(50):
            if all(await _counts(servers, "GetRunnableWorkflows")):
                break
            await store.get_runnable_instances(datetime.now(UTC))
        ids = [await store.create_new_workflow(WorkflowInstance.new("spread", 1, {"n": n})) for n in range(30)]
        created = await _counts(servers, "CreateWorkflow")
        assert sum(created) == 30, created
        assert all(count >= 5 for count in created), f"calls not spread over the three servers: {created}"
        # Each workflow is read through whichever server comes next: they share the file.
        for n, workflow_id in enumerate(ids):
            assert (await store.get_workflow_instance(workflow_id)).data == {"n": n}
        read = await _counts(servers, "GetWorkflow")
        assert sum(read) == 30 and all(count >= 5 for count in read), read

        # Reads running at the moment one server is SIGKILLed: none fails.
        stop = asyncio.Event()
        done: list[int] = []

        async def reader() -> None:
            while not stop.is_set():
                workflow_id = ids[len(done) % len(ids)]
                assert (await store.get_workflow_instance(workflow_id)).id == workflow_id
                done.append(1)

        readers = [asyncio.create_task(reader()) for _ in range(8)]
        await asyncio.sleep(0.5)
        before_kill = len(done)
        servers[0].process.kill()
        await asyncio.sleep(1.0)
        # The live servers go on answering: a few more reads (not counted in that fixed second
        # alone: on a loaded machine it may hold fewer).
        await _grown(done, before_kill + 20)
        stop.set()
        await asyncio.gather(*readers)  # raises if any read failed
        assert len(done) > before_kill + 20, (before_kill, len(done))

        # After the kill: writes and reads go to the two live servers, all succeed.
        live = servers[1:]
        before = await _counts(live, "CreateWorkflow")
        more = [await store.create_new_workflow(WorkflowInstance.new("after", 1, {"n": n})) for n in range(20)]
        after = await _counts(live, "CreateWorkflow")
        grown = [b - a for a, b in zip(before, after, strict=True)]
        assert sum(grown) == 20 and all(g >= 5 for g in grown), grown
        assert [w.id for w in await store.get_workflow_instances(more)] == more


async def test_a_server_stopping_gracefully_is_left_out_at_once(db_url: str) -> None:
    """A server told to stop (SIGTERM: a restart, a deploy) turns its health NOT_SERVING and refuses
    new calls while it drains (UNAVAILABLE, not run). The client watches each server's health
    (gRPC's client-side health checking) and stops sending it calls at once: only calls already on
    their way can meet the refusal. Before, round-robin kept sending it every other call until it
    closed its connections, up to a second later: about a hundred refused writes in this test."""
    started = [Server(db_url) for _ in range(2)]
    try:
        async with GrpcPersistenceProvider.connect([s.address for s in started]) as store:
            while not all(await _counts(started, "CreateWorkflow")):  # both connected and in use
                await store.create_new_workflow(WorkflowInstance.new("warm", 1, {}))
            stop = asyncio.Event()
            made: list[str] = []
            refused: list[str] = []

            async def creator() -> None:
                while not stop.is_set():
                    try:
                        made.append(await store.create_new_workflow(WorkflowInstance.new("drain", 1, {})))
                    except WfeError as error:
                        assert error.code == "UNAVAILABLE", error
                        refused.append(str(error))

            creators = [asyncio.create_task(creator()) for _ in range(4)]
            await asyncio.sleep(0.3)
            started[0].process.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(started[0].process.process.wait, 30)  # drained and stopped
            before = len(made)
            # The other server goes on creating: wait for a few more (not a fixed 0.3 s: on a
            # loaded machine the stopped server's last checkpoint can hold the shared file's writes
            # that long).
            await _grown(made, before + 10)
            stop.set()
            await asyncio.gather(*creators)
        assert len(made) > before + 10, (before, len(made))  # the other server took every call
        # A call already on its way when the stop began is refused unrun and made again on the
        # other server (ErrorInfo not_run): none reaches the caller.
        assert refused == [], f"{len(refused)} calls refused, {len(made)} made: {refused[:3]}"
    finally:
        for server in started:
            server.process.kill()


async def test_a_call_a_draining_server_refused_unrun_is_made_again_on_another(tmp_path: Path) -> None:
    """A refusal that says the call was not run (ErrorInfo ``not_run``: a stopping server's) is safe
    to send again, a write too: with several servers the client does, so the caller never sees it.
    One of two in-process servers drains without its health changing (the window between a stop
    beginning and the client hearing of it, held open), so about every other call meets it."""
    db = f"sqlite:///{tmp_path / 'drain.db'}"
    draining = await RunningServer.start(ServerConfig(db=db, listen="127.0.0.1:0", grace=1.0))
    serving = await RunningServer.start(ServerConfig(db=db, listen="127.0.0.1:0", grace=1.0))
    try:
        assert draining.drain is not None
        async with GrpcPersistenceProvider.connect([draining.address, serving.address]) as store:
            await store.ensure_store_exists()
            draining.drain.begin()
            ids = [await store.create_new_workflow(WorkflowInstance.new("again", 1, {"n": n})) for n in range(20)]
            assert len(set(ids)) == 20
            assert [w.data["n"] for w in await store.get_workflow_instances(ids)] == list(range(20))
            assert draining.drain.refused >= 5, draining.drain.refused  # the path did run, often
        # What the caller would have got from that server alone.
        async with GrpcPersistenceProvider.connect(draining.address) as direct:
            with pytest.raises(StorageUnavailable) as refused:
                await direct.ensure_store_exists()
        assert refused.value.metadata.get("not_run") == "true"
    finally:
        await draining.stop(quiet=0)
        await serving.stop(quiet=0)


async def test_a_comma_separated_string_and_the_cluster_providers(servers: list[Server]) -> None:
    addresses = ",".join(server.address for server in servers)
    async with (
        GrpcLockProvider.connect(addresses, owner="a", ttl=timedelta(seconds=30)) as first,
        GrpcLockProvider.connect(addresses, owner="b", ttl=timedelta(seconds=30)) as second,
        GrpcQueueProvider.connect(addresses) as queue,
    ):
        before = await _counts(servers, "AcquireLock", "wfe.persistence.v1.LockService")
        # Across servers, one lock has one holder.
        results = [await first.acquire_lock("r")] + [await second.acquire_lock("r") for _ in range(5)]
        assert results == [True] + [False] * 5
        after = await _counts(servers, "AcquireLock", "wfe.persistence.v1.LockService")
        assert sum(after) - sum(before) == 6
        assert sum(1 for a, b in zip(before, after, strict=True) if b > a) >= 2, (before, after)
        # Queued through one server, handed out once through the others.
        for n in range(6):
            assert await queue.queue_work(f"item-{n}", QueueType.INDEX)
        taken = [await queue.dequeue_work(QueueType.INDEX) for _ in range(7)]
        assert taken == [f"item-{n}" for n in range(6)] + [None]
        await first.release_lock("r")
        assert await second.acquire_lock("r")
        await second.release_lock("r")


async def test_tls_over_several_servers(pki: Pki, db_url: str) -> None:  # noqa: F811
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    started = [Server(db_url, *tls) for _ in range(2)]
    try:
        # The certificate names localhost: the name in the addresses is what TLS checks.
        addresses = [f"localhost:{server.address.rsplit(':', 1)[1]}" for server in started]
        async with GrpcPersistenceProvider.connect(addresses, tls_ca=str(pki.ca)) as store:
            made, counts = 0, [0, 0]
            while made < 200 and not all(counts):  # the second server is used once connected
                for _ in range(10):
                    await store.create_new_workflow(WorkflowInstance.new("tls", 1, {}))
                made += 10
                counts = await _counts(started, "CreateWorkflow")
            assert sum(counts) == made and all(counts), counts
        # A plaintext client still gets the handshake message, naming the addresses.
        with pytest.raises(ConnectionError) as refused:
            await GrpcPersistenceProvider.connect(addresses, connect_timeout=5)
        message = str(refused.value)
        assert message.startswith(f"handshake with the wfe-sqlite server at {','.join(addresses)} failed"), message
        assert "it expects TLS" in message, message
    finally:
        for server in started:
            server.process.kill()


async def test_one_server_down_at_connect_time(servers: list[Server]) -> None:
    servers[1].process.kill()
    async with GrpcPersistenceProvider.connect([s.address for s in servers], connect_timeout=5) as store:
        # connect returns once one server answers; the other live one is used once connected.
        made = 0
        counts = [0, 0]
        while made < 200 and not all(counts):
            for _ in range(10):
                await store.create_new_workflow(WorkflowInstance.new("two-of-three", 1, {}))
            made += 10
            counts = await _counts([servers[0], servers[2]], "CreateWorkflow")
        assert sum(counts) == made and all(counts), counts


async def test_nothing_answering_at_several_addresses() -> None:
    with pytest.raises(ConnectionError, match=r"no wfe-sqlite server answered at 127\.0\.0\.1:1,127\.0\.0\.1:2 "):
        await GrpcPersistenceProvider.connect("127.0.0.1:1,127.0.0.1:2", connect_timeout=1)


@pytest.mark.parametrize(
    ("address", "target", "balanced"),
    [
        ("localhost:50051", "localhost:50051", False),
        ("dns:///wfe.internal:50051", "dns:///wfe.internal:50051", True),
        (["10.0.0.1:1", " 10.0.0.2:2"], "ipv4:10.0.0.1:1,10.0.0.2:2", True),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2", True),
        ("127.0.0.1:1,localhost:2", "ipv4:127.0.0.1:1,127.0.0.1:2", True),
    ],
)
async def test_targets(address: Any, target: str, balanced: bool) -> None:
    resolved = await resolve_target(address)
    assert (resolved.target, resolved.balanced) == (target, balanced)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "a:1,",
        [],
        ["a:1", 2],
        "127.0.0.1:1,[::1]:2",
        "a:1,dns:///b:2",
        "a:1,b:port",
        "127.0.0.1:1,127.0.0.1:65536",  # out of range: gRPC refused the whole target, the client hung
        "127.0.0.1:0,127.0.0.1:1",
    ],
)
async def test_bad_targets(address: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        await resolve_target(address)


async def test_a_dns_name(servers: list[Server]) -> None:
    port = servers[0].address.rsplit(":", 1)[1]
    async with GrpcPersistenceProvider.connect(f"dns:///localhost:{port}") as store:
        for _ in range(3):
            await store.create_new_workflow(WorkflowInstance.new("by-name", 1, {}))
    assert await _counts(servers, "CreateWorkflow") == [3, 0, 0]


async def test_a_publish_its_server_could_not_take_goes_to_the_next(servers: list[Server]) -> None:
    """Just after a server died, its channel may still read as connected: a publish sent there
    fails to connect (never sent) and goes to the next server that answers. The moment is forced:
    the first channel reads READY once after its server was killed (seen once in a CI run)."""
    addresses = [server.address for server in servers]
    async with GrpcLifecyclePublisher.connect(addresses) as publisher:
        await publisher.publish(LifecycleEvent(LifecycleEventType.STARTED, "before"))
        servers[0].process.kill()
        first = publisher._servers._channels[0]
        for _ in range(100):  # until the client has seen the connection go
            if first.get_state() is not grpc.ChannelConnectivity.READY:
                break
            await asyncio.sleep(0.05)
        states = publisher._servers._states
        replaced: list[grpc.ChannelConnectivity] = []  # the first channel's real state, when replaced

        def stale_first(**kwargs: Any) -> list[grpc.ChannelConnectivity]:
            found = states(**kwargs)
            if not replaced:  # once
                replaced.append(found[0])
                found[0] = grpc.ChannelConnectivity.READY
            return found

        publisher._servers._states = stale_first  # type: ignore[method-assign]
        assert await publisher.publish(LifecycleEvent(LifecycleEventType.STARTED, "after")) == 0
        assert replaced and replaced[0] is not grpc.ChannelConnectivity.READY
    assert await _counts(servers[1:], "PublishLifecycleEvent", LIFECYCLE) == [1, 0]


async def test_lifecycle_events_meet_on_one_server(servers: list[Server]) -> None:
    """A server relays events to its own watchers: publishers and watchers given the same list use
    the first server that answers, also after it died."""
    addresses = [server.address for server in servers]
    async with (
        GrpcLifecyclePublisher.connect(addresses) as publisher,
        GrpcLifecyclePublisher.connect(addresses) as watcher,
    ):
        # Just after the first server died, its channel may still read as connected: a watch or a
        # publish that then fails to connect goes on to the next server by itself (for a publish,
        # the test above forces that moment).

        async def round_of(tag: str) -> None:
            async with watcher.watch() as events:
                for n in range(6):
                    await publisher.publish(LifecycleEvent(LifecycleEventType.STARTED, f"{tag}-{n}"))
                seen: list[str] = []
                while len(seen) < 6:
                    event = await asyncio.wait_for(anext(events), 5)
                    # On PostgreSQL every server relays every server's events (pg_notify), and a
                    # relay can be late on a loaded machine: an earlier round's event may reach
                    # this watch after it opened. This round's must all come, in order.
                    if event.workflow_instance_id.startswith(f"{tag}-"):
                        seen.append(event.workflow_instance_id)
            assert seen == [f"{tag}-{n}" for n in range(6)]

        await round_of("first")
        assert await _counts(servers, "PublishLifecycleEvent", LIFECYCLE) == [6, 0, 0]
        servers[0].process.kill()
        await round_of("second")
        assert await _counts(servers[1:], "PublishLifecycleEvent", LIFECYCLE) == [6, 0]
