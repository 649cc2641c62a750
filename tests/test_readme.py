"""The README runs as written: every fenced block, in order, from a fresh copy of the repository.

Each ``## `` section is one test and starts, as the README says, in a new terminal at the root of
the repository: a copy of this checkout (its tracked and untracked files, as a fresh clone has them,
plus links to the ``.venv`` and ``.tools`` that ``make test`` made), with the user's environment
(but a home directory of its own, and nothing of this checkout on the PATH). Within a section the
blocks run one after the other in that terminal: a ``cd`` or an ``export`` carries over to the
next block, as when they are typed. The server of ``make serve`` is a ``wfe-sqlite serve`` the
test starts; ``make serve`` itself runs in ``test_make_serve_from_a_fresh_clone``.

What a block prints (stdout and stderr, as a terminal shows them) must be what the ``text`` block
after it shows; a block without one must print nothing. In a ``text`` block a line ``...`` stands
for any lines, ``…`` for any text within a line; UUIDs, timestamps and the checkout's path
(``/path/to/wfe-sqlite``) may differ. The README's ports (50051 of ``make serve``, the others of its
examples) become free ports here, the same in every block and in what they print.

A block runs as a shell command unless a marker comment on the line before its fence says
otherwise (`` <!-- test: ... --> ``):

- ``skip: REASON``: not run here, for the reason given (``make test`` itself, a synopsis).
- ``by tests/test_x.py``: run by that test module (the Go and grpcurl sections: tests/test_go.py).
- ``file NAME``: saved as NAME in the current directory; a later block runs it.
- ``background``: started as if in another terminal (same directory and environment), kept
  running until the end; its ``text`` block is the first lines it prints.
- ``interactive``: started in the background like ``background``; the command it prints after a
  line ending in ``in another terminal:`` is run, then it must finish with exit code 0.
- ``rust main``: a Rust fragment, compiled and run as the body of an ``async fn main`` of the
  ``wfe-grpc`` crate's examples (with ``std::sync::Arc``, ``std::time::Duration``,
  ``wfe::WorkflowHostBuilder``, ``wfe::test_support::*`` and ``wfe::traits::*`` in scope).

Every block without a marker is run: each section's test checks that, and
``test_every_block_is_run_or_marked`` checks the markers themselves.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, WFE_SQLITE, ServerProcess
from test_rust_engine import order_flow_bin  # noqa: F401  (builds the Rust example)
from wfe_client import Event, GrpcLockProvider, GrpcPersistenceProvider, GrpcQueueProvider, QueueType

README = ROOT / "README.md"
CHECKOUT_PLACEHOLDER = "/path/to/wfe-sqlite"
BLOCK_TIMEOUT = 900  # a cold Rust build of the example comes first
OUTPUT_TIMEOUT = 60

MARKER = re.compile(r"^<!-- test: (.+?) -->$")
FENCE = re.compile(r"^```(\S*)\s*$")
ADDRESS = re.compile(r"\b(127\.0\.0\.1|localhost|0\.0\.0\.0):(\d{4,5})\b")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[+-]\d\d:\d\d|Z)?")
KINDS = ("skip:", "by ", "file ", "background", "interactive", "rust main")


# -- reading the README ------------------------------------------------------------------------------


@dataclass
class Block:
    """A fenced block of the README, with its marker and the ``text`` block showing what it prints."""

    lang: str
    code: str
    line: int
    section: str
    marker: str | None
    prints: str | None = None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.section}, ```{self.lang})"


def parse(text: str) -> list[Block]:
    """The README's fenced blocks in order; ``text`` blocks become the ``prints`` of the block before."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        opening = FENCE.match(line)
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md:{i + 1}: unclosed fence"
        marker = MARKER.match(lines[i - 1].strip()) if i > 0 else None
        block = Block(
            opening.group(1),
            "\n".join(lines[i + 1 : end]) + "\n",
            i + 1,
            section,
            marker.group(1).strip() if marker else None,
        )
        if block.lang == "text" and block.marker is None:
            before = blocks[-1] if blocks else None
            assert before is not None and before.prints is None and before.section == section, (
                f"{block}: a text block must follow the block whose output it shows"
            )
            before.prints = block.code
        else:
            blocks.append(block)
        i = end + 1
    return blocks


