"""The client distribution on its own: what it declares, and that it works with nothing else installed."""

from __future__ import annotations

import os
import shutil
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
CLIENT_SOURCE = ("pyproject.toml", "README.md", "wfe", "wfe_client")
SERVER_ONLY = ("wfe_sqlite", "aiosqlite", "prometheus_client", "grpc_health", "grpc_reflection")


def _build_wheel(directory: Path, project: Path = CLIENT, names: tuple[str, ...] = CLIENT_SOURCE) -> Path:
    """The wheel of ``project``, built from a copy of its ``names``: setuptools builds in the
    source tree's build/, and would package what an earlier build left there (a file since left
    out of the package data would still be in)."""
    source = directory / f"{project.name}-source"
    for name in names:
        if (project / name).is_dir():
            shutil.copytree(project / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy(project / name, source / name)
    before = set(directory.glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(directory), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = set(directory.glob("*.whl")) - before
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


def test_a_server_install_without_the_dev_tools_serves(tmp_path: Path) -> None:
    """What ``make serve`` installs (the two packages and what they require, no ``[dev]`` extra)
    is enough to serve, with the console and the metrics: a module that imported a dev tool, or a
    console file left out of the package, would pass every other test (they run in the dev venv).

    Built as wheels and put in a venv of their own, with only the required distributions beside
    them, so that nothing of this checkout or of the dev venv can be imported by accident.
    """
    wheels = tmp_path / "wheels"
    _build_wheel(wheels)
    _build_wheel(wheels, ROOT, ("pyproject.toml", "README.md", "server"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         *map(str, wheels.glob("*.whl"))],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    needed = _closure({"wfe-sqlite-server"}) - {"wfe-sqlite-server", "wfe-sqlite-client"}
    dev_only = _closure({"pytest", "hypothesis", "playwright", "grpcio-tools", "cryptography"}) - needed
    dev_modules = sorted(
        module
        for module, distributions in metadata.packages_distributions().items()
        if {d.lower() for d in distributions} <= dev_only and module.isidentifier()
    )
    assert {"pytest", "grpc_tools", "hypothesis"} <= set(dev_modules)
    _link_distributions(needed, tmp_path / "deps")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "server-deps.pth").write_text(str(tmp_path / "deps") + "\n")

    script = f"""
import asyncio, importlib, importlib.util, pkgutil, re, subprocess, urllib.request
import wfe_sqlite, wfe_client
for module in pkgutil.walk_packages(wfe_sqlite.__path__, "wfe_sqlite."):
    importlib.import_module(module.name)  # every module imports without the dev tools
server = subprocess.Popen(
    [{str(venv / "bin" / "wfe-sqlite")!r}, "serve", "--db", {"sqlite:///" + str(tmp_path / "served.db")!r},
     "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0"],
    stdout=subprocess.PIPE, text=True)
try:
    address, metrics, console = (server.stdout.readline().split(" on ", 1)[1].strip() for _ in range(3))
    from wfe_client import GrpcPersistenceProvider, WorkflowInstance

    async def main():
        async with GrpcPersistenceProvider.connect(address) as store:
            wid = await store.create_new_workflow(WorkflowInstance.new("served", 1, {{"n": 1}}))
            print((await store.get_workflow_instance(wid)).workflow_definition_id)

    asyncio.run(main())
    print('grpc_method="CreateWorkflow"' in urllib.request.urlopen(metrics).read().decode())
    page = urllib.request.urlopen(console).read().decode()
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)  # the stylesheet, the icon, the script
    print(len(assets) == 3 and all(urllib.request.urlopen(console.rstrip("/") + a).read() for a in assets))
finally:
    server.terminate()
    print(server.wait(30))
for name in {dev_modules!r}:
    if importlib.util.find_spec(name) is not None:
        print("importable:", name)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == ["served", "True", "True", "0", ""], result.stdout + result.stderr
