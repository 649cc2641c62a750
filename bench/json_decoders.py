"""JSON decoders on the bench's workflow data: speed, and where each gives another value than ``json``.

``python bench/json_decoders.py`` prints microseconds per value (best of 7) for the stdlib's
``json.loads``, its C scanner alone (the decoder before issue 14's second pass), msgspec and, when it
is installed (it is not a dependency), orjson; then, for texts where decoders are known to differ,
whether each gives ``json``'s value (``=``), rejects the text (``error``: ``wfe_client.jsoncodec``
then asks ``json``) or gives another value (``WRONG``, which no fallback can catch).

``python bench/json_decoders.py --convert`` times instead what the decoder is for: 100 of the
bench's workflows (3 pointers each) from stored rows to models (``_rows.workflow_from_rows``, the
embedded provider) and from messages to models (``conversion.workflow_from_proto``, the gRPC
adapter); CPU time, best of 7. With ``PYTHONPATH`` set to another checkout's ``server:client/python`` it
times that one's conversions.
"""

from __future__ import annotations

import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload
from wfe_client.jsoncodec import json_text

try:
    import orjson
except ImportError:  # pragma: no cover - optional, for the comparison only
    orjson = None

TEXTS = [json_text(workload.payload(n)) for n in range(100)]
EDGES = [
    "18446744073709551615",  # uint64 max
    "18446744073709551616",  # one more
    "-9223372036854775809",  # int64 min - 1
    "123456789012345678901234567890",
    "1e400",  # json: inf
    "NaN",  # json: nan (parse_json rejects it)
    '"\\ud800"',  # escaped lone surrogate
    '{"a":1,"b":2,"a":3}',  # duplicate keys
    "0.1000000000000000055511151231257827",
    "9007199254740993.0",
    "[" * 600 + "]" * 600,
]


def _scan(text: str) -> Any:
    value, end = _SCANNER(text, 0)
    assert end == len(text)
    return value


_SCANNER = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _outcome(decode: Callable[[str], Any], text: str) -> str:
    try:
        value = decode(text)
    except Exception:  # noqa: BLE001 - a rejection is an outcome
        return "error"
    expected = json.loads(text)
    return "=" if repr(value) == repr(expected) and type(value) is type(expected) else "WRONG"


def convert() -> None:
    from wfe_client import conversion
    from wfe_sqlite import _rows

    workflows = [workload.workflow(n) for n in range(100)]
    rows = [(_rows.workflow_row(w), _rows.pointer_rows(w.id, w.execution_pointers)) for w in workflows]
    messages = [conversion.workflow_to_proto(w) for w in workflows]
    from_rows = [_rows.workflow_from_rows(r, p) for r, p in rows]
    from_messages = [conversion.workflow_from_proto(m) for m in messages]
    assert [w.data for w in from_rows] == [w.data for w in workflows] == [w.data for w in from_messages]
    print(f"{_rows.__file__}, {conversion.__file__}")
    for name, job in (
        ("rows -> models", lambda: [_rows.workflow_from_rows(r, p) for r, p in rows]),
        ("messages -> models", lambda: [conversion.workflow_from_proto(m) for m in messages]),
    ):
        best = min(timeit.repeat(job, number=20, repeat=7, timer=time.process_time)) / 20
        print(f"{name}: {best * 1e3:.2f} ms per 100 workflows")


def main() -> None:
    if "--convert" in sys.argv[1:]:
        convert()
        return
    decoders: dict[str, Callable[[str], Any]] = {
        "json.loads": json.loads,
        "json C scanner": _scan,
        f"msgspec {msgspec.__version__}": msgspec.json.decode,
    }
    if orjson is not None:
        decoders[f"orjson {orjson.__version__}"] = orjson.loads
    print(f"{len(TEXTS)} workflow data texts of ~{sum(map(len, TEXTS)) // len(TEXTS)} characters (bench/workload.py)\n")
    print("| decoder | us per value |\n|---|---:|")
    for name, decode in decoders.items():
        assert [decode(t) for t in TEXTS] == [json.loads(t) for t in TEXTS]
        best = min(timeit.repeat(lambda d=decode: [d(t) for t in TEXTS], number=50, repeat=7))
        print(f"| {name} | {best / 50 / len(TEXTS) * 1e6:.2f} |")
    names = [n for n in decoders if n != "json.loads"]
    print("\n| text | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for text in EDGES:
        shown = text if len(text) < 40 else text[:12] + "..." + text[-6:]
        print(f"| `{shown}` | " + " | ".join(_outcome(decoders[n], text) for n in names) + " |")


if __name__ == "__main__":
    main()