def sections(blocks: list[Block]) -> list[str]:
    return list(dict.fromkeys(b.section for b in blocks))


BLOCKS = parse(README.read_text())


def test_every_block_is_run_or_marked() -> None:
    """Unmarked blocks are shell commands (run by their section's test); markers are known and complete."""
    assert BLOCKS, "no blocks in the README"
    for block in BLOCKS:
        if block.marker is None:
            assert block.lang == "sh", f"{block}: only sh blocks run unmarked; mark it (see tests/test_readme.py)"
            continue
        assert block.marker.startswith(KINDS), f"{block}: unknown marker {block.marker!r}"
        if block.marker.startswith("skip:"):
            assert len(block.marker) > len("skip: ") + 10, f"{block}: say why it is not run"
        elif block.marker.startswith("by "):
            tester = ROOT / block.marker[3:]
            assert tester.is_file(), f"{block}: {tester} does not exist"
            assert "README" in tester.read_text(), f"{block}: {tester} does not read the README"
        elif block.marker.startswith("file "):
            assert re.fullmatch(r"file [\w.-]+", block.marker), f"{block}: file NAME"
            assert block.prints is None, f"{block}: a file prints nothing"
        elif block.marker in ("background", "interactive"):
            assert block.lang == "sh" and block.prints, f"{block}: show what it prints"
        elif block.marker == "rust main":
            assert block.lang == "rust", block


def test_the_matcher_tells_output_apart() -> None:
    """The comparison the README's blocks go through: wildcards, and what it does not forgive."""
    assert _matches("a\nb\nc\n", "a\n...\nc\n") and _matches("a\nc\n", "a\n...\nc\n")
    assert _matches("took 12 ms\n", "took … ms\n") and not _matches("took 12 ms\n", "took … s\n")
    assert _matches(f"id {UUID_EXAMPLE}\n", "id 00000000-0000-0000-0000-000000000000\n")
    assert not _matches("a\nb\n", "a\n") and not _matches("", "a\n") and not _matches("a\n", "")
    assert _matches("", "")


UUID_EXAMPLE = "5a0c4c8e-1f9b-4c64-9b8e-2d3c4b5a6f70"


# -- comparing output --------------------------------------------------------------------------------


def _normalized(text: str) -> str:
    text = UUID.sub("<uuid>", text)
    text = TIMESTAMP.sub("<time>", text)
    return text.rstrip("\n")


def _matches(printed: str, shown: str) -> bool:
    printed, shown = _normalized(printed), _normalized(shown)
    if not shown:
        return printed == ""
    pattern = []
    for line in shown.split("\n"):
        if line == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*?".join(re.escape(part) for part in line.split("…")) + r"\n")
    return re.fullmatch("".join(pattern), printed + "\n", re.S) is not None


# -- the terminal ------------------------------------------------------------------------------------


