// Client-side codecs that need no server: JSON number policy, PreciseDate, error mapping.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AlreadyExists,
  errorFromRpc,
  errorInfoOf,
  errorReasonOf,
  ErrorReason,
  InvalidArgument,
  LeaseLost,
  LosslessNumber,
  parseJson,
  PreciseDate,
  RevisionConflict,
  stringifyJson,
  NotFound,
  Unauthenticated,
  WatcherFellBehind,
  WfeError,
  WorkflowNameTaken,
  WorkflowNotFound,
} from "../src/index.js";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { ErrorReasonSchema } from "../src/gen/wfe/persistence/v1/errors_pb.js";
import { fromTimestamp, toTimestamp } from "../src/time.js";

describe("lossless JSON", () => {
  it("keeps 64-bit integers exactly as bigint", () => {
    const text = '{"a":4611686018427387904,"b":4611686018427387905,"c":-9223372036854775808,"d":18446744073709551615}';
    const value = parseJson(text) as Record<string, unknown>;
    assert.equal(value["a"], 2n ** 62n);
    assert.equal(value["b"], 2n ** 62n + 1n);
    assert.equal(value["c"], -(2n ** 63n));
    assert.equal(value["d"], 2n ** 64n - 1n);
    assert.equal(stringifyJson(value), text);
  });

  it("keeps safe numbers as plain numbers", () => {
    const value = parseJson('[1, -7, 0.1, 9007199254740991, 1.5e3, true, null, "x"]');
    assert.deepEqual(value, [1, -7, 0.1, 9007199254740991, 1500, true, null, "x"]);
  });

  it("keeps numbers a double cannot hold as LosslessNumber", () => {
    const value = parseJson("[0.12345678901234567890123, 1e400]") as unknown[];
    assert.ok(value[0] instanceof LosslessNumber);
    assert.equal(stringifyJson(value), "[0.12345678901234567890123,1e400]");
  });

  it("leaves digits inside strings and keys alone", () => {
    const text = '{"9007199254740993":"9007199254740993","s":"a \\" 18446744073709551615 \\\\","n":9007199254740993}';
    const value = parseJson(text) as Record<string, unknown>;
    assert.equal(value["9007199254740993"], "9007199254740993");
    assert.equal(value["s"], 'a " 18446744073709551615 \\');
    assert.equal(value["n"], 9007199254740993n);
    assert.equal(stringifyJson(value), text);
  });

  it("round-trips unicode", () => {
    const data = { s: "héllo wörld ✓ 日本語 🎉 \u0000 \u2028 \"quoted\" \\" };
    assert.deepEqual(parseJson(stringifyJson(data)), data);
  });

  it("writes undefined as null and rejects non-finite numbers", () => {
    assert.equal(stringifyJson(undefined), "null");
    assert.throws(() => stringifyJson({ x: Number.NaN }, "data"), InvalidArgument);
    assert.throws(() => stringifyJson([Infinity]), InvalidArgument);
  });

  it("rejects invalid JSON text", () => {
    assert.throws(() => parseJson("{nope"), InvalidArgument);
  });
});

describe("PreciseDate", () => {
  it("keeps microseconds and nanoseconds through Timestamps", () => {
    const d = PreciseDate.fromEpochMicros(1_700_000_000_123_456n);
    assert.equal(d.getTime(), 1_700_000_000_123);
    assert.equal(d.getMicroseconds(), 456);
    assert.equal(d.toPreciseISOString(), "2023-11-14T22:13:20.123456Z");
    const ts = toTimestamp(d, "t");
    assert.equal(ts.seconds, 1_700_000_000n);
    assert.equal(ts.nanos, 123_456_000);
    const back = fromTimestamp(ts);
    assert.equal(back.epochMicros, 1_700_000_000_123_456n);
  });

  it("handles instants before the epoch", () => {
    const d = PreciseDate.fromEpochMicros(-1_500_001n); // -1.500001 s
    assert.equal(d.getTime(), -1501);
    assert.equal(d.getSubMillisecondNanos(), 999_000);
    const ts = toTimestamp(d, "t");
    assert.equal(ts.seconds, -2n);
    assert.equal(ts.nanos, 499_999_000);
    assert.equal(fromTimestamp(ts).epochMicros, -1_500_001n);
  });

  it("sends a plain Date with its milliseconds", () => {
    const ts = toTimestamp(new Date(1234), "t");
    assert.equal(ts.seconds, 1n);
    assert.equal(ts.nanos, 234_000_000);
  });

  it("drops its extra precision once mutated", () => {
    const d = PreciseDate.fromEpochMicros(5_000_123n);
    d.setTime(7000);
    assert.equal(d.epochNanos, 7_000_000_000n);
  });

  it("rejects an invalid Date", () => {
    assert.throws(() => toTimestamp(new Date(Number.NaN), "asOf"), InvalidArgument);
  });
});

