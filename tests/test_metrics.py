"""Prometheus metrics and access logs of a real ``wfe-sqlite serve`` process."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import start_server_process
from wfe_client import Event, GrpcPersistenceProvider, ScheduledCommand, WfeError, WorkflowInstance, WorkflowNotFound
from wfe_client.timeutil import utc_now

TOKEN = "metrics-test-token"
WORKFLOWS = "wfe.persistence.v1.WorkflowService"
EVENTS = "wfe.persistence.v1.EventService"
COMMANDS = "wfe.persistence.v1.ScheduledCommandService"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _scrape_settled(url: str) -> Samples:
    """A scrape once every started call is counted as handled too (waiting up to 5 s).

    A call is counted as handled when its handler has returned; a call that fails (an abort) sends
    its status first, so its client may scrape just before the count goes up.
    """
    for _ in range(100):
        samples = await asyncio.to_thread(_scrape, url)
        if _total(samples, "grpc_server_handled_total") == _total(samples, "grpc_server_started_total"):
            break
        await asyncio.sleep(0.05)
    return samples


def _total(samples: Samples, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _calls(samples: Samples, service: str, method: str, code: str) -> float:
    return _value(
        samples,
        "grpc_server_handled_total",
        grpc_type="unary",
        grpc_service=service,
        grpc_method=method,
        grpc_code=code,
    )


async def test_metrics_count_exactly_the_calls_made(db_url: str) -> None:
    server = start_server_process(
        db_url,
        "--metrics-listen",
        "127.0.0.1:0",
        "--access-log",
        "--log-format",
        "json",
        env={"WFE_SQLITE_TOKENS": TOKEN},
    )
    try:
        assert server.process.stdout is not None
        line = json.loads(server.process.stdout.readline())  # --log-format json: a JSON object
        url = line["url"]
        assert line["message"] == f"metrics on {url}", line
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), line
        assert (line["level"], line["logger"]) == ("INFO", "wfe_sqlite.server"), line

        async with GrpcPersistenceProvider.connect(server.address, token=TOKEN) as store:
            for _ in range(3):
                await store.create_new_workflow(WorkflowInstance.new("flow", 1, {}))
            with pytest.raises(WorkflowNotFound):
                await store.get_workflow_instance("missing")
            first = await store.create_event(Event.new("paid", "1", {}))
            await store.create_event(Event.new("paid", "2", {}))
            assert len(await store.get_runnable_instances(utc_now())) == 3
            await store.schedule_command(ScheduledCommand.process_workflow("w", 0))
        async with GrpcPersistenceProvider.connect(server.address, token="wrong") as intruder:
            with pytest.raises(WfeError):
                await intruder.get_runnable_instances(utc_now())

        samples = await _scrape_settled(url)
        assert _calls(samples, WORKFLOWS, "CreateWorkflow", "OK") == 3
        assert _calls(samples, WORKFLOWS, "GetWorkflow", "NOT_FOUND") == 1
        assert _calls(samples, EVENTS, "CreateEvent", "OK") == 2
        assert _calls(samples, COMMANDS, "ScheduleCommand", "OK") == 1
        assert _calls(samples, WORKFLOWS, "GetRunnableWorkflows", "OK") == 1
        assert _calls(samples, WORKFLOWS, "GetRunnableWorkflows", "UNAUTHENTICATED") == 1
        handled, started = _total(samples, "grpc_server_handled_total"), _total(samples, "grpc_server_started_total")
        assert handled == started == 9, "nothing but those nine calls"
        labels = {"grpc_type": "unary", "grpc_service": WORKFLOWS, "grpc_method": "CreateWorkflow"}
        assert _value(samples, "grpc_server_handling_seconds_count", **labels) == 3
        assert _value(samples, "grpc_server_handling_seconds_bucket", le="+Inf", **labels) == 3
        assert 0 < _value(samples, "grpc_server_handling_seconds_sum", **labels) < 30

        # Six writes, one after the other: six group commits of one job each.
        assert _value(samples, "wfe_sqlite_write_batch_size_count") == 6
        assert _value(samples, "wfe_sqlite_write_batch_size_sum") == 6
        assert _value(samples, "wfe_sqlite_write_batch_size_bucket", le="1.0") == 6

        assert _value(samples, "wfe_sqlite_runnable_workflows") == 3
        assert _value(samples, "wfe_sqlite_unprocessed_events") == 2
        assert _value(samples, "wfe_sqlite_due_commands") == 1
        assert _value(samples, "wfe_sqlite_claimed_commands") == 0
        assert _value(samples, "wfe_sqlite_held_tokens") == 0
        # The three due workflows and two events were queued when stored; no lock is held.
        assert _value(samples, "wfe_sqlite_queued_items") == 5
        assert _value(samples, "wfe_sqlite_held_leases") == 0
        assert _value(samples, "wfe_sqlite_database_bytes") > 0
        assert _value(samples, "wfe_sqlite_wal_bytes") > 0

        # The gauges are read at scrape time.
        async with GrpcPersistenceProvider.connect(server.address, token=TOKEN) as store:
            await store.mark_event_processed(first)
            claim = await store.claim_commands(utc_now())
            assert len(claim.commands) == 1
        samples = await _scrape_settled(url)
        assert _value(samples, "wfe_sqlite_unprocessed_events") == 1
        assert (_value(samples, "wfe_sqlite_due_commands"), _value(samples, "wfe_sqlite_claimed_commands")) == (0, 1)
        assert _calls(samples, EVENTS, "MarkEventProcessed", "OK") == 1
    finally:
        assert server.terminate() == 0
        _, stderr = server.process.communicate(timeout=30)

    # One JSON access-log line per call: RPC, status, duration, peer.
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert len(records) == len(stderr.splitlines()), "every log line is JSON"
    access = [record for record in records if "rpc" in record]
    assert len(access) == 11
    assert all(
        record["logger"] == "wfe_sqlite.access" and record["peer"].startswith("ipv4:127.0.0.1:") for record in access
    )
    assert all(isinstance(record["duration_ms"], float) and record["duration_ms"] >= 0 for record in access)
    assert [r["code"] for r in access if r["rpc"] == f"/{WORKFLOWS}/GetWorkflow"] == ["NOT_FOUND"]
    assert [r["code"] for r in access if r["rpc"] == f"/{WORKFLOWS}/GetRunnableWorkflows"] == ["OK", "UNAUTHENTICATED"]


def _get(url: str, method: str = "GET") -> tuple[int, str, str]:
    """Status, Content-Type and body of one request (an HTTP error status too)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:0"])
