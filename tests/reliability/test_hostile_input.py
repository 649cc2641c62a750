"""Hostile input: generated requests to every RPC through the raw generated stubs.

Requests are generated from the message descriptors (so every field of every request is covered,
including nested pointers, Timestamps and Durations): unset or set fields, malformed and invalid
JSON text, huge and empty strings, ids from a small pool (duplicates), extreme integers, unknown
enum values, timestamps with negative nanos or seconds before 1970 / after 9999. Every answer must
be OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS or FAILED_PRECONDITION with a message and an
ErrorInfo reason, never INTERNAL or UNKNOWN; afterwards the server still serves its earlier data.

``WFE_HYPOTHESIS_EXAMPLES`` sets the examples per RPC (default 40; ``make stress`` raises it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability_support import Server, env_int, start_server, status_reason
from wfe.persistence.v1 import (
    events_pb2,
    events_pb2_grpc,
    execution_errors_pb2,
    execution_errors_pb2_grpc,
    scheduled_commands_pb2,
    scheduled_commands_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    visibility_pb2,
    visibility_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from wfe_client import Event, ExecutionPointer, GrpcPersistenceProvider, WorkflowInstance
from wfe_client._time import from_micros

FD = pb_descriptor.FieldDescriptor
EXAMPLES = env_int("WFE_HYPOTHESIS_EXAMPLES", 40)
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
MODULES = [
    (workflows_pb2, workflows_pb2_grpc),
    (events_pb2, events_pb2_grpc),
    (subscriptions_pb2, subscriptions_pb2_grpc),
    (scheduled_commands_pb2, scheduled_commands_pb2_grpc),
    (execution_errors_pb2, execution_errors_pb2_grpc),
    (visibility_pb2, visibility_pb2_grpc),
]
METHODS = [
    (module, grpc_module, service, method)
    for module, grpc_module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
LAST_INSTANT = from_micros(253402300799_999999)
SEEN: dict[grpc.StatusCode, int] = {}
"""Answers over every RPC: the generated requests must both reach the store and be refused."""
OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.max_send_message_length", 64 * 1024 * 1024)]

# -- generated values ----------------------------------------------------------------------------

ID_POOL = ["", "dup", "dup-2", "a", " ", "é", "\x00", "x" * 1024, "x" * 1025, "w/1?#", "null"]
BAD_JSON = ["", "{", "[1,", "{'a': 1}", "NaN", "Infinity", "-Infinity", "1e999999", "undefined",
            '{"a":1}garbage', "\"unterminated", "[" * 5000 + "]" * 5000, "[" * 200_000, "01", "+1", ".5",
            '{"a":1,"a":2}', "\ufeff{}", "   "]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
).map(lambda v: json.dumps(v))
HUGE = st.sampled_from([1 << 10, 1 << 16, 1 << 20, 5 << 20]).map(lambda n: "z" * n)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
STRINGS = st.one_of(
    st.sampled_from(ID_POOL), TEXT, st.sampled_from(BAD_JSON), JSON_VALUES, HUGE
)

INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
INTERESTING = [0, 1, -1, 999_999_999, 1_000_000_000, 253402300799, 253402300800, -62135596800, 2**31, 2**32, 2**53 + 1]


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    special = sorted({v for v in [low, high, low + 1, high - 1, *INTERESTING] if low <= v <= high})
    return st.one_of(st.sampled_from(special), st.integers(low, high))


def _hostile_scalar(field: Any) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_STRING:
        return STRINGS
    if field.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type == FD.TYPE_ENUM:
        defined = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(defined), _ints(-(2**31), 2**31 - 1))
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats()
    low, high = INT_RANGES[field.type]
    return _ints(low, high)


JSON_FIELDS = {"data", "event_data", "persistence_data", "context_item", "outcome", "subscription_data", "value"}
VALID_IDS = st.sampled_from(["dup", "dup-2", "a", "é", "w/1?#", "name-1", "wf", "key"]) | st.text(
    alphabet="abcdef0123456789-", min_size=1, max_size=12
)


def _valid_scalar(field: Any) -> st.SearchStrategy[Any]:
    """A value the server should accept for this field (so requests reach the storage layer)."""
    if field.type == FD.TYPE_STRING:
        if field.name == "page_token":
            return st.just("")
        return JSON_VALUES if field.name in JSON_FIELDS else VALID_IDS
    if field.type == FD.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values if v.number != 0])
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.name == "nanos":
        return st.integers(0, 999_999_999)
    if field.name == "seconds":
        return st.integers(0, 253402300799 if field.containing_type.name == "Timestamp" else 3600)
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        return st.integers(max(low, 0), min(high, 2**40 if field.name != "page_size" else 50))
    return _hostile_scalar(field)


def _mostly_valid(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # One field in eight is hostile: most requests carry a few bad fields, some reach the store whole.
    return st.integers(0, 7).flatmap(lambda k: hostile if k == 0 else valid)


def messages(descriptor: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Messages of ``descriptor``: each field valid, hostile or unset."""
    cls = message_factory.GetMessageClass(descriptor)
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            item = _mostly_valid(_valid_scalar(value_field), _hostile_scalar(value_field))
            parts[field.name] = st.dictionaries(_mostly_valid(VALID_IDS, STRINGS), item, max_size=3)
        elif field.type == FD.TYPE_MESSAGE:
            inner = messages(field.message_type, depth + 1) if depth < 3 else st.just(cls_of(field.message_type)())
            parts[field.name] = st.lists(inner, max_size=3) if _repeated(field) else inner
        else:
            one = _mostly_valid(_valid_scalar(field), _hostile_scalar(field))
            parts[field.name] = st.lists(one, max_size=3) if _repeated(field) else one
    optional = {
        name: strategy if descriptor.fields_by_name[name].type == FD.TYPE_MESSAGE
        else st.integers(0, 5).flatmap(lambda k, s=strategy: st.none() if k == 0 else s)
        for name, strategy in parts.items()
    }
    optional = {
        name: st.integers(0, 9).flatmap(lambda k, s=strategy: st.none() if k == 0 else s)
        if descriptor.fields_by_name[name].type == FD.TYPE_MESSAGE else strategy
        for name, strategy in optional.items()
    }

    def build(values: dict[str, Any]) -> Any:
        msg = cls()
        for field in descriptor.fields:
            value = values[field.name]
            if value is None:
                continue
            if field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
                getattr(msg, field.name).update(value)
            elif field.type == FD.TYPE_MESSAGE and _repeated(field):
                getattr(msg, field.name).extend(value)
            elif field.type == FD.TYPE_MESSAGE:
                getattr(msg, field.name).CopyFrom(value)
            elif _repeated(field):
                getattr(msg, field.name).extend(value)
            else:
                setattr(msg, field.name, value)
        return msg

    return st.fixed_dictionaries(optional).map(build)