@dataclass
class Ports:
    """The README's ports and the free ones used in their place."""

    mapping: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, blocks: list[Block]) -> Ports:
        ports = cls()
        for block in blocks:
            for text in (block.code, block.prints or ""):
                for _, port in ADDRESS.findall(text):
                    if port not in ports.mapping:
                        ports.mapping[port] = str(_free_port())
        return ports

    def __call__(self, text: str) -> str:
        return ADDRESS.sub(lambda m: f"{m.group(1)}:{self.mapping.get(m.group(2), m.group(2))}", text)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Output:
    """Reads a background process's output on a thread, so it can be waited for line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout

        def pump() -> None:
            for line in stream:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def next_line(self, timeout: float) -> str | None:
        """The next line (None when the output ended); AssertionError after ``timeout`` seconds."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing printed within {timeout}s; so far:\n{''.join(self.lines)}") from None
        if line is not None:
            self.lines.append(line)
        return line

    def rest(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while self.next_line(max(deadline - time.monotonic(), 0.1)) is not None:
            pass
        return "".join(self.lines)


class Terminal:
    """A shell session in the copy of the repository: directory and environment carry over."""

    def __init__(self, checkout: Path, env: dict[str, str], ports: Ports, background: list[subprocess.Popen[str]]):
        self.checkout = checkout
        self.cwd = checkout
        self.env = dict(env)
        self.ports = ports
        self.background = background
        self._state = checkout.parent / ".terminal"
        self._state.mkdir(exist_ok=True)

    def shown(self, block: Block) -> str:
        return self.ports(block.prints or "")

    def printed(self, text: str) -> str:
        return text.replace(str(self.checkout), CHECKOUT_PLACEHOLDER)

    def check(self, block: Block, printed: str) -> None:
        printed = self.printed(printed)
        assert _matches(printed, self.shown(block)), (
            f"{block} printed:\n{printed}\n--- the README shows:\n{block.prints or '(nothing)'}"
        )

    def run(self, block: Block) -> None:
        marker = block.marker or ""
        code = self.ports(block.code)
        if marker.startswith("file "):
            (self.cwd / marker[len("file ") :]).write_text(code)
        elif marker == "background":
            output = self._spawn(code)
            shown = self.shown(block).rstrip("\n").split("\n")
            for _ in shown:
                if output.next_line(OUTPUT_TIMEOUT) is None:
                    break
            self.check(block, "".join(output.lines))
        elif marker == "interactive":
            self._interactive(block, code)
        elif marker == "rust main":
            self._rust_main(block, code)
        else:
            self.check(block, self.shell(code, block))

    def shell(self, code: str, block: Block | None = None) -> str:
        """Run ``code`` in bash here; what it printed. The directory and exported variables carry over."""
        script = f"{code}\n__status=$?\npwd > {self._state}/cwd\nenv -0 > {self._state}/env\nexit $__status\n"
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-o", "pipefail", "-c", script],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        assert result.returncode == 0, f"{block or code} exited {result.returncode}:\n{result.stdout}"
        self.cwd = Path((self._state / "cwd").read_text().strip())
        pairs = (entry.split("=", 1) for entry in (self._state / "env").read_text().split("\0") if "=" in entry)
        self.env = {name: value for name, value in pairs if name not in ("_", "SHLVL", "OLDPWD", "PWD")}
        return result.stdout

    def _spawn(self, code: str) -> Output:
        process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", code],
            cwd=self.cwd,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append(process)
        return Output(process)

    def _interactive(self, block: Block, code: str) -> None:
        process_output = self._spawn(code)
        process = self.background[-1]
        while True:
            line = process_output.next_line(BLOCK_TIMEOUT)
            assert line is not None, f"{block} ended before asking for a command:\n{''.join(process_output.lines)}"
            if line.rstrip().endswith("in another terminal:"):
                break
        command = process_output.next_line(OUTPUT_TIMEOUT)
        assert command, f"{block}: no command after the prompt"
        answer = self.shell(command.strip())
        assert answer == "", f"{block}: the command it printed printed:\n{answer}"
        try:
            printed = process_output.rest(BLOCK_TIMEOUT)
            assert process.wait(OUTPUT_TIMEOUT) == 0, f"{block} exited {process.returncode}:\n{printed}"
        finally:
            self.background.remove(process)  # done with, whatever happened: not one to stop at the end
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        self.check(block, printed)

    def _rust_main(self, block: Block, code: str) -> None:
        name = f"readme_block_{block.line}"
        body = "\n".join(f"    {line}" if line else "" for line in code.rstrip("\n").split("\n"))
        (self.checkout / "client" / "rust" / "examples" / f"{name}.rs").write_text(
            f"// {block}, as the body of main.\n"
            "#![allow(unused_imports)]\n"
            "use std::sync::Arc;\nuse std::time::Duration;\n"
            "use wfe::WorkflowHostBuilder;\nuse wfe::test_support::*;\nuse wfe::traits::*;\n\n"
            "#[tokio::main]\n"
            "async fn main() -> Result<(), Box<dyn std::error::Error>> {\n"
            f"{body}\n    Ok(())\n}}\n"
        )
        printed = self.shell(f"cargo run -q --manifest-path client/rust/Cargo.toml --example {name}", block)
        self.check(block, printed)


# -- the session: a copy of the repository, the server of `make serve` -----------------------------


def copy_checkout(destination: Path) -> Path:
    """The files a fresh clone of this checkout has (tracked and untracked, not ignored), mtimes kept."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists():
            continue  # deleted, not yet committed
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return destination


def base_environment(home: Path) -> dict[str, str]:
    """The user's environment, with a home of its own, the caches of the real one, and nothing of this checkout."""
    real_home = Path.home()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "GRPC_VERBOSITY", "PYTEST_CURRENT_TEST")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p).resolve().is_relative_to(ROOT)]
    env.update(
        PATH=os.pathsep.join(path),
        HOME=str(home),
        CARGO_HOME=os.environ.get("CARGO_HOME", str(real_home / ".cargo")),
        RUSTUP_HOME=os.environ.get("RUSTUP_HOME", str(real_home / ".rustup")),
        # Rust builds of the copy reuse the checkout's compiled dependencies.
        CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "client" / "rust" / "target"),
        CARGO_NET_OFFLINE="true",
        NPM_CONFIG_CACHE=os.environ.get("NPM_CONFIG_CACHE", str(real_home / ".npm")),
        NPM_CONFIG_PREFER_OFFLINE="true",
        NPM_CONFIG_UPDATE_NOTIFIER="false",
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(real_home / ".cache" / "pip")),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        GOPATH=os.environ.get("GOPATH", str(real_home / "go")),
        GOCACHE=os.environ.get("GOCACHE", str(real_home / ".cache" / "go-build")),
    )
    return env


