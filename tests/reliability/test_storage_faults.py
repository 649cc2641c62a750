"""Storage faults: a full disk, and database files the server must refuse without touching.

The full disk is a small tmpfs mounted for the test (needs root; skipped with the reason when
mounting is not permitted). Writes must fail with RESOURCE_EXHAUSTED / STORAGE_FULL and a clear
message, earlier data must stay readable, and once space is freed writes succeed again without a
restart. Bad files (not SQLite, damaged, unreadable, read-only, on a read-only file system) must
stop start-up with a clear message and a non-zero exit, and their bytes must not change.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from reliability_support import WFE_SQLITE, integrity_check, start_server

from wfe_client import Event, GrpcPersistenceProvider, StorageFull, WfeError, WorkflowInstance

IS_ROOT = os.geteuid() == 0


def _mount_tmpfs(where: Path, size: str, *options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", "mode=0777", *options])
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs for the full-disk test (needs root / CAP_SYS_ADMIN): {result.stderr.strip()}"
        )


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "6m")
    try:
        yield disk
    finally:
        _umount(disk)


@pytest.mark.timeout(180)
async def test_full_disk_fails_writes_cleanly_and_recovers_once_space_is_freed(
    small_disk: Path, tmp_path: Path
) -> None:
    db = small_disk / "full.db"
    server = start_server(f"sqlite://{db}", tmp_path / "server.log")
    try:
        async with GrpcPersistenceProvider.connect(server.address, timeout=30) as store:
            kept = []
            for i in range(10):
                w = WorkflowInstance.new("full-flow", 1, {"i": i, "text": "é" * 1000})
                await store.create_new_workflow(w)
                kept.append(await store.get_workflow_instance(w.id))
            event = Event.new("full", "k", {"kept": True})
            await store.create_event(event)
            kept_event = await store.get_event(event.id)
            # Ballast that leaves about 1.5 MiB, freed later to give the server room again.
            ballast = small_disk / "ballast"
            free = shutil.disk_usage(small_disk).free
            with open(ballast, "wb") as handle:
                handle.write(b"\0" * max(0, free - 1536 * 1024))

            failures: list[WfeError] = []
            written = 0
            for i in range(400):  # 400 x 64 KiB = 25 MiB: far more than the disk holds
                try:
                    await store.create_new_workflow(WorkflowInstance.new("full-flow", 1, {"blob": "x" * 65536, "n": i}))
                    written += 1
                except WfeError as error:
                    failures.append(error)
                    if len(failures) >= 5:
                        break
            assert failures, f"the disk never filled up ({written} writes)"
            for error in failures:
                assert isinstance(error, StorageFull), f"{type(error).__name__} {error.code}: {error.message}"
                assert error.reason == "STORAGE_FULL" and error.code == "RESOURCE_EXHAUSTED"
                assert "full" in error.message, error.message
            # Small writes of every kind fail the same way (or fit); reads keep working.
            for attempt in (
                store.create_event(Event.new("full", "k2", {"x": "y" * 200_000})),
                store.next_definition_sequence("full"),
            ):
                try:
                    await attempt
                except WfeError as error:
                    assert isinstance(error, StorageFull), f"{type(error).__name__}: {error.message}"
            for w in kept:
                assert await store.get_workflow_instance(w.id) == w
            assert await store.get_event(event.id) == kept_event
            assert server.alive()

            ballast.unlink()  # free the space: the server must recover by itself
            recovered = None
            for _ in range(50):
                try:
                    recovered = WorkflowInstance.new("full-flow", 1, {"after": "recovery"})
                    await store.create_new_workflow(recovered)
                    break
                except StorageFull:
                    recovered = None
                    await asyncio.sleep(0.1)
            assert recovered is not None, "writes still fail after space was freed"
            assert (await store.get_workflow_instance(recovered.id)).data == {"after": "recovery"}
            for w in kept:
                assert await store.get_workflow_instance(w.id) == w
    finally:
        code = server.terminate()
    assert code == 0, server.log()[-3000:]
    assert "internal error" not in server.log()
    assert integrity_check(db) == "ok"


@pytest.mark.timeout(120)
async def test_size_cap_fails_writes_cleanly_and_recovers_when_pages_are_freed(tmp_path: Path) -> None:
    """The same without a mount: a page-count cap (WFE_SQLITE_MAX_PAGE_COUNT, PRAGMA max_page_count).

    Space is freed through the API: shrinking a big workflow frees its pages for new writes.
    """
    db = tmp_path / "capped.db"
    server = start_server(f"sqlite://{db}", tmp_path / "server.log", env={"WFE_SQLITE_MAX_PAGE_COUNT": "400"})
    try:
        async with GrpcPersistenceProvider.connect(server.address, timeout=30) as store:
            kept = []
            for i in range(10):
                w = WorkflowInstance.new("cap-flow", 1, {"i": i})
                await store.create_new_workflow(w)
                kept.append(await store.get_workflow_instance(w.id))
            balloon = WorkflowInstance.new("cap-flow", 1, {"blob": "b" * 600_000})
            await store.create_new_workflow(balloon)
            failure = None
            for _ in range(100):
                try:
                    await store.create_new_workflow(WorkflowInstance.new("cap-flow", 1, {"blob": "x" * 65536}))
                except WfeError as error:
                    failure = error
                    break
            assert isinstance(failure, StorageFull), failure
            assert failure.code == "RESOURCE_EXHAUSTED" and "full" in failure.message
            for w in kept:
                assert await store.get_workflow_instance(w.id) == w
            balloon.data = {"blob": "shrunk"}
            await store.persist_workflow(balloon)  # frees ~150 pages
            after = WorkflowInstance.new("cap-flow", 1, {"blob": "y" * 65536})
            await store.create_new_workflow(after)
            assert (await store.get_workflow_instance(after.id)).data == after.data
            assert (await store.get_workflow_instance(balloon.id)).data == {"blob": "shrunk"}
    finally:
        code = server.terminate()
    assert code == 0, server.log()[-3000:]
    assert integrity_check(db) == "ok"


# -- files the server must refuse ------------------------------------------------------------------


def _sqlite_file(path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE precious (x)")
    conn.execute("INSERT INTO precious VALUES ('do not touch')")
    conn.commit()
    conn.close()


def _run_serve(db: Path, *, prefix: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, str(WFE_SQLITE), "serve", "--db", f"sqlite://{db}", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _refused(db: Path, expected: str, *, prefix: Sequence[str] = ()) -> None:
    before = db.read_bytes() if os.access(db, os.R_OK) else None
    stat_before = db.stat()
    siblings_before = sorted(p.name for p in db.parent.iterdir())
    result = _run_serve(db, prefix=prefix)
    assert result.returncode != 0, f"server started on a bad file: {result.stdout}"
    assert "listening on" not in result.stdout
    assert expected in result.stderr, result.stderr
    assert str(db) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    if before is not None:
        assert db.read_bytes() == before, "the file was modified"
    assert db.stat().st_mtime_ns == stat_before.st_mtime_ns and db.stat().st_size == stat_before.st_size
    assert sorted(p.name for p in db.parent.iterdir()) == siblings_before, "files were created next to it"


@pytest.mark.parametrize(
    "kind,content,expected",
    [
        ("random-bytes", os.urandom(8192), "not a SQLite database"),
        ("text", b"name,value\nprecious,1\n", "not a SQLite database"),
        ("short", b"SQLite", "not a SQLite database"),
        ("damaged", b"SQLite format 3\x00" + os.urandom(8192), "not a database"),
    ],
)
def test_not_a_database_is_refused_and_untouched(tmp_path: Path, kind: str, content: bytes, expected: str) -> None:
    db = tmp_path / f"{kind}.db"
    db.write_bytes(content)
    _refused(db, expected)


def _without_root_powers() -> list[str]:
    """Root reads and writes any file: run the server without CAP_DAC_OVERRIDE/READ_SEARCH then."""
    if not IS_ROOT:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing to drop the file-access capabilities")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.mark.parametrize("mode,expected", [(0o000, "permission denied"), (0o444, "read-only")])
def test_unreadable_or_read_only_file_is_refused_and_untouched(tmp_path: Path, mode: int, expected: str) -> None:
    db = tmp_path / "precious.db"
    _sqlite_file(db)
    before = db.read_bytes()
    db.chmod(mode)
    try:
        _refused(db, expected, prefix=_without_root_powers())
    finally:
        db.chmod(0o644)
    assert db.read_bytes() == before
    import sqlite3

    assert sqlite3.connect(db).execute("SELECT x FROM precious").fetchall() == [("do not touch",)]


def test_database_on_a_read_only_file_system_is_refused(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "4m")
    try:
        db = mount / "precious.db"
        _sqlite_file(db)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        _refused(db, "read-only")
    finally:
        _umount(mount)


def test_empty_file_becomes_a_database(tmp_path: Path) -> None:
    """The one file the server may write to: an empty one (a fresh database), then it serves."""
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    server = start_server(f"sqlite://{db}", tmp_path / "server.log")
    assert server.terminate() == 0
    assert integrity_check(db) == "ok"