def _repeated(field: Any) -> bool:
    return getattr(field, "is_repeated", None) if hasattr(field, "is_repeated") else field.label == FD.LABEL_REPEATED


def cls_of(descriptor: Any) -> Any:
    return message_factory.GetMessageClass(descriptor)


# -- the server ----------------------------------------------------------------------------------


class Target:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(server.address, options=OPTIONS)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.sentinels: dict[str, Any] = {}

    def stub(self, grpc_module: Any, service: Any) -> Any:
        return getattr(grpc_module, f"{service.name}Stub")(self.channel)


async def _seed(address: str) -> dict[str, Any]:
    async with GrpcPersistenceProvider.connect(address) as store:
        w = WorkflowInstance.new("sentinel-flow", 3, {"keep": [1, 2**63 - 1, "é"]})
        # Created at the last instant a Timestamp holds: no generated PurgeWorkflows (which deletes
        # what is older than a Timestamp) can reach it, whatever statuses it names.
        w.create_time = LAST_INSTANT
        w.execution_pointers = [ExecutionPointer.new(0), ExecutionPointer.new(1)]
        await store.create_new_workflow(w)
        e = Event.new("sentinel", "key", {"keep": True})
        await store.create_event(e)
        return {"workflow": await store.get_workflow_instance(w.id), "event": await store.get_event(e.id)}


