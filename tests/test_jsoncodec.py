"""The JSON decoder's fast path (msgspec) against the stdlib's ``json``: the same value or the same error.

``decode_json`` must give what ``json.loads`` gives and ``parse_json`` what it gave when it went
through ``json`` alone: where msgspec gives a value it must be that value (ints of any size exact,
floats correctly rounded, the last duplicate key in its first place); where it rejects the text,
``json`` decides (its value, or its error).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wfe_client import GrpcPersistenceProvider, WorkflowInstance
from wfe_client.errors import InvalidArgument
from wfe_client.jsoncodec import _check_depth, decode_json, json_text, parse_json
from wfe_client.limits import MAX_JSON_DEPTH
from wfe_sqlite import open_provider
from wfe_sqlite.server import RunningServer, ServerConfig


def _bench_workload() -> Any:
    """bench/workload.py (not a package): its ``payload`` is the workflow data the benches decode."""
    path = Path(__file__).resolve().parent.parent / "bench" / "workload.py"
    spec = importlib.util.spec_from_file_location("bench_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


payload = _bench_workload().payload


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _outcome(decode: Any, text: str) -> tuple[Any, ...]:
    """What decoding ``text`` gives, comparable exactly: the value's type tree and repr (key order,
    -0.0 vs 0.0, 1 vs 1.0 vs True all differ), or the error's type and message."""
    try:
        value = decode(text)
    except RecursionError:
        return ("RecursionError",)
    except Exception as error:  # noqa: BLE001 - compared, not handled
        # the context too: json's error must not come chained to msgspec's
        return ("error", type(error), str(error), type(error.__cause__), type(error.__context__))
    return ("value", _shape(value), repr(value))


def _shape(value: Any) -> list[Any]:
    """The types of ``value`` and everything in it, in order (with the keys), without recursion."""
    shape: list[Any] = []
    todo = [value]
    while todo:
        v = todo.pop()
        shape.append(type(v).__name__)
        if isinstance(v, dict):
            shape.append(list(v))
            todo.extend(reversed(v.values()))
        elif isinstance(v, list):
            shape.append(len(v))
            todo.extend(reversed(v))
    return shape


def _stdlib_parse_json(text: str, field: str) -> Any:
    """parse_json as it was before the fast path: json alone."""
    if not text:
        raise InvalidArgument(f"{field}: empty; JSON text is required (use 'null' for no value)", field=field)
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidArgument(f"{field}: JSON nested deeper than {MAX_JSON_DEPTH} levels", field=field) from None
    except ValueError as error:
        raise InvalidArgument(f"{field}: invalid JSON text: {error}", field=field) from None
    _check_depth(text, field)
    return value


def _assert_same(text: str) -> None:
    assert _outcome(decode_json, text) == _outcome(json.loads, text), text
    assert _outcome(lambda t: parse_json(t, "data"), text) == _outcome(lambda t: _stdlib_parse_json(t, "data"), text)


def _msgspec_rejects(text: str) -> bool:
    try:
        msgspec.json.decode(text)
    except Exception:  # noqa: BLE001
        return True
    return False


# Texts where msgspec gives the value itself, and what that value must be.
EXACT = {
    "uint64-max": ("18446744073709551615", 2**64 - 1),
    "beyond-uint64": ("18446744073709551616", 2**64),
    "int64-min": ("-9223372036854775808", -(2**63)),
    "below-int64": ("-9223372036854775809", -(2**63) - 1),
    "30-digits": ("123456789012345678901234567890", 123456789012345678901234567890),
    "4300-digits": ("7" * 4300, int("7" * 4300)),
    "big-in-object": ('{"n":-100000000000000000000000000001}', {"n": -(10**29) - 1}),
    "int53-plus-one": ("9007199254740993", 2**53 + 1),
    "float-of-int53-plus-one": ("9007199254740993.0", 9007199254740992.0),
    "minus-zero": ("-0.0", -0.0),
    "int-minus-zero": ("-0", 0),
    "exponent-is-float": ("1E2", 100.0),
    "subnormal": ("5e-324", 5e-324),
    "underflow": ("1e-400", 0.0),
    "max-double": ("1.7976931348623157e308", 1.7976931348623157e308),
    "long-mantissa": ("0.1000000000000000055511151231257827", 0.1),
    "halfway": ("9007199254740993e0", 9007199254740992.0),
    "duplicate-keys": ('{"a":1,"b":2,"a":3}', {"a": 3, "b": 2}),
    "surrogate-pair": ('"\\ud83d\\ude00"', "\U0001f600"),
    "escaped-nul": ('{"\\u0000":"\\u0000"}', {"\x00": "\x00"}),
    "whitespace": (" \n\r\t[1 , {} ]\n", [1, {}]),
    "deep-ok": ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, None),
}

# Texts msgspec rejects where json gives a value (so the fallback must give json's).
FALLBACK_VALUES = {
    "overflow-to-inf": "1e400",
    "minus-overflow": "-1e400",
    "just-over-max-double": "1.7976931348623159e308",
    "nan": "NaN",
    "infinity": "Infinity",
    "minus-infinity": "[-Infinity]",
    "escaped-lone-high-surrogate": '"\\ud800"',
    "escaped-lone-low-surrogate": '{"k":"\\udc00x"}',
    "raw-lone-surrogate": '"\ud800"',
}

