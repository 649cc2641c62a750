"""Proof 3 of the cluster: a partition, not a crash.

One Python host (``cluster_host.py``) runs in its own network namespace, joined to the server's by a
veth pair; the server listens on the veth address in the test's namespace, where two more hosts
reach it directly. While the cut-off host holds a lock mid-step, the link goes down for longer than
the TTL: its lease runs out, another host takes the workflow over and runs the step again. When the
link comes back, the cut-off host's persist (made with the revision it read) is refused, so the stored
workflow never goes back. Loopback and the test's own namespaces only; needs root and iproute2.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import start_server_process
from wfe_client import ExecutionPointer, GrpcPersistenceProvider, WorkflowInstance, WorkflowStatus

HOST = Path(__file__).resolve().parent / "cluster_host.py"
TTL_MS = 1500
WORKFLOWS = 30

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (ip netns, ip link)"
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Link:
    """A network namespace joined to this one by a veth pair (``server_ip`` here, ``.2`` there)."""

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.namespace = f"wfe-part-{tag}"
        self.outside, self.inside = f"wfeo{tag}", f"wfei{tag}"
        subnet = f"10.{200 + tag % 50}.{tag % 250}"
        self.server_ip, self.host_ip = f"{subnet}.1", f"{subnet}.2"

    def create(self) -> None:
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        _ip("link", "set", self.inside, "netns", self.namespace)
        _ip("addr", "add", f"{self.server_ip}/24", "dev", self.outside)
        _ip("link", "set", self.outside, "up")
        _ip("netns", "exec", self.namespace, "ip", "addr", "add", f"{self.host_ip}/24", "dev", self.inside)
        _ip("netns", "exec", self.namespace, "ip", "link", "set", self.inside, "up")
        _ip("netns", "exec", self.namespace, "ip", "link", "set", "lo", "up")

    def cut(self) -> None:
        _ip("link", "set", self.outside, "down")

    def mend(self) -> None:
        _ip("link", "set", self.outside, "up")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, timeout=30)


@pytest.fixture
def link() -> Iterator[Link]:
    made = Link()
    made.remove()  # leftovers of an earlier run with the same pid
    made.create()
    try:
        yield made
    finally:
        made.remove()


def _host(address: str, name: str, log: Path, step_seconds: float, namespace: str | None) -> subprocess.Popen[str]:
    command = [sys.executable, str(HOST), address, name, str(log), "--ttl-ms", str(TTL_MS)]
    command += ["--step-seconds", str(step_seconds)]
    if namespace is not None:
        command = ["ip", "netns", "exec", namespace, *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _readline(process: subprocess.Popen[str], within: float = 60) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), within)
    assert line, f"host ended: {process.stderr.read() if process.stderr else ''}"
    return line.strip()


async def test_a_cut_off_host_loses_its_lease_and_its_stale_persist_is_refused(link: Link, tmp_path: Path) -> None:
    server = start_server_process(
        f"sqlite://{tmp_path / 'wfe.db'}", "--listen", f"{link.server_ip}:0", "--insecure", "--requeue-interval", "0.5"
    )
    log = tmp_path / "steps.log"
    hosts: dict[str, subprocess.Popen[str]] = {}
    try:
        async with GrpcPersistenceProvider.connect(server.address) as store:
            hosts["cut-off"] = _host(server.address, "cut-off", log, 4.0, link.namespace)
            for name in ("host-1", "host-2"):
                hosts[name] = _host(server.address, name, log, 0.01, None)
            for process in hosts.values():
                assert await _readline(process) == "ready"
            ids = []
            for i in range(WORKFLOWS):
                w = WorkflowInstance.new("three-steps", 1, {"step": 0, "n": i})
                w.execution_pointers = [ExecutionPointer.new(s) for s in range(3)]
                ids.append(await store.create_new_workflow(w))

            # The cut-off host starts a step (4 s long) holding the lock: cut its link for 5 s.
            cut_off = hosts["cut-off"]
            line = await _readline(cut_off)
            while not line.startswith("holding "):
                line = await _readline(cut_off)
            _, workflow_id, step = line.split()
            link.cut()
            cut_at = time.monotonic()
            # Meanwhile another host takes the workflow over once the lease has run out.
            while True:
                w = await store.get_workflow_instance(workflow_id)
                if w.data["step"] > int(step):
                    break
                assert time.monotonic() - cut_at < 4.5, "no host took the workflow over while the link was down"
                await asyncio.sleep(0.05)
            taken_over_after = time.monotonic() - cut_at
            assert w.data[f"by_{step}"] != "cut-off"
            revision_after_takeover = w.revision
            await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - cut_at)))
            link.mend()

            # The cut-off host's step ends; its persist is refused (its revision is stale).
            line = await _readline(cut_off, within=60)
            assert line == f"conflict {workflow_id} {step}", line

            deadline = time.monotonic() + 120
            while True:
                stored = await store.get_workflow_instances(ids)
                if all(x.status == WorkflowStatus.COMPLETE for x in stored):
                    break
                assert time.monotonic() < deadline, "not every workflow completed"
                await asyncio.sleep(0.2)
            final = next(x for x in stored if x.id == workflow_id)
            assert final.revision >= revision_after_takeover
            for x in stored:
                assert x.revision == 4 and x.data["step"] == 3, (x.id, x.revision, x.data)
    finally:
        for process in hosts.values():
            process.terminate()
        for process in hosts.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        server.kill()

    runs: collections.Counter[tuple[str, int]] = collections.Counter()
    for entry in log.read_text().splitlines():
        wid, n, _ = entry.split()
        runs[(wid, int(n))] += 1
    twice = {key: count for key, count in runs.items() if count != 1}
    assert twice == {(workflow_id, int(step)): 2}, twice  # the step in flight ran on both sides
    assert set(runs) == {(wid, n) for wid in ids for n in range(3)}
    print(f"taken over {taken_over_after:.1f} s after the cut (TTL {TTL_MS / 1000:.1f} s)")
