"""Interop: records written through one language's adapter read back through the other two,
field for field (issue 3, part 5).

Three small programs, one per adapter, speak the same command line:

- Python: ``tests/interop_py.py`` on ``wfe_client.GrpcPersistenceProvider``;
- Rust: ``client/rust/examples/interop.rs`` on ``wfe_grpc::GrpcPersistenceProvider`` (models are
  ``wfe_core::models``); the binary is ``$WFE_INTEROP_RUST_BIN`` if set, else built here with
  ``cargo build --locked --example interop`` (a no-op after client/rust/run-tests.sh);
- TypeScript: ``client/typescript/scripts/interop.mjs`` on the compiled package
  (``client/typescript/dist``, built here with ``npm run build`` when missing).

``PROGRAM write ADDR FIXTURE.json`` creates the records of the fixture below (create_new_workflow,
create_event, create_event_subscription); ``PROGRAM read ADDR KIND:ID ...`` prints them as canonical
JSON. The fixture is written once, here, in that canonical form and handed to every writer as a
file, so all three write exactly the same data.

Canonical JSON: snake_case field names as in WFE, every field present (absent optional = ``null``),
instants as RFC 3339 UTC strings with exactly six fractional digits, enums as their upper-case names,
JSON values embedded as JSON (so 64-bit integers stay exact and are compared exactly here).

For each writer a fresh server process is started, the writer writes, and each of the three readers
reads everything back; the 3 x 3 cells are checked separately so a failure names the pair.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, start_server_process

ROOT = Path(__file__).resolve().parent.parent
CRATE = ROOT / "client" / "rust"
TS_PACKAGE = ROOT / "client" / "typescript"
PY_PROGRAM = Path(__file__).resolve().parent / "interop_py.py"
TS_PROGRAM = TS_PACKAGE / "scripts" / "interop.mjs"

LANGUAGES = ("python", "rust", "typescript")

# Building the Rust example (and the TypeScript package) may take minutes on a fresh clone or
# while another cargo holds the target directory's lock; every program run has its own timeout.
pytestmark = pytest.mark.timeout(1800)

UNICODE = "emoji 🚀👩‍👩‍👧🏳️‍🌈 CJK 漢字かなカナ한국어 combining e\u0301 a\u0308\u0323 Z̤͔ͧ̑̓ RTL שלום مرحبا"
ESCAPES = 'quote " backslash \\ slash / newline \n tab \t cr \r nul \x00 bell \x07 del \x7f ls \u2028 bom \ufeff'

BIG = {
    "2**62": 2**62,
    "-2**63": -(2**63),
    "2**64-1": 2**64 - 1,
    "2**63-1": 2**63 - 1,
    "2**53+1": 2**53 + 1,
    "-(2**53+1)": -(2**53 + 1),
}

WORKFLOW_DATA = {
    "big": BIG,
    "big_list": [2**62, -(2**63), 2**64 - 1, 0, -1],
    "floats": [0.1, -2.5e-8, 1e300, 3.141592653589793, 5e-324, 1.7976931348623157e308, -0.5],
    "unicode": UNICODE,
    "escapes": ESCAPES,
    "🔑 キー é": {"nested": [[], {}, "", True, False, None, 0, [[[2**64 - 1]]]]},
    "empty_object": {},
    "empty_list": [],
    "null": None,
}

FULL_POINTER_1 = {
    "id": "interop-pointer-1",
    "step_id": 0,
    "active": False,
    "status": "WAITING_FOR_EVENT",
    "sleep_until": "2024-02-29T23:59:59.999999Z",
    "persistence_data": {"counter": 2**62, "text": UNICODE, "list": [1, 2.5, None, True]},
    "start_time": "1970-01-01T00:00:00.000001Z",
    "end_time": "2024-03-10T10:00:00.000000Z",
    "event_name": "order.paid 支払い 💳",
    "event_key": "ключ-42-e\u0301",
    "event_published": True,
    "event_data": [-(2**63), 2**64 - 1, {"ok": True}, ESCAPES],
    "step_name": "Step ① 🧪 ステップ",
    "retry_count": 4294967295,
    "children": ["interop-pointer-2", "interop-pointer-3-🚀", "子"],
    "context_item": {"item": 2**64 - 1, "index": 3},
    "predecessor_id": "interop-pointer-0-前",
    "outcome": 2**62,
    "scope": ["scope-外", "scope-🌍", "s\u0301"],
    "extension_attributes": {
        "plain": 1,
        "big": 2**64 - 1,
        "neg": -(2**63),
        "ユニコード": "値 🎉",
        "obj": {"a": [1, 2.5, None], "b": {"c": "d"}},
        "null": None,
        "false": False,
        "float": 0.1,
    },
}

# Falsy but present values and empty strings: must not turn into "absent".
FULL_POINTER_2 = {
    "id": "interop-pointer-2",
    "step_id": 4294967295,
    "active": True,
    "status": "PENDING_PREDECESSOR",
    "sleep_until": "9999-12-31T23:59:59.999999Z",
    "persistence_data": 0,
    "start_time": "2000-01-01T00:00:00.500000Z",
    "end_time": "2000-01-01T00:00:00.500001Z",
    "event_name": "",
    "event_key": "",
    "event_published": False,
    "event_data": "",
    "step_name": "",
    "retry_count": 0,
    "children": [],
    "context_item": False,
    "predecessor_id": "",
    "outcome": [],
    "scope": [""],
    "extension_attributes": {"": ""},
}

# Every optional field absent.
MINIMAL_POINTER = {
    "id": "interop-pointer-3-🚀",
    "step_id": 2,
    "active": True,
    "status": "COMPENSATED",
    "sleep_until": None,
    "persistence_data": None,
    "start_time": None,
    "end_time": None,
    "event_name": None,
    "event_key": None,
    "event_published": False,
    "event_data": None,
    "step_name": None,
    "retry_count": 1,
    "children": [],
    "context_item": None,
    "predecessor_id": None,
    "outcome": None,
    "scope": [],
    "extension_attributes": {},
}

FULL_WORKFLOW = {
    "id": "interop-workflow-full",
    "name": "interop 名前 🚀 e\u0301",
    "root_workflow_id": "interop-root-ルート",
    "workflow_definition_id": "interop-definition-定義",
    "version": 4294967295,
    "description": "description: " + UNICODE + " | " + ESCAPES,
    "reference": "ref-参照-🔗",
    "execution_pointers": [FULL_POINTER_1, FULL_POINTER_2, MINIMAL_POINTER],
    "next_execution": 1_709_251_199_999,
    "status": "COMPLETE",
    "data": WORKFLOW_DATA,
    "create_time": "2024-02-29T12:34:56.123456Z",
    "complete_time": "2024-02-29T12:34:57.000001Z",
}

MINIMAL_WORKFLOW = {
    "id": "interop-workflow-minimal",
    "name": "interop-minimal",
    "root_workflow_id": None,
    "workflow_definition_id": "interop-definition-定義",
    "version": 0,
    "description": "",
    "reference": None,
    "execution_pointers": [],
    "next_execution": None,
    "status": "TERMINATED",
    "data": None,
    "create_time": "2021-06-15T08:00:00.000000Z",
    "complete_time": None,
}

FULL_EVENT = {
    "id": "interop-event-full",
    "event_name": "order.paid 支払い 💳",
    "event_key": "ключ-42-e\u0301",
    "event_data": {"amount": 2**64 - 1, "debt": -(2**63), "note": UNICODE, "rate": 0.1, "escapes": ESCAPES},
    "event_time": "2024-02-29T12:34:58.654321Z",
    "is_processed": True,
}

MINIMAL_EVENT = {
    "id": "interop-event-minimal",
    "event_name": "",
    "event_key": "",
    "event_data": None,
    "event_time": "1970-01-01T00:00:00.000000Z",
    "is_processed": False,
}

FULL_SUBSCRIPTION = {
    "id": "interop-subscription-full",
    "workflow_id": "interop-workflow-full",
    "step_id": 4294967295,
    "execution_pointer_id": "interop-pointer-1",
    "event_name": "order.paid 支払い 💳",
    "event_key": "ключ-42-e\u0301",
    "subscribe_as_of": "2024-02-29T12:34:55.000999Z",
    "subscription_data": {"want": [2**62, -(2**63), 2**64 - 1], "text": UNICODE},
    "external_token": "token-トークン-🔐",
    "external_worker_id": "worker-ワーカー-1",
    "external_token_expiry": "2099-12-31T23:59:59.999999Z",
}

MINIMAL_SUBSCRIPTION = {
    "id": "interop-subscription-minimal",
    "workflow_id": "interop-workflow-minimal",
    "step_id": 0,
    "execution_pointer_id": "interop-pointer-none",
    "event_name": "",
    "event_key": "",
    "subscribe_as_of": "2021-06-15T08:00:00.000001Z",
    "subscription_data": None,
    "external_token": None,
    "external_worker_id": None,
    "external_token_expiry": None,
}

FIXTURE: dict[str, list[dict[str, Any]]] = {
    "workflows": [FULL_WORKFLOW, MINIMAL_WORKFLOW],
    "events": [FULL_EVENT, MINIMAL_EVENT],
    "subscriptions": [FULL_SUBSCRIPTION, MINIMAL_SUBSCRIPTION],
}

REFS = (
    [f"workflow:{w['id']}" for w in FIXTURE["workflows"]]
    + [f"event:{e['id']}" for e in FIXTURE["events"]]
    + [f"subscription:{s['id']}" for s in FIXTURE["subscriptions"]]
)

EXPECTED = {
    "workflows": FIXTURE["workflows"],
    "workflows_batch": FIXTURE["workflows"],
    "events": FIXTURE["events"],
    "subscriptions": FIXTURE["subscriptions"],
}


# -- the programs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rust_program() -> list[str]:
    configured = os.environ.get("WFE_INTEROP_RUST_BIN")
    if configured:
        assert Path(configured).is_file(), f"WFE_INTEROP_RUST_BIN={configured} does not exist"
        return [configured]
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    build = subprocess.run(
        ["cargo", "build", "--locked", "--example", "interop"],
        cwd=CRATE,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert build.returncode == 0, f"cargo build failed:\n{build.stderr[-4000:]}"
    # Where cargo put it: $CARGO_TARGET_DIR (relative to the crate, as cargo reads it) or target/.
    path = CRATE / (os.environ.get("CARGO_TARGET_DIR") or "target") / "debug" / "examples" / "interop"
    assert path.is_file(), path
    return [str(path)]


@pytest.fixture(scope="module")
def typescript_program() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (TS_PACKAGE / "dist" / "src" / "index.js").is_file():
        if not (TS_PACKAGE / "node_modules").is_dir():
            install = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=TS_PACKAGE, capture_output=True, text=True, timeout=900
            )
            assert install.returncode == 0, f"npm ci failed:\n{install.stderr[-4000:]}"
        build = subprocess.run(["npm", "run", "build"], cwd=TS_PACKAGE, capture_output=True, text=True, timeout=900)
        assert build.returncode == 0, f"npm run build failed:\n{build.stdout[-4000:]}{build.stderr[-4000:]}"
    return [node, str(TS_PROGRAM)]


@pytest.fixture(scope="module")
def programs(rust_program: list[str], typescript_program: list[str]) -> dict[str, list[str]]:
    return {
        "python": [sys.executable, str(PY_PROGRAM)],
        "rust": rust_program,
        "typescript": typescript_program,
    }


def run(program: list[str], *args: str) -> str:
    done = subprocess.run([*program, *args], capture_output=True, timeout=120)
    stdout = done.stdout.decode("utf-8")
    assert done.returncode == 0, (
        f"{program[-1]} {args[0]} exited {done.returncode}\nstdout: {stdout[-4000:]}\n"
        f"stderr: {done.stderr.decode('utf-8', 'replace')[-4000:]}"
    )
    return stdout


# -- comparing -------------------------------------------------------------------------------


def tagged(value: Any) -> Any:
    """``value`` with booleans told apart from the numbers 0 and 1 (Python's ``True == 1``)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    return value


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every leaf where ``actual`` differs from ``expected``, by path (numbers compare exactly)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in expected.keys() | actual.keys():
            where = f"{path}.{key}"
            if key not in actual:
                found.append(f"{where}: missing")
            elif key not in expected:
                found.append(f"{where}: unexpected {actual[key]!r}")
            else:
                found += differences(expected[key], actual[key], where)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(actual)} items, expected {len(expected)}: {actual!r}"]
        return [
            d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in differences(e, a, f"{path}[{i}]")
        ]
    if tagged(expected) != tagged(actual) or (
        type(expected) is not type(actual)
        and not (
            isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and not isinstance(expected, bool)
        )
    ):
        return [f"{path}: {actual!r}, expected {expected!r}"]
    return []


