"""The README's Go, grpcurl and health-probe sections run as written against real ``wfe-sqlite serve``.

The commands are taken from the README, with only the address of `make serve` replaced by the test
server's, and what they print is compared with the output the README shows, so the README cannot
drift. The Go tools (protoc-gen-go, protoc-gen-go-grpc, grpcurl, grpc-health-probe) and the modules
of examples/go come from `make go-tools`, which `make test` runs before pytest; the tests use no
network (GOPROXY=off).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, ServerProcess, start_server_process
from test_security import Pki, pki  # noqa: F401  (the module's certificates fixture)
from wfe_client import GrpcPersistenceProvider, PointerStatus, WorkflowStatus

README = ROOT / "README.md"
TOOLS_BIN = ROOT / ".tools" / "bin"
GO_TOOLS = ("protoc-gen-go", "protoc-gen-go-grpc", "grpcurl", "grpc-health-probe")
GO_GEN = ROOT / "examples" / "go" / "gen"
README_ADDRESS = "127.0.0.1:50051"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMEOUT = 240  # a cold Go build cache compiles grpc first


@dataclass
class Block:
    """A ``sh`` block of the README and the ``text`` block after it (what it prints), if any."""

    code: str
    prints: str | None


def _section(heading: str) -> str:
    text = README.read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README lost its section '## {heading}'"
    return match.group(1)


def _fenced(section: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, re.S | re.M)


def _blocks(section: str) -> list[Block]:
    blocks: list[Block] = []
    for lang, body in _fenced(section):
        if lang == "sh":
            blocks.append(Block(body, None))
        elif lang == "text":
            assert blocks and blocks[-1].prints is None, f"a text block follows no command:\n{body}"
            blocks[-1].prints = body
    return blocks


def _go_env() -> dict[str, str]:
    """The environment of a README command: no module downloads, no toolchain switch."""
    flags = f"{os.environ.get('GOFLAGS', '')} -mod=readonly".strip()
    return {**os.environ, "GOPROXY": "off", "GOFLAGS": flags, "GOTOOLCHAIN": "local"}


def _run(code: str, address: str, cwd: Path = ROOT, *, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a README block in bash with the address replaced; stdout and stderr together, as a terminal shows them."""
    script = code
    if address:
        assert README_ADDRESS in code or "localhost:50051" in code, code
        port = address.rsplit(":", 1)[1]
        script = code.replace(README_ADDRESS, address).replace("localhost:50051", f"localhost:{port}")
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script] if check else ["bash", "-c", script],
        cwd=cwd,
        env=_go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )


def _same(printed: str, shown: str) -> bool:
    """Equal but for UUIDs (new on every run)."""
    return UUID.sub("<uuid>", printed) == UUID.sub("<uuid>", shown)


@pytest.fixture(scope="module", autouse=True)
def go_tools() -> None:
    missing = [tool for tool in GO_TOOLS if not (TOOLS_BIN / tool).is_file()]
    if missing:
        pytest.fail(f"Go tools missing in {TOOLS_BIN}: {', '.join(missing)}; run 'make go-tools' (make test does)")


# -- Go ------------------------------------------------------------------------------------------


async def test_readme_go_example_runs_against_a_live_server(server_process: ServerProcess) -> None:
    blocks = _blocks(_section("Using it from Go"))
    run = next(b for b in blocks if "go -C examples/go run" in b.code)
    assert run.prints, "README shows no output for the Go example"
    result = _run(run.code, server_process.address)
    assert result.returncode == 0, result.stdout
    assert _same(result.stdout, run.prints), f"printed:\n{result.stdout}\nREADME shows:\n{run.prints}"

    # What it says it wrote is in the store, read back through the Python adapter.
    workflow_id = _printed_id("created workflow", result.stdout)
    event_id = _printed_id("published event", result.stdout)
    async with GrpcPersistenceProvider.connect(server_process.address) as store:
        workflow = await store.get_workflow_instance(workflow_id)
        event = await store.get_event(event_id)
    assert (workflow.name, workflow.workflow_definition_id) == ("order-flow-1", "order-flow")
    assert workflow.data == {"order": 42}
    assert workflow.status == WorkflowStatus.RUNNABLE
    [step] = workflow.execution_pointers
    assert (step.status, step.event_name, step.event_key) == (PointerStatus.WAITING_FOR_EVENT, "order.paid", "42")
    assert (event.event_name, event.event_key, event.event_data, event.is_processed) == (
        "order.paid",
        "42",
        {"amount": 99.5},
        False,
    )


