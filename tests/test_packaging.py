"""The client distribution on its own: what it declares, and that it works with nothing else installed."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from conftest import ROOT, ServerProcess

CLIENT = ROOT / "client" / "python"
CLIENT_REQUIRES = {"grpcio", "protobuf", "googleapis-common-protos", "msgspec"}
SERVER_ONLY = ("wfe_sqlite", "aiosqlite", "prometheus_client", "grpc_health", "grpc_reflection")


def _build_wheel(directory: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(directory), str(CLIENT)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = directory.glob("wfe_sqlite_client-*.whl")
    return wheel


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` need, transitively, as installed here (extras left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = metadata.distribution(todo.pop()).metadata["Name"].lower()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _link_distributions(names: set[str], target: Path) -> None:
    """Symlink every installed file of these distributions into ``target`` (a site directory)."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for name in names:
        for file in metadata.distribution(name).files or ():
            source = Path(file.locate()).resolve()
            if site not in source.parents or not source.is_file():
                continue  # scripts, or files outside site-packages
            link = target / source.relative_to(site)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source)


def test_the_client_wheel_declares_only_the_client_and_its_transport(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]  # fmt: skip
    assert {Requirement(r).name for r in requires} == CLIENT_REQUIRES
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"wfe_client", "wfe"}
    assert "wfe/persistence/v1/workflows_pb2.pyi" in names and "wfe_client/py.typed" in names


def test_a_client_only_install_talks_to_a_server(tmp_path: Path, server_process: ServerProcess) -> None:
    """A fresh virtualenv holding the client wheel and only the distributions it requires."""
    wheel = _build_wheel(tmp_path / "wheels")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    needed = _closure(CLIENT_REQUIRES)
    assert not needed & {"aiosqlite", "prometheus-client", "wfe-sqlite-server", "grpcio-health-checking"}
    _link_distributions(needed, tmp_path / "deps")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "client-deps.pth").write_text(str(tmp_path / "deps") + "\n")
    script = f"""
import asyncio, importlib.util
from wfe_client import GrpcPersistenceProvider, WorkflowInstance

async def main():
    async with GrpcPersistenceProvider.connect({server_process.address!r}) as store:
        wid = await store.create_new_workflow(WorkflowInstance.new("client-only", 1, {{"n": 2**63 - 1}}))
        print((await store.get_workflow_instance(wid)).data["n"])

asyncio.run(main())
for name in {SERVER_ONLY!r}:
    print(name, importlib.util.find_spec(name) is not None)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == str(2**63 - 1)
    assert lines[1:6] == [f"{name} False" for name in SERVER_ONLY]