def test_fixture_is_canonical() -> None:
    """The fixture itself follows the canonical form the programs print (guards the test)."""
    for w in FIXTURE["workflows"]:
        for key in ("create_time", "complete_time"):
            assert w[key] is None or (len(w[key]) == 27 and w[key].endswith("Z")), w[key]
        for p in w["execution_pointers"]:
            assert len(p) == 20, sorted(p)
        assert len(w) == 13, sorted(w)
    assert all(len(e) == 6 for e in FIXTURE["events"])
    assert all(len(s) == 11 for s in FIXTURE["subscriptions"])
    assert differences(FIXTURE, json.loads(json.dumps(FIXTURE))) == []
    assert differences({"a": 1}, {"a": True}) and differences({"a": 0.5}, {"a": 1})


# -- the matrix ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("interop") / "fixture.json"
    path.write_text(json.dumps(FIXTURE, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=LANGUAGES)
def written(
    request: pytest.FixtureRequest,
    programs: dict[str, list[str]],
    fixture_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, ServerProcess]]:
    """A fresh server holding the fixture as written by one language."""
    writer = request.param
    db = tmp_path_factory.mktemp(f"interop-{writer}") / "wfe.db"
    server = start_server_process(f"sqlite://{db}")
    try:
        run(programs[writer], "write", server.address, str(fixture_file))
        yield writer, server
    finally:
        server.kill()


@pytest.mark.parametrize("reader", LANGUAGES)
def test_read_back(written: tuple[str, ServerProcess], reader: str, programs: dict[str, list[str]]) -> None:
    writer, server = written
    out = run(programs[reader], "read", server.address, *REFS)
    actual = json.loads(out)
    found = differences(EXPECTED, actual)
    assert not found, f"written by {writer}, read by {reader}:\n" + "\n".join(sorted(found))