# Texts neither accepts (the error must be json's, message and all, not chained to msgspec's).
ERRORS = {
    "empty": "",
    "trailing-comma": "[1,]",
    "leading-zero": "01",
    "bare-dot": "1.",
    "plus": "+1",
    "raw-control": '"a\x01b"',
    "raw-tab": '"\t"',
    "bad-escape": '"\\x"',
    "truncated": "[1,2",
    "extra-data": "null x",
    "single-quotes": "{'single': 'quotes'}",
    "python-true": "True",
    "bom": "\ufeff1",
    "nbsp": "\u00a01",
    "form-feed": "\x0c1",
    "4301-digits": "1" * 4301,
    "too-deep-for-json": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("case", list(EXACT.values()), ids=list(EXACT))
def test_msgspec_gives_json_s_value(case: tuple[str, Any]) -> None:
    text, expected = case
    assert not _msgspec_rejects(text), "this case is meant to go through the fast path"
    _assert_same(text)
    if expected is not None:
        got = decode_json(text)
        assert repr(got) == repr(expected) and _shape(got) == _shape(expected)


@pytest.mark.parametrize("text", list(FALLBACK_VALUES.values()), ids=list(FALLBACK_VALUES))
def test_what_msgspec_rejects_json_decodes(text: str) -> None:
    assert _msgspec_rejects(text)
    _assert_same(text)
    assert _outcome(decode_json, text)[0] == "value"


def test_nan_and_infinity_stay_invalid_in_parse_json() -> None:
    for text in ("NaN", '{"x":Infinity}', "[-Infinity]"):
        with pytest.raises(InvalidArgument, match="is not valid JSON") as caught:
            parse_json(text, "event.event_data")
        assert caught.value.metadata["field"] == "event.event_data"
    assert math.isinf(parse_json("1e400", "data"))  # as json.loads, which parses the number as float


@pytest.mark.parametrize("text", list(ERRORS.values()), ids=list(ERRORS))
def test_errors_are_json_s(text: str) -> None:
    _assert_same(text)
    assert _outcome(decode_json, text)[0] != "value"
    with pytest.raises(InvalidArgument):
        parse_json(text, "data")


def test_too_deep_is_the_same_error_either_way() -> None:
    """msgspec decodes 1,000 levels where json runs out of recursion: parse_json's error is the same."""
    for depth in (MAX_JSON_DEPTH + 1, 1_000, 100_000):
        text = "[" * depth + "]" * depth
        with pytest.raises(InvalidArgument, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            parse_json(text, "data")
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, "data") is not None


def test_workflow_data_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's data never reaches json (so the speed-up is real), and decodes to the same value."""
    texts = [*(json_text(payload(n)) for n in range(20)), '{"n":' + str(2**200) + "}"]

    def no_json(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("fell back to json")

    import wfe_client.jsoncodec as codec

    expected = [json.loads(t) for t in texts]
    monkeypatch.setattr(codec.json, "loads", no_json)
    assert [decode_json(t) for t in texts] == expected
    assert [parse_json(t, "data") for t in texts] == expected


# -- generated cases -------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_values, st.booleans(), st.booleans())
def test_generated_values_decode_as_json_does(value: Any, ascii_only: bool, spaced: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":"))
    _assert_same(text)


_number = st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,4})?\Z", fullmatch=True)


@settings(max_examples=1000, deadline=None)
@given(_number)
def test_generated_numbers_decode_as_json_does(text: str) -> None:
    """Correct rounding of any decimal (40-digit mantissas, exponents to 9999), overflow to inf."""
    _assert_same(text)
    _assert_same(f'{{"n":[{text}]}}')


_json_alphabet = st.sampled_from([*'{}[],:"\\ 0123456789-+.eEtruefalsnNIy\t\n\x01\u00e9\ud800', "\\u", "\\ud83d"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(_json_alphabet, max_size=30).map("".join))
def test_generated_text_decodes_or_fails_as_json_does(text: str) -> None:
    _assert_same(text)


# -- through the providers -------------------------------------------------------------------------

BIG = {"big": 2**100, "neg": -(2**70), "u64": 2**64 - 1, "f": 0.1, "z": -0.0, "dup": [1.0, 1, True]}


@pytest.mark.parametrize("kind", ["embedded", "grpc"])
async def test_integers_beyond_64_bits_round_trip_exactly(tmp_path: Path, kind: str) -> None:
    url = f"sqlite://{tmp_path / 'big.db'}"
    w = WorkflowInstance.new("big-ints", 1, BIG)
    if kind == "embedded":
        provider = await open_provider(url)
        try:
            await provider.create_new_workflow(w)
            got = [await provider.get_workflow_instance(w.id), *(await provider.get_workflow_instances([w.id]))]
        finally:
            await provider.close()
    else:
        running = await RunningServer.start(ServerConfig(db=url, listen="127.0.0.1:0", grace=1.0))
        try:
            async with GrpcPersistenceProvider.connect(running.address) as remote:
                await remote.create_new_workflow(w)
                got = [await remote.get_workflow_instance(w.id), *(await remote.get_workflow_instances([w.id]))]
        finally:
            await running.stop()
    for g in got:
        assert repr(g.data) == repr(BIG) and _shape(g.data) == _shape(BIG)
