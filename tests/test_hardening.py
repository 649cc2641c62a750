"""Issue 9 ("Hardening"): settings that could switch authentication off, bounds on what a setting or a
peer can ask for, and requests that got OK or INTERNAL instead of INVALID_ARGUMENT naming the field.

The memory bounds (items 3-6) are measured on real server processes in
``tests/reliability/test_memory_bounds.py``; the adversarial requests are also in the hostile-input
suite (``tests/reliability/test_hostile_input.py``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import WFE_SQLITE, ServerProcess
from wfe.persistence.v1 import (
    events_pb2,
    events_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from wfe_client import (
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    GrpcPersistenceProvider,
    InvalidArgument,
    PersistenceProvider,
    WorkflowInstance,
)
from wfe_client.conversion import workflow_from_proto
from wfe_client.limits import MAX_JSON_DEPTH
from wfe_sqlite import SqlitePersistenceProvider
from wfe_sqlite._cluster_servicer import CLUSTER_SERVICE_NAMES
from wfe_sqlite._rows import StoredWorkflow, pointer_rows, workflow_row
from wfe_sqlite._servicer import SERVICE_NAMES
from wfe_sqlite._wire import workflow_rows_from_message
from wfe_sqlite.server import RunningServer, ServerConfig

TOKEN = "hardening-test-token"
T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
TS = timestamp_pb2.Timestamp(seconds=1_704_164_645)
BEARER = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WFE_SQLITE_"):
            monkeypatch.delenv(name)


@contextmanager
def _started(db_url: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[Any]:
    """A ``wfe-sqlite serve`` process whose stderr (the log) is returned once it has stopped."""
    process = subprocess.Popen(
        [str(WFE_SQLITE), "serve", "--db", db_url, "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("WFE_SQLITE_")}, **(env or {})},
        cwd=cwd,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r} {process.communicate(timeout=30)[1]}")
    server = ServerProcess(process, line.split("listening on ", 1)[1].strip())
    log: list[str] = []
    try:
        yield server, log
    finally:
        process.terminate()
        log.append(process.communicate(timeout=30)[1])


def _code(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# -- 1: an empty value never switches authentication off ---------------------------------------


@pytest.mark.parametrize(
    ("file_text", "environ", "argv", "setting", "source"),
    [
        ('tokens_file = "tokens"\n', {"WFE_SQLITE_TOKENS_FILE": ""}, [], "tokens_file", "WFE_SQLITE_TOKENS_FILE"),
        ('tokens_file = ""\n', {}, [], "tokens_file", "config file"),
        ('tokens = ["from-file"]\n', {"WFE_SQLITE_TOKENS": ""}, [], "tokens", "WFE_SQLITE_TOKENS"),
        ('tokens = ["from-file"]\n', {"WFE_SQLITE_TOKENS": " , ,"}, [], "tokens", "WFE_SQLITE_TOKENS"),
        ("tokens = []\n", {}, [], "tokens", "config file"),
        ('tokens_file = "tokens"\n', {}, ["--tokens-file", ""], "tokens_file", "--tokens-file"),
        (None, {"WFE_SQLITE_CONFIG": ""}, [], "config", "WFE_SQLITE_CONFIG"),
        (
            'tls_cert = "server.crt"\ntls_key = "server.key"\n',
            {"WFE_SQLITE_TLS_CERT": ""},
            [],
            "tls_cert",
            "WFE_SQLITE_TLS_CERT",
        ),
        (
            'metrics_listen = "127.0.0.1:0"\n',
            {"WFE_SQLITE_METRICS_LISTEN": " "},
            [],
            "metrics_listen",
            "WFE_SQLITE_METRICS_LISTEN",
        ),
    ],
)
def test_an_empty_value_is_an_error_naming_the_setting_never_unset(
    tmp_path: Path,
    file_text: str | None,
    environ: dict[str, str],
    argv: list[str],
    setting: str,
    source: str,
) -> None:
    (tmp_path / "tokens").write_text(f"{TOKEN}\n")
    if file_text is not None:
        (tmp_path / "wfe.toml").write_text(file_text)
        argv = [*argv, "--config", "wfe.toml"]
    message = _refused_start(tmp_path, argv, environ)
    assert message.startswith(f"wfe-sqlite: invalid setting {setting}:"), message
    assert f"(from {source}" in message, message


def _refused_start(directory: Path, argv: list[str], environ: dict[str, str] | None = None) -> str:
    """stderr of a ``serve`` that must exit 2 without opening its database (a process, so that a
    regression, a server that starts after all, fails the test instead of hanging it)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WFE_SQLITE_")}, **(environ or {})}
    try:
        done = subprocess.run(
            [str(WFE_SQLITE), "serve", "--db", "sqlite://wfe.db", "--listen", "127.0.0.1:0", *argv],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired as served:
        raise AssertionError(f"the server started: {served.stdout!r}") from None
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert not (directory / "wfe.db").exists(), "refused before anything was opened"
    return done.stderr


def test_a_server_told_about_tokens_requires_them_and_logs_where_they_come_from(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"# operators\n{TOKEN}\n")
    (tmp_path / "tokens").chmod(0o600)
    (tmp_path / "wfe.toml").write_text('tokens_file = "tokens"\n')
    env = {"WFE_SQLITE_CONFIG": "wfe.toml", "WFE_SQLITE_TOKENS": "env-token-1,env-token-2"}
    with (
        _started(f"sqlite://{tmp_path / 'wfe.db'}", env=env, cwd=tmp_path) as (server, log),
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = workflows_pb2_grpc.WorkflowServiceStub(channel)
        request = workflows_pb2.NextDefinitionSequenceRequest(definition_id="d")
        assert _code(lambda: stub.NextDefinitionSequence(request, timeout=30)) == grpc.StatusCode.UNAUTHENTICATED
        for token in (TOKEN, "env-token-1", "env-token-2"):
            stub.NextDefinitionSequence(request, timeout=30, metadata=(("authorization", f"Bearer {token}"),))
    log_text = log[0]
    assert (
        "bearer tokens required: tokens_file tokens (set by config file wfe.toml), "
        "2 from tokens (set by WFE_SQLITE_TOKENS)" in log_text
    ), log_text
    for token in (TOKEN, "env-token-1", "env-token-2"):
        assert token not in log_text, "tokens are never logged"
    with _started(f"sqlite://{tmp_path / 'wfe.db'}", cwd=tmp_path) as (_, log):
        pass
    assert "no bearer tokens: calls are not authenticated" in log[0], log[0]


# -- 2: warnings for a tokens file others can read and metrics off loopback ----------------------


def test_start_up_warns_of_a_readable_tokens_file_and_metrics_off_loopback(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    db = f"sqlite://{tmp_path / 'wfe.db'}"
    tokens.chmod(0o644)
    with _started(db, "--tokens-file", str(tokens), "--metrics-listen", "0.0.0.0:0") as (_, log):
        pass
    warnings = [line for line in log[0].splitlines() if " WARNING " in line]
    assert any(f"tokens_file {tokens} is readable by group and others (mode 0644)" in w for w in warnings), log[0]
    assert any("metrics_listen 0.0.0.0:0 is reachable from other hosts" in w for w in warnings), log[0]
    tokens.chmod(0o640)
    with _started(db, "--tokens-file", str(tokens), "--metrics-listen", "127.0.0.1:0") as (_, log):
        pass
    warnings = [line for line in log[0].splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "is readable by group (mode 0640)" in warnings[0], log[0]
    tokens.chmod(0o600)
    with _started(db, "--tokens-file", str(tokens), "--metrics-listen", "127.0.0.1:0") as (_, log):
        pass
    assert " WARNING " not in log[0], log[0]


# -- 7: bounds on what a setting or a peer can ask for ------------------------------------------


@pytest.mark.parametrize(
    ("argv", "setting"),
    [
        (["--readers", "100000"], "readers"),
        (["--readers", "65"], "readers"),
        (["--max-connections", "0"], "max_connections"),
        (["--max-concurrent-streams", "0"], "max_concurrent_streams"),
        (["--stream-idle-timeout", "0"], "stream_idle_timeout"),
    ],
)
def test_absurd_bounds_stop_start_up(tmp_path: Path, argv: list[str], setting: str) -> None:
    message = _refused_start(tmp_path, argv)
    assert message.startswith(f"wfe-sqlite: invalid setting {setting}:"), message


def _ready(address: str, timeout: float = 5.0) -> grpc.Channel | None:
    """A channel with a live connection to ``address``, or None when the server does not keep one."""
    # A subchannel pool of its own: channels to one address would otherwise share one connection.
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    health = health_pb2_grpc.HealthStub(channel)
    try:
        health.Check(health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=False)
    except grpc.RpcError:
        channel.close()
        return None
    return channel


def test_connections_beyond_max_connections_are_refused(db_url: str) -> None:
    with _started(db_url, "--max-connections", "2") as (server, _):
        first, second = _ready(server.address), _ready(server.address)
        assert first is not None and second is not None
        assert _ready(server.address) is None, "a third connection was served"
        first.close()
        deadline = time.monotonic() + 20
        third = None
        while third is None and time.monotonic() < deadline:  # the slot frees once the server sees the close
            third = _ready(server.address)
        assert third is not None, "a closed connection's slot was not freed"
        second.close()
        third.close()


def test_calls_beyond_max_concurrent_streams_wait_for_a_free_stream(db_url: str) -> None:
    with _started(db_url, "--max-concurrent-streams", "2") as (server, _):
        channel = _ready(server.address)
        assert channel is not None
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(2)]
        for watch in watches:  # both streams are open once their first status arrives
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        check = lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=2)  # noqa: E731
        assert _code(check) in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        other = _ready(server.address)  # the limit is per connection
        assert other is not None
        other.close()
        watches[0].cancel()
        deadline = time.monotonic() + 20
        while _code(check) != grpc.StatusCode.OK:
            assert time.monotonic() < deadline, "the stream freed by the cancelled call was not reused"
        watches[1].cancel()
        channel.close()
    with _started(db_url) as (server, _):  # the control: by default a third call runs at once
        channel = _ready(server.address)
        assert channel is not None
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(2)]
        for watch in watches:
            next(watch)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING
        for watch in watches:
            watch.cancel()
        channel.close()


# -- 8, 9, 10, 12: writes are checked as reads are, on both providers ---------------------------


def _invalid(error: pytest.ExceptionInfo[InvalidArgument], field: str) -> None:
    assert error.value.metadata.get("field") == field, (error.value.metadata, error.value.message)
    assert field in error.value.message


async def test_ids_names_keys_and_tokens_over_1024_bytes_are_refused_on_write(provider: PersistenceProvider) -> None:
    long, fits = "k" * 1025, "é" * 512  # 1025 and 1024 UTF-8 bytes
    cases: list[tuple[str, Any]] = []
    for name in ("event_name", "event_key"):
        e = Event.new("name", "key", {})
        setattr(e, name, long)
        cases.append((f"event.{name}", lambda e=e: provider.create_event(e)))
    for name in (
        "workflow_id",
        "execution_pointer_id",
        "event_name",
        "event_key",
        "external_token",
        "external_worker_id",
    ):
        s = EventSubscription.new("wf", 0, "p", "name", "key", T0)
        setattr(s, name, "w" * (1 << 20) if name == "workflow_id" else long)
        cases.append((f"subscription.{name}", lambda s=s: provider.create_event_subscription(s)))
    for name in ("workflow_id", "execution_pointer_id"):
        error = ExecutionError.new("wf", "p", "message")
        setattr(error, name, long)
        cases.append((f"errors[0].{name}", lambda error=error: provider.persist_errors([error])))
    for name, value in (
        ("event_name", long),
        ("event_key", long),
        ("step_name", long),
        ("predecessor_id", long),
        ("children", ["ok", long]),
        ("scope", [long]),
    ):
        w = WorkflowInstance.new("flow", 1, {})
        pointer = ExecutionPointer.new(0)
        setattr(pointer, name, value)
        w.execution_pointers = [pointer]
        suffix = "[1]" if name == "children" else "[0]" if name == "scope" else ""
        cases.append((f"workflow.execution_pointers[0].{name}{suffix}", lambda w=w: provider.create_new_workflow(w)))
    for field, write in cases:
        with pytest.raises(InvalidArgument) as refused:
            await write()
        _invalid(refused, field)
    # Exactly 1024 bytes is fine, and such a record is reachable by every read that takes the value.
    event = Event.new(fits, fits, {"n": 1})
    await provider.create_event(event)
    assert await provider.get_events(fits, fits, event.event_time + timedelta(seconds=1)) == [event.id]
    subscription = EventSubscription.new(fits, 0, fits, fits, fits, T0)
    await provider.create_event_subscription(subscription)
    assert [s.id for s in await provider.get_subscriptions(fits, fits, T0)] == [subscription.id]
    assert await provider.set_subscription_token(subscription.id, fits, fits, T0 + timedelta(days=1))
    await provider.clear_subscription_token(subscription.id, fits)


async def test_a_reference_postgresql_cannot_index_is_refused_there_and_kept_by_sqlite(
    provider: PersistenceProvider, store_url: str
) -> None:
    """PostgreSQL's index on the reference holds about 2,700 bytes, so it takes references of at most
    1024 bytes (a longer one that did not compress failed as INTERNAL); SQLite keeps any length."""
    fits, longer = secrets.token_hex(512), secrets.token_hex(4000)  # 1024 and 8000 bytes, incompressible
    w = WorkflowInstance.new("flow", 1, {})
    w.reference = fits
    await provider.create_new_workflow(w)
    assert (await provider.get_workflow_instance(w.id)).reference == fits
    over = WorkflowInstance.new("flow", 1, {})
    over.reference = longer
    w.reference = longer
    if store_url.startswith("sqlite://"):
        await provider.create_new_workflow(over)
        await provider.persist_workflow(w)
        assert (await provider.get_workflow_instance(over.id)).reference == longer
        assert (await provider.get_workflow_instance(w.id)).reference == longer
        return
    for write in (lambda: provider.create_new_workflow(over), lambda: provider.persist_workflow(w)):
        with pytest.raises(InvalidArgument) as refused:
            await write()
        _invalid(refused, "workflow.reference")
    assert (await provider.get_workflow_instance(w.id)).reference == fits
    assert (await provider.get_workflow_instance(w.id)).revision == 1


async def test_keys_too_long_together_for_a_postgresql_index_are_invalid_there(
    provider: PersistenceProvider, store_url: str
) -> None:
    """An event's (and a subscription's) name, key and id are indexed together. Each may hold 1024
    bytes, but three that do not compress exceed what a PostgreSQL btree entry holds: there that is
    INVALID_ARGUMENT (it was INTERNAL); SQLite stores them."""

    def key() -> str:
        return secrets.token_hex(512)

    event = Event.new(key(), key(), {})
    event.id = key()
    subscription = EventSubscription.new("wf", 0, key(), key(), key(), T0)
    subscription.id = key()
    writes = {
        "event": (lambda: provider.create_event(event), lambda: provider.get_event(event.id)),
        "subscription": (
            lambda: provider.create_event_subscription(subscription),
            lambda: provider.get_subscription(subscription.id),
        ),
    }
    for field, (write, read) in writes.items():
        if store_url.startswith("sqlite://"):
            await write()
            assert (await read()).id in (event.id, subscription.id)
            continue
        with pytest.raises(InvalidArgument, match="PostgreSQL cannot store these values") as refused:
            await write()
        _invalid(refused, field)


async def test_duplicate_pointer_ids_are_refused(provider: PersistenceProvider) -> None:
    w = WorkflowInstance.new("flow", 1, {})
    first, second, third = ExecutionPointer.new(0), ExecutionPointer.new(1), ExecutionPointer.new(2)
    third.id = first.id
    w.execution_pointers = [first, second, third]
    with pytest.raises(InvalidArgument) as refused:
        await provider.create_new_workflow(w)
    _invalid(refused, "workflow.execution_pointers[2].id")
    w.execution_pointers = [first, second]
    await provider.create_new_workflow(w)
    w.execution_pointers = [first, second, third]
    for persist in (
        lambda: provider.persist_workflow(w),
        lambda: provider.persist_workflow_with_subscriptions(w, [EventSubscription.new(w.id, 0, "p", "n", "k", T0)]),
    ):
        with pytest.raises(InvalidArgument) as refused:
            await persist()
        _invalid(refused, "workflow.execution_pointers[2].id")
    assert len((await provider.get_workflow_instance(w.id)).execution_pointers) == 2


async def test_an_empty_subscription_workflow_id_is_refused(provider: PersistenceProvider) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await provider.create_event_subscription(EventSubscription.new("", 0, "p", "name", "key", T0))
    _invalid(refused, "subscription.workflow_id")
    w = WorkflowInstance.new("flow", 1, {})
    await provider.create_new_workflow(w)
    with pytest.raises(InvalidArgument) as refused:
        await provider.persist_workflow_with_subscriptions(w, [EventSubscription.new("", 0, "p", "n", "k", T0)])
    _invalid(refused, "subscriptions[0].workflow_id")
    assert await provider.get_subscriptions("n", "k", T0) == []


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


async def test_json_nested_deeper_than_the_limit_is_refused(provider: PersistenceProvider) -> None:
    w = WorkflowInstance.new("flow", 1, _nested(MAX_JSON_DEPTH))
    await provider.create_new_workflow(w)  # at the limit: stored, read back, sent again
    stored = await provider.get_workflow_instance(w.id)
    assert stored.data == w.data
    await provider.persist_workflow(stored)
    for depth in (MAX_JSON_DEPTH + 1, 980, 5000):
        deep = WorkflowInstance.new("flow", 1, _nested(depth))
        with pytest.raises(InvalidArgument) as refused:
            await provider.create_new_workflow(deep)
        _invalid(refused, "workflow.data")
        assert f"nested deeper than {MAX_JSON_DEPTH} levels" in refused.value.message
    pointer = ExecutionPointer.new(0)
    pointer.extension_attributes = {"deep": _nested(600)}
    stored.execution_pointers = [pointer]
    with pytest.raises(InvalidArgument) as refused:
        await provider.persist_workflow(stored)
    # (the gRPC adapter refuses it before sending, naming the pointer field without its position)
    assert "extension_attributes" in refused.value.metadata["field"], refused.value.metadata
    with pytest.raises(InvalidArgument) as refused:
        await provider.create_event(Event.new("n", "k", _nested(980)))
    _invalid(refused, "event.event_data")


# -- the same on the wire, where the fast path (_wire) and the model path meet the raw bytes ----


@pytest.fixture
async def wire(running_server: RunningServer) -> Any:
    channel = grpc.aio.insecure_channel(running_server.address)
    yield channel
    await channel.close()


async def _wire_code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def test_raw_requests_get_invalid_argument_naming_the_field(wire: grpc.aio.Channel) -> None:
    workflows = workflows_pb2_grpc.WorkflowServiceStub(wire)
    events = events_pb2_grpc.EventServiceStub(wire)
    subscriptions = subscriptions_pb2_grpc.SubscriptionServiceStub(wire)

    def workflow(pointers: list[workflows_pb2.ExecutionPointer], data: str = "{}") -> workflows_pb2.WorkflowInstance:
        return workflows_pb2.WorkflowInstance(
            workflow_definition_id="d",
            status=workflows_pb2.WORKFLOW_STATUS_RUNNABLE,
            data=data,
            create_time=TS,
            execution_pointers=pointers,
        )

    def pointer(pid: str, **fields: Any) -> workflows_pb2.ExecutionPointer:
        return workflows_pb2.ExecutionPointer(id=pid, status=workflows_pb2.POINTER_STATUS_PENDING, **fields)

    deep = "[" * 980 + "]" * 980
    cases = [
        (
            workflows.CreateWorkflow(
                workflows_pb2.CreateWorkflowRequest(workflow=workflow([pointer("a"), pointer("a")]))
            ),
            "workflow.execution_pointers[1].id",
        ),
        (
            workflows.CreateWorkflow(
                workflows_pb2.CreateWorkflowRequest(workflow=workflow([pointer("a", event_key="k" * 5000)]))
            ),
            "workflow.execution_pointers[0].event_key",
        ),
        (workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=workflow([], deep))), "workflow.data"),
        (
            workflows.CreateWorkflow(
                workflows_pb2.CreateWorkflowRequest(workflow=workflow([pointer("a", extension_attributes={"x": deep})]))
            ),
            "workflow.execution_pointers[0].extension_attributes['x']",
        ),
        (
            events.CreateEvent(
                events_pb2.CreateEventRequest(
                    event=events_pb2.Event(event_name="n" * 5000, event_key="k", event_data="1", event_time=TS)
                )
            ),
            "event.event_name",
        ),
        (
            events.CreateEvent(
                events_pb2.CreateEventRequest(
                    event=events_pb2.Event(event_name="n", event_key="k", event_data=deep, event_time=TS)
                )
            ),
            "event.event_data",
        ),
        (
            subscriptions.CreateSubscription(
                subscriptions_pb2.CreateSubscriptionRequest(
                    subscription=subscriptions_pb2.EventSubscription(workflow_id="", subscribe_as_of=TS)
                )
            ),
            "subscription.workflow_id",
        ),
        (
            subscriptions.CreateSubscription(
                subscriptions_pb2.CreateSubscriptionRequest(
                    subscription=subscriptions_pb2.EventSubscription(
                        workflow_id="w", subscribe_as_of=TS, external_token="t" * 5000
                    )
                )
            ),
            "subscription.external_token",
        ),
    ]
    for call, field in cases:
        code, details = await _wire_code(call)
        assert (code, details.split(":", 1)[0]) == (grpc.StatusCode.INVALID_ARGUMENT, field), (field, code, details)