def _printed_id(label: str, printed: str) -> str:
    match = re.search(rf"^{label} \S+ \(id ({UUID.pattern})\)$", printed, re.M)
    assert match, f"no '{label}' line with an id in:\n{printed}"
    return match.group(1)


def test_go_example_fails_when_no_server_answers() -> None:
    run = next(b for b in _blocks(_section("Using it from Go")) if "go -C examples/go run" in b.code)
    result = _run(run.code, _closed_address())
    assert result.returncode == 1, result.stdout
    assert "example: CreateWorkflow: rpc error: code = Unavailable" in result.stdout


def test_go_example_is_vetted_and_formatted() -> None:
    vet = subprocess.run(
        ["go", "-C", "examples/go", "vet", "./..."],
        cwd=ROOT,
        env=_go_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert vet.returncode == 0, vet.stderr
    unformatted = subprocess.run(["gofmt", "-l", "examples/go"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert unformatted.returncode == 0 and unformatted.stdout == "", unformatted.stdout + unformatted.stderr


def test_readme_go_generation_command_makes_the_committed_stubs(tmp_path: Path) -> None:
    """The README's protoc line, pointed at an empty directory, makes exactly the committed stubs."""
    generate = next(b for b in _blocks(_section("Using it from Go")) if "grpc_tools.protoc" in b.code)
    out = tmp_path / "gen"
    out.mkdir()
    assert generate.code.count("examples/go/gen") == 2
    result = _run(generate.code.replace("examples/go/gen", str(out)), "", check=True)
    assert result.returncode == 0, result.stdout
    made = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(GO_GEN) for p in GO_GEN.rglob("*") if p.is_file())
    assert made == committed and Path("wfe/persistence/v1/errors.pb.go") in made, (made, committed)
    _, mismatch, errors = filecmp.cmpfiles(out, GO_GEN, [str(p) for p in made], shallow=False)
    assert not mismatch and not errors, f"stale Go stubs (run 'make protos'): {mismatch or errors}"


# -- grpcurl and health probes -----------------------------------------------------------------------


def _grpcurl_blocks() -> list[Block]:
    return _blocks(_section("grpcurl and health probes"))


def _probe_block() -> Block:
    probes = [b for b in _grpcurl_blocks() if b.code.startswith(".tools/bin/grpc-health-probe")]
    return next(b for b in probes if "-tls" not in b.code)


def test_readme_grpcurl_and_probe_commands_print_what_the_readme_shows(server_process: ServerProcess) -> None:
    blocks = [b for b in _grpcurl_blocks() if "-tls" not in b.code]
    commands = " ".join(b.code for b in blocks)
    examples = (" list", " describe ", "EventService/CreateEvent", "WorkflowService/GetWorkflow", "grpc-health-probe")
    for needed in examples:
        assert needed in commands, f"README lost its '{needed.strip()}' example"
    for block in blocks:
        assert block.prints is not None, f"README shows no output for:\n{block.code}"
        result = _run(block.code, server_process.address)
        assert result.returncode == 0, f"{block.code}\n{result.stdout}"
        difference = f"{block.code}\nprinted:\n{result.stdout}\nREADME shows:\n{block.prints}"
        assert _same(result.stdout, block.prints), difference
    shown = [b.prints or "" for b in blocks]
    assert any('"reason": "WORKFLOW_NOT_FOUND"' in text and "exit code 69" in text for text in shown)


def test_readme_kubernetes_probe_runs_the_tested_command() -> None:
    section = _section("grpcurl and health probes")
    [yaml] = [body for lang, body in _fenced(section) if lang == "yaml"]
    commands = [json.loads(line.split("command:", 1)[1]) for line in yaml.splitlines() if "command:" in line]
    tested = _probe_block().code.split(";")[0].split()
    assert tested[0] == ".tools/bin/grpc-health-probe"
    assert commands and all(command == ["grpc-health-probe", *tested[1:]] for command in commands), commands


def test_health_probe_needs_no_token_where_every_other_call_does(db_url: str) -> None:
    server = start_server_process(db_url, env={"WFE_SQLITE_TOKENS": "probe-test-token"})
    try:
        probe = _probe_block()
        result = _run(probe.code, server.address)
        assert _same(result.stdout, probe.prints or ""), result.stdout
        listing = _run(f".tools/bin/grpcurl -plaintext {README_ADDRESS} list", server.address)
        assert listing.returncode != 0 and "Unauthenticated" in listing.stdout, listing.stdout
    finally:
        server.kill()


def test_health_probe_over_mutual_tls(pki: Pki, db_url: str, tmp_path: Path) -> None:  # noqa: F811
    [tls] = [b for b in _grpcurl_blocks() if b.code.startswith(".tools/bin/grpc-health-probe") and "-tls" in b.code]
    # The README's file names, in the directory the command runs in.
    for source, name in ((pki.ca, "ca.crt"), (pki.client_cert, "client.crt"), (pki.client_key, "client.key")):
        shutil.copy(source, tmp_path / name)
    code = tls.code.replace(".tools/bin/", f"{TOOLS_BIN}/")
    server = start_server_process(
        db_url, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca)
    )
    try:
        result = _run(code, server.address, tmp_path)
        assert result.returncode == 0 and _same(result.stdout, tls.prints or ""), result.stdout
        # Without the client certificate the handshake fails: the probe says no connection (exit 2).
        without = re.sub(r" -tls-client-(cert|key)=\S+", "", code.split(";")[0])
        refused = _run(without, server.address, tmp_path)
        assert refused.returncode == 2, refused.stdout
    finally:
        server.kill()


def test_health_probe_fails_when_no_server_answers() -> None:
    result = _run(_probe_block().code, _closed_address())
    assert result.stdout.splitlines()[-1] == "exit code 2", result.stdout


# -- make go-tools ---------------------------------------------------------------------------------


def _pins() -> dict[str, str]:
    """The Makefile's Go tool pins: binary name -> version."""
    makefile = (ROOT / "Makefile").read_text()
    pins = dict(re.findall(r"[\w./-]+/([\w-]+)@(v[0-9][\w.-]*)", makefile))
    assert set(pins) == set(GO_TOOLS), pins
    return pins


def test_installed_go_tools_and_readme_versions_are_the_pinned_ones() -> None:
    pins = _pins()
    for tool, version in pins.items():
        built = subprocess.run(
            ["go", "version", "-m", str(TOOLS_BIN / tool)], capture_output=True, text=True, timeout=60
        )
        assert re.search(rf"^\s+mod\s+\S+\s+{re.escape(version)}\s", built.stdout, re.M), (tool, built.stdout)
    section = _section("grpcurl and health probes")
    for tool in ("grpcurl", "grpc-health-probe"):
        named = re.findall(rf"(?<![\w-]){tool} (v[0-9][\w.-]*)", section)
        assert named == [pins[tool]], (tool, named)


def test_go_tools_fail_with_a_message_when_the_proxy_cannot_be_reached(tmp_path: Path) -> None:
    proxy = f"http://{_closed_address()}"
    env = {
        **os.environ,
        "GOPROXY": proxy,
        "GOSUMDB": "off",
        "GOMODCACHE": str(tmp_path / "mod"),
        "GOFLAGS": "-modcacherw",
    }
    result = subprocess.run(
        ["make", "--no-print-directory", "go-tools", f"TOOLS={tmp_path / 'tools'}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout
    message = (
        r"make go-tools: could not build google\.golang\.org/protobuf/cmd/protoc-gen-go@v[0-9.]+ "
        rf"from the Go module proxy \(GOPROXY={re.escape(proxy)}\); see the error above"
    )
    assert re.search(message, result.stdout), result.stdout
    assert not (tmp_path / "tools" / "bin").exists()


def _closed_address() -> str:
    """A loopback address where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"