def test_the_metrics_are_at_slash_metrics_and_nowhere_else(db_url: str, listen: str) -> None:
    """prometheus-client's own endpoint answers every path with the metrics; the server's answers
    ``/metrics`` (the URL it prints, the README's) and 404 elsewhere."""
    server = start_server_process(db_url, "--metrics-listen", listen)
    try:
        assert server.process.stdout is not None
        url = server.process.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.endswith("/metrics"), url
        base = url.removesuffix("/metrics")
        status, kind, body = _get(url)
        assert (status, kind.split(";")[0]) == (200, "text/plain"), (status, kind)
        assert "\nwfe_sqlite_runnable_workflows 0.0\n" in body, body
        status, _, body = _get(url + "?name[]=wfe_sqlite_queued_items")  # the query goes on to prometheus-client
        assert status == 200 and "wfe_sqlite_queued_items 0.0" in body and "runnable" not in body, body
        for path in ("/", "/anything", "/metrics/", "/metrics/x", "/favicon.ico", "/METRICS", "/metric"):
            status, kind, body = _get(base + path)
            assert (status, body) == (404, "not found: the metrics are at /metrics\n"), (path, status, body)
            assert kind == "text/plain; charset=utf-8", (path, kind)
        status, _, _ = _get(url, method="POST")
        assert status == 405  # prometheus-client's answer to anything but GET and OPTIONS
    finally:
        assert server.terminate() == 0


def test_no_metrics_endpoint_unless_asked(db_url: str) -> None:
    server = start_server_process(db_url)
    assert server.terminate() == 0
    stdout, _ = server.process.communicate(timeout=30)
    assert stdout == "", "only 'listening on', no metrics endpoint"


async def test_calls_to_methods_nobody_serves_are_counted_without_tokens(db_url: str) -> None:
    """Without tokens nothing refuses a made-up method before it reaches the observer: it is
    answered UNIMPLEMENTED there, counted under ``unknown`` and logged, like every other call."""
    server = start_server_process(db_url, "--metrics-listen", "127.0.0.1:0", "--access-log")
    try:
        assert server.process.stdout is not None
        url = server.process.stdout.readline().strip().rsplit(" ", 1)[-1]
        async with grpc.aio.insecure_channel(server.address) as channel:
            for method in ("/made.up.Service/Method", "/wfe.persistence.v1.WorkflowService/NoSuchMethod"):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await channel.unary_unary(method)(b"\x0a\x01x", timeout=10)
                assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert failed.value.details() == "Method not found!"
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                async for _ in channel.unary_stream("/made.up.Service/Stream")(b"", timeout=10):
                    pass
            assert streamed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        unknown = {"grpc_service": "unknown", "grpc_method": "unknown", "grpc_type": "unknown"}
        samples = await _scrape_settled(url)
        assert _value(samples, "grpc_server_started_total", **unknown) == 3
        assert _value(samples, "grpc_server_handled_total", grpc_code="UNIMPLEMENTED", **unknown) == 3
    finally:
        assert server.terminate() == 0
    _, stderr = server.process.communicate(timeout=30)
    assert stderr.count("UNIMPLEMENTED") == 3, stderr
