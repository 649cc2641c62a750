"""Errors: every reason of the contract has its exception, and reasons survive the wire both ways."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import grpc
import pytest
from grpc.aio import Metadata
from grpc_status import rpc_status

from conftest import ROOT
from wfe.persistence.v1 import errors_pb2
from wfe_client import GrpcPersistenceProvider, InvalidArgument, RevisionConflict, Unauthenticated, WfeError
from wfe_client._grpc_provider import _error_from_rpc
from wfe_client.errors import error_for_reason
from wfe_sqlite._status import to_status
from wfe_sqlite.server import RunningServer, ServerConfig

REASONS = [name for name in errors_pb2.ErrorReason.keys() if name != "ERROR_REASON_UNSPECIFIED"]  # noqa: SIM118


def _documented_codes() -> dict[str, str]:
    """Reason -> status code, as the comment above each ErrorReason value in errors.proto says."""
    text = (ROOT / "protos/wfe/persistence/v1/errors.proto").read_text()
    return {reason: code for code, reason in re.findall(r"//\s*([A-Z_]+):.*\n(?:\s*//.*\n)*\s*([A-Z_]+) = \d+;", text)}


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_of_the_contract_has_its_exception(reason: str) -> None:
    cls = error_for_reason(reason)
    assert cls is not None, f"wfe_client does not know the reason {reason}"
    assert cls.reason == reason
    assert cls.code == _documented_codes()[reason], "the status code errors.proto documents"


@pytest.mark.parametrize("reason", REASONS)
def test_reason_message_and_metadata_cross_the_wire(reason: str) -> None:
    """The server's status for each error, read back by the adapter, is the same exception."""
    cls = error_for_reason(reason)
    assert cls is not None
    sent = cls("it went wrong", field="workflow.id")
    status = rpc_status.to_status(to_status(sent))
    received = _error_from_rpc(
        grpc.aio.AioRpcError(status.code, Metadata(), Metadata(*status.trailing_metadata), status.details)
    )
    assert type(received) is cls
    assert (received.message, received.metadata) == ("it went wrong", {"field": "workflow.id"})


def test_revision_conflict_is_aborted() -> None:
    assert (RevisionConflict.reason, RevisionConflict.code) == ("REVISION_CONFLICT", "ABORTED")


async def test_a_refused_token_is_unauthenticated(tmp_path: Path) -> None:
    running = await RunningServer.start(
        ServerConfig(db=f"sqlite://{tmp_path / 'wfe.db'}", listen="127.0.0.1:0", tokens=("right-token",))
    )
    try:
        async with GrpcPersistenceProvider.connect(running.address, token="wrong-token") as client:
            with pytest.raises(Unauthenticated) as refused:
                await client.next_definition_sequence("seq")
        assert refused.value.reason == "UNAUTHENTICATED"
    finally:
        await running.stop()


async def test_a_server_bug_is_internal_not_invalid_argument(
    running_server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A ValueError that is not validation (a bug) is INTERNAL, with its traceback in the log."""

    async def broken(definition_id: str, count: int = 1) -> int:
        raise ValueError("a bug, not the caller's mistake")

    monkeypatch.setattr(running_server.provider.store, "next_definition_sequence", broken)
    async with GrpcPersistenceProvider.connect(running_server.address) as client:
        with caplog.at_level(logging.ERROR, logger="wfe_sqlite._status"), pytest.raises(WfeError) as failed:
            await client.next_definition_sequence("seq")
        assert not isinstance(failed.value, InvalidArgument)
        assert failed.value.code == "INTERNAL"
        assert "a bug" not in failed.value.message  # internals stay in the server's log
        # Validation still is INVALID_ARGUMENT.
        with pytest.raises(InvalidArgument):
            await client.next_definition_sequence("x" * 2000)
    logged = [r for r in caplog.records if r.name == "wfe_sqlite._status"]
    assert logged and logged[0].exc_info is not None
    assert "a bug, not the caller's mistake" in caplog.text


async def test_a_failure_the_server_gave_no_reason_for_is_not_called_internal(tmp_path: Path) -> None:
    """A server that is gone answers nothing: the caller sees the status code as code and reason
    (UNAVAILABLE, safe to retry), not the INTERNAL that means a fault inside the server."""
    running = await RunningServer.start(ServerConfig(db=f"sqlite://{tmp_path / 'wfe.db'}", listen="127.0.0.1:0"))
    try:
        async with GrpcPersistenceProvider.connect(running.address) as client:
            assert await client.next_definition_sequence("seq") == 1
            await running.stop()
            with pytest.raises(WfeError) as failed:
                await client.next_definition_sequence("seq")
    finally:
        await running.stop()
    assert (failed.value.code, failed.value.reason) == ("UNAVAILABLE", "UNAVAILABLE")
    # The same for any status that arrives without the server's ErrorInfo.
    bare = _error_from_rpc(grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, Metadata(), Metadata(), "late"))
    assert (type(bare), bare.code, bare.reason, bare.message) == (
        WfeError,
        "DEADLINE_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "late",
    )