async def _check_sentinels(address: str, sentinels: dict[str, Any]) -> None:
    async with GrpcPersistenceProvider.connect(address) as store:
        assert await store.get_workflow_instance(sentinels["workflow"].id) == sentinels["workflow"]
        assert await store.get_event(sentinels["event"].id) == sentinels["event"]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    server = start_server(f"sqlite://{tmp / 'hostile.db'}", tmp / "server.log")
    try:
        t = Target(server)
        t.sentinels = asyncio.run(_seed(server.address))
        yield t
        t.channel.close()
        log = server.log()
        assert "internal error" not in log, log[-5000:]
    finally:
        code = server.terminate()
    assert code == 0


def _call(target: Target, grpc_module: Any, service: Any, method: Any, request: Any) -> tuple[grpc.StatusCode, str, Any]:
    rpc = getattr(target.stub(grpc_module, service), method.name)
    try:
        if method.server_streaming:
            for _ in rpc(request, timeout=30):
                pass
        else:
            rpc(request, timeout=30)
    except grpc.RpcError as error:
        return error.code(), error.details() or "", error
    return grpc.StatusCode.OK, "", None


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "module,grpc_module,service,method", METHODS, ids=[f"{s.name}.{m.name}" for _, _, s, m in METHODS]
)
def test_every_rpc_answers_hostile_requests_properly(target: Target, module: Any, grpc_module: Any, service: Any, method: Any) -> None:
    seen: dict[grpc.StatusCode, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=messages(method.input_type))
    def run(request: Any) -> None:
        code, message, error = _call(target, grpc_module, service, method, request)
        seen[code] = seen.get(code, 0) + 1
        assert code in ALLOWED, f"{method.full_name} answered {code.name}: {message!r}"
        if code != grpc.StatusCode.OK:
            assert len(message) >= 8, f"{method.full_name}: {code.name} with no useful message: {message!r}"
            assert status_reason(error), f"{method.full_name}: {code.name} without an ErrorInfo reason: {message!r}"

    run()
    print(method.name, {c.name: n for c, n in seen.items()})
    for code, count in seen.items():
        SEEN[code] = SEEN.get(code, 0) + count
    assert target.server.alive()
    asyncio.run(_check_sentinels(target.server.address, target.sentinels))


def test_server_still_serves_with_data_intact(target: Target) -> None:
    if SEEN:  # after the generated requests (not when this test runs alone)
        assert SEEN.get(grpc.StatusCode.OK, 0) >= 50 and len(SEEN) >= 4, f"requests too uniform: {SEEN}"
    health = health_pb2_grpc.HealthStub(target.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    asyncio.run(_check_sentinels(target.server.address, target.sentinels))


def test_undecodable_request_bytes_are_rejected_without_harm(target: Target) -> None:
    """Bytes that are not a valid message at all: refused by the gRPC layer, server unaffected."""
    garbage = [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc", bytes(range(256))]
    for _, _, service, method in METHODS:
        call = target.channel.unary_unary(f"/{service.full_name}/{method.name}")
        for payload in garbage:
            try:
                if method.server_streaming:
                    for _ in target.channel.unary_stream(f"/{service.full_name}/{method.name}")(payload, timeout=10):
                        pass
                else:
                    call(payload, timeout=10)
            except grpc.RpcError as error:
                assert error.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE), (
                    method.full_name, error.code(), error.details())
    assert target.server.alive()
    asyncio.run(_check_sentinels(target.server.address, target.sentinels))