/** A ConnectError as Connect parses it from the wire: ErrorInfo as an encoded detail. */
function rpcError(code: Code, reason?: string, domain = "wfe-sqlite", metadata: Record<string, string> = {}): ConnectError {
  const err = new ConnectError("boom", code);
  if (reason !== undefined) {
    const value = toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason, domain, metadata }));
    err.details.push({ type: ErrorInfoSchema.typeName, value });
  }
  return err;
}

describe("error mapping", () => {
  it("reads ErrorInfo of the wfe-sqlite domain with findDetails", () => {
    const info = errorInfoOf(rpcError(Code.InvalidArgument, "INVALID_ARGUMENT", "wfe-sqlite", { field: "workflow.status", x: "y" }));
    assert.equal(info?.reason, "INVALID_ARGUMENT");
    assert.deepEqual(info?.metadata, { field: "workflow.status", x: "y" });
    assert.equal(errorInfoOf(rpcError(Code.NotFound, "WORKFLOW_NOT_FOUND", "elsewhere")), undefined);
    const e = errorFromRpc(rpcError(Code.InvalidArgument, "INVALID_ARGUMENT", "wfe-sqlite", { field: "workflow.status" }));
    assert.ok(e instanceof InvalidArgument);
    assert.equal(e.field, "workflow.status");
  });

  it("names reasons with the generated ErrorReason", () => {
    assert.equal(errorReasonOf("WORKFLOW_NOT_FOUND"), ErrorReason.WORKFLOW_NOT_FOUND);
    assert.equal(errorReasonOf("REVISION_CONFLICT"), ErrorReason.REVISION_CONFLICT);
    assert.equal(errorReasonOf("ERROR_REASON_UNSPECIFIED"), undefined);
    assert.equal(errorReasonOf("NOT_A_REASON"), undefined);
  });

  it("chooses the class from the reason", () => {
    assert.ok(errorFromRpc(rpcError(Code.NotFound, "WORKFLOW_NOT_FOUND")) instanceof WorkflowNotFound);
    assert.ok(errorFromRpc(rpcError(Code.AlreadyExists, "WORKFLOW_NAME_TAKEN")) instanceof WorkflowNameTaken);
    assert.ok(errorFromRpc(rpcError(Code.AlreadyExists, "WORKFLOW_NAME_TAKEN")) instanceof AlreadyExists);
    assert.ok(errorFromRpc(rpcError(Code.Unauthenticated, "UNAUTHENTICATED")) instanceof Unauthenticated);
    assert.ok(errorFromRpc(rpcError(Code.FailedPrecondition, "LEASE_LOST")) instanceof LeaseLost);
    const conflict = errorFromRpc(rpcError(Code.Aborted, "REVISION_CONFLICT"));
    assert.ok(conflict instanceof RevisionConflict);
    assert.equal(conflict.code, Code.Aborted);
    assert.equal(conflict.reason, "REVISION_CONFLICT");
  });

  it("has a class of its own for every reason the contract names", () => {
    for (const { name } of ErrorReasonSchema.values) {
      if (name === "ERROR_REASON_UNSPECIFIED") continue;
      const e = errorFromRpc(rpcError(Code.Unknown, name));
      assert.ok(e instanceof WfeError && e.constructor !== WfeError, `${name} maps to the base class`);
      assert.equal(e.reason, name);
    }
    assert.ok(errorFromRpc(rpcError(Code.ResourceExhausted, "WATCHER_FELL_BEHIND")) instanceof WatcherFellBehind);
  });

  it("ignores ErrorInfo of another domain and falls back on the code", () => {
    const e = errorFromRpc(rpcError(Code.NotFound, "WORKFLOW_NOT_FOUND", "elsewhere"));
    assert.ok(e instanceof NotFound);
    assert.ok(!(e instanceof WorkflowNotFound));
    assert.ok(errorFromRpc(rpcError(Code.InvalidArgument)) instanceof InvalidArgument);
    assert.ok(errorFromRpc(rpcError(Code.Unauthenticated)) instanceof Unauthenticated);
  });

  it("falls back on the code for a reason it does not know", () => {
    const e = errorFromRpc(rpcError(Code.AlreadyExists, "SOME_FUTURE_REASON"));
    assert.ok(e instanceof AlreadyExists);
    const other = errorFromRpc(rpcError(Code.Aborted, "SOME_FUTURE_REASON"));
    assert.ok(other instanceof WfeError && !(other instanceof RevisionConflict));
    assert.equal(other.code, Code.Aborted);
  });
});