def _model_path(msg: workflows_pb2.WorkflowInstance) -> StoredWorkflow:
    workflow = workflow_from_proto(msg)
    row = workflow_row(workflow)
    return row, pointer_rows(row.id, workflow.execution_pointers)


def _outcome(path: Any, msg: workflows_pb2.WorkflowInstance) -> tuple[Any, ...]:
    try:
        return ("stored", path(msg))
    except InvalidArgument as error:
        return ("refused", error.metadata.get("field"), error.message)


@pytest.mark.parametrize(
    "pointers",
    [
        [{"id": "a"}, {"id": "b"}],
        [{"id": "a"}, {"id": "b"}, {"id": "a"}],
        [{"id": "a", "event_name": "n" * 1025}],
        [{"id": "a", "event_key": "é" * 512, "step_name": "s" * 1024}],
        [{"id": "a", "step_name": "s" * 1025}],
        [{"id": "a", "predecessor_id": "p" * 1025}],
        [{"id": "a", "children": ["c", "c" * 1025]}],
        [{"id": "a", "scope": ["s" * 1025]}],
        [{"id": "a" * 1025}],
        [{"id": "a", "extension_attributes": {"deep": "[" * 513 + "]" * 513}}],
        [{"id": "a", "outcome": "[" * 512 + "]" * 512, "event_data": '{"x":' * 513 + "1" + "}" * 513}],
    ],
)
def test_the_fast_wire_path_and_the_model_path_validate_alike(pointers: list[dict[str, Any]]) -> None:
    msg = workflows_pb2.WorkflowInstance(
        id="wf",
        workflow_definition_id="d",
        status=workflows_pb2.WORKFLOW_STATUS_RUNNABLE,
        data="[[1]]",
        create_time=TS,
        execution_pointers=[
            workflows_pb2.ExecutionPointer(status=workflows_pb2.POINTER_STATUS_PENDING, **p) for p in pointers
        ],
    )
    assert _outcome(workflow_rows_from_message, msg) == _outcome(_model_path, msg)