@dataclass
class Session:
    checkout: Path
    env: dict[str, str]
    ports: Ports
    background: list[subprocess.Popen[str]]
    done: set[int] = field(default_factory=set)

    def terminal(self) -> Terminal:
        return Terminal(self.checkout, self.env, self.ports, self.background)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    base = tmp_path_factory.mktemp("readme")
    checkout = copy_checkout(base / "wfe-sqlite")
    for made in (".venv", ".tools"):  # made by `make install` / `make go-tools`, which `make test` runs first
        if (ROOT / made).exists():
            (checkout / made).symlink_to(ROOT / made)
    home = base / "home"
    home.mkdir()
    ports = Ports.of(BLOCKS)
    serve_db = base / "make-serve" / "wfe.db"
    serve_db.parent.mkdir()
    # What `make serve` runs, on the port the README's 50051 stands for.
    make_serve = subprocess.Popen(
        [str(WFE_SQLITE), "serve", "--db", f"sqlite://{serve_db}", "--listen", ports("127.0.0.1:50051")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    background: list[subprocess.Popen[str]] = [make_serve]
    assert make_serve.stdout is not None
    assert make_serve.stdout.readline().startswith("listening on "), "the server of make serve did not start"
    try:
        yield Session(checkout, base_environment(home), ports, background)
    finally:
        stopped = []
        for process in background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                stopped.append((process.args, process.wait(30)))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stopped.append((process.args, "killed"))
        failed = [(args, code) for args, code in stopped if code not in (0, -signal.SIGTERM)]
        assert not failed, f"background commands did not stop cleanly on SIGTERM: {failed}"


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("section", sections(BLOCKS))
def test_readme_section_runs_as_written(session: Session, section: str) -> None:
    terminal = session.terminal()
    mine = [b for b in BLOCKS if b.section == section]
    ran = []
    for block in mine:
        if block.marker is not None and block.marker.startswith(("skip:", "by ")):
            continue
        terminal.run(block)
        ran.append(block)
    unmarked = [b for b in mine if b.marker is None]
    assert all(b in ran for b in unmarked), "an unmarked block was not run"


# -- what the README says about the Rust example, beyond its blocks ---------------------------------


@pytest.mark.timeout(1800)
async def test_order_flow_explains_an_event_without_tracking(
    server_process: ServerProcess,
    order_flow_bin: Path,  # noqa: F811  (the fixture)
) -> None:
    """The README: an order.shipped without "tracking" suspends the workflow, and the example says so (exit 1)."""
    section = next(b for b in BLOCKS if b.marker == "interactive").section
    readme = README.read_text()
    said = 'order_flow: the\norder.shipped event for order-42 had no "tracking" in its data'
    assert "`status=Suspended`" in readme and said in readme, f"README's {section} no longer says it"
    example = subprocess.Popen(
        [str(order_flow_bin), server_process.address, "order-42"],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        output = Output(example)
        while not (output.next_line(120) or "").rstrip().endswith("in another terminal:"):
            pass
        async with GrpcPersistenceProvider.connect(server_process.address) as store:
            await store.create_event(Event.new("order.shipped", "order-42", {"carrier": "post"}))
        assert await asyncio.to_thread(example.wait, 60) == 1
    finally:
        if example.poll() is None:
            example.kill()
            example.wait(30)
    assert "status=Suspended" in output.rest(10)
    assert example.stderr is not None
    assert example.stderr.read().startswith(said.replace("\n", " ") + ", so the workflow is suspended; ")


@pytest.mark.timeout(120)
async def test_the_host_loop_sketch_runs(server_process: ServerProcess) -> None:
    """The sketch of a host loop in "Running several hosts" (skipped as a block: it loops for ever)
    imports what it names and runs: it takes a queued id under its lock and waits for the next."""
    (sketch,) = [b for b in BLOCKS if b.lang == "python" and b.marker is not None and b.marker.startswith("skip:")]
    names: dict[str, object] = {}
    exec(compile(sketch.code, str(sketch), "exec"), names)
    async with GrpcQueueProvider.connect(server_process.address) as queue_provider:
        await queue_provider.queue_work("sketch-1", QueueType.WORKFLOW)
        host_loop = names["host_loop"]
        assert callable(host_loop)
        with pytest.raises(TimeoutError):  # it loops for ever, without an error
            await asyncio.wait_for(host_loop(server_process.address), 2)
        assert await queue_provider.dequeue_work(QueueType.WORKFLOW) is None, "the loop took the queued id"
    async with GrpcLockProvider.connect(server_process.address) as locks:
        assert await locks.acquire_lock("sketch-1"), "the loop released its lock"


# -- make serve, from a fresh clone ------------------------------------------------------------------

DEV_TOOLS = ("pytest", "hypothesis", "py-spy", "grpcio-tools", "cryptography", "ruff", "mypy")


@pytest.mark.timeout(1800)
def test_make_serve_from_a_fresh_clone(tmp_path: Path) -> None:
    """``make serve`` in a fresh clone installs what serving needs, and nothing is printed before
    ``listening on`` but the commands make runs: no warnings. (Packages come from pip's cache or PyPI.)"""
    checkout = copy_checkout(tmp_path / "wfe-sqlite")
    env = base_environment(tmp_path / "home")
    (tmp_path / "home").mkdir()
    command = ["make", "--no-print-directory", "serve", f"DB=sqlite://{tmp_path / 'wfe.db'}", "LISTEN=127.0.0.1:0"]
    dry_run = subprocess.run([*command, "-n"], cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
    commands = set(dry_run.stdout.splitlines())
    make = subprocess.Popen(
        command,
        cwd=checkout,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = Output(make)
    try:
        while True:
            line = output.next_line(BLOCK_TIMEOUT)
            assert line is not None, f"make serve ended before listening:\n{''.join(output.lines)}"
            if line.startswith("listening on 127.0.0.1:"):
                break
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
        make.wait(60)
    before = output.lines[:-1]
    assert [line for line in before if line.rstrip("\n") not in commands] == [], (
        "make serve printed more than the commands it runs:\n" + "".join(before)
    )
    assert (tmp_path / "wfe.db").is_file()

    listed = subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    ).stdout
    installed = {line.split("==", 1)[0].lower() for line in listed.splitlines()}
    assert {"wfe-sqlite-server", "wfe-sqlite-client", "grpcio"} <= installed, installed
    assert not installed & set(DEV_TOOLS), f"make serve installed dev tools: {sorted(installed & set(DEV_TOOLS))}"