FORGED_TOKENS = [
    base64.urlsafe_b64encode(raw).decode()
    for raw in (
        b"99999999999999999999:x",
        b"-99999999999999999999:x",
        b"9223372036854775808:x",
        b"1e5:x",
        b" 12:x",
        b"1_000:x",
        b"12",
        b"12:" + b"x" * 1025,
        b"\xff\xfe:x",
    )
] + ["not base64 at all!", "%%%"]


async def test_forged_page_tokens_are_invalid_argument_on_every_paged_rpc(wire: grpc.aio.Channel) -> None:
    workflows = workflows_pb2_grpc.WorkflowServiceStub(wire)
    events = events_pb2_grpc.EventServiceStub(wire)
    subscriptions = subscriptions_pb2_grpc.SubscriptionServiceStub(wire)
    for token in FORGED_TOKENS:
        for call in (
            workflows.GetRunnableWorkflows(workflows_pb2.GetRunnableWorkflowsRequest(as_at=TS, page_token=token)),
            events.GetRunnableEvents(events_pb2.GetRunnableEventsRequest(as_at=TS, page_token=token)),
            events.GetEvents(events_pb2.GetEventsRequest(event_name="n", event_key="k", as_of=TS, page_token=token)),
            subscriptions.GetSubscriptions(
                subscriptions_pb2.GetSubscriptionsRequest(event_name="n", event_key="k", as_of=TS, page_token=token)
            ),
        ):
            code, details = await _wire_code(call)
            assert (code, details) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_token: not a token from a previous response",
            ), (token, details)
    # A genuine token still works: keys at both ends of int64 and the longest id.
    edge = base64.urlsafe_b64encode(f"{-(2**63)}:{'x' * 1024}".encode()).decode()
    response = await workflows.GetRunnableWorkflows(
        workflows_pb2.GetRunnableWorkflowsRequest(as_at=TS, page_token=edge)
    )
    assert list(response.workflow_ids) == [] and response.next_page_token == ""


# -- 5 (every paged RPC): pages are cut by bytes as they are read --------------------------------


async def test_id_pages_are_cut_by_their_byte_budget_and_lose_nothing(db_url: str) -> None:
    store = await SqlitePersistenceProvider.open(db_url)
    try:
        ids = [f"{n:06d}-" + "e" * 1017 for n in range(6000)]  # 1024 bytes each: 6 MiB of ids
        events = [Event(id=i, event_name="n", event_key="k", event_data=None, event_time=T0) for i in ids]
        await asyncio.gather(*(store.create_event(e) for e in events))
    finally:
        await store.close()
    running = await RunningServer.start(ServerConfig(db=db_url, listen="127.0.0.1:0"))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = events_pb2_grpc.EventServiceStub(channel)
            first = await stub.GetRunnableEvents(events_pb2.GetRunnableEventsRequest(as_at=TS, page_size=10_000))
            assert 3000 < len(first.event_ids) < 6000 and first.next_page_token, len(first.event_ids)
            assert first.ByteSize() < 5 * 1024 * 1024
        async with GrpcPersistenceProvider.connect(running.address) as remote:
            assert await remote.get_runnable_events(T0) == ids
            assert await remote.get_events("n", "k", T0) == ids
    finally:
        await running.stop()


# -- 13: health List answers cleanly -------------------------------------------------------------


def test_health_list_needs_the_token_probes_do_not_and_nothing_logs_a_traceback(db_url: str) -> None:
    with (
        _started(db_url, env={"WFE_SQLITE_TOKENS": TOKEN}) as (server, log),
        grpc.insecure_channel(server.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(3):
            assert _code(lambda: health.List(health_pb2.HealthListRequest(), timeout=30)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
        listed = health.List(health_pb2.HealthListRequest(), timeout=30, metadata=BEARER)
        assert set(listed.statuses) == {"", *SERVICE_NAMES, *CLUSTER_SERVICE_NAMES}
        assert {s.status for s in listed.statuses.values()} == {health_pb2.HealthCheckResponse.SERVING}
        # Check and Watch stay open for probes: without a token they answer for the server as a
        # whole (they do not even read the request), with one for the service named.
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", "wfe.persistence.v1.WorkflowService", "no.such.Service"):
            request = health_pb2.HealthCheckRequest(service=service)
            assert health.Check(request, timeout=30).status == serving
            watch = health.Watch(request, timeout=30)
            assert next(watch).status == serving
            watch.cancel()
        assert (
            health.Check(
                health_pb2.HealthCheckRequest(service="wfe.persistence.v1.EventService"),
                timeout=30,
                metadata=BEARER,
            ).status
            == serving
        )
        unknown = health_pb2.HealthCheckRequest(service="no.such.Service")
        assert _code(lambda: health.Check(unknown, timeout=30, metadata=BEARER)) == grpc.StatusCode.NOT_FOUND
    assert "Traceback" not in log[0] and " ERROR " not in log[0], log[0]
    with (
        _started(db_url) as (server, log),
        grpc.insecure_channel(server.address) as channel,
    ):  # without tokens, List is served to anyone
        listed = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=30)
        assert set(listed.statuses) == {"", *SERVICE_NAMES, *CLUSTER_SERVICE_NAMES}
    assert "Traceback" not in log[0], log[0]
