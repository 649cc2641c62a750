/**
 * JSON values.
 *
 * On the wire every JSON value is JSON text, and it must round-trip exactly, 64-bit integers
 * included. `JSON.parse` turns every number into a double, so 2**62 + 1 would come back as
 * 2**62. This package reads JSON with bigint-aware parsing (below) and writes it with
 * `lossless-json`'s `stringify`, under this number policy:
 *
 * - a number a double holds exactly (every integer up to 2**53 - 1, and decimals such as 0.1 that
 *   print back the same) is a plain `number`;
 * - a larger integer (64-bit ids, 2**62, ...) is a `bigint`;
 * - any other number a double cannot hold exactly (more than 17 significant digits, 1e400, ...)
 *   is a `LosslessNumber`, which keeps the original digits.
 *
 * Writing accepts `number`, `bigint` and `LosslessNumber` anywhere in the value. So ordinary
 * data stays ordinary JavaScript, and nothing is ever silently rounded. Non-finite numbers
 * (NaN, Infinity) are not JSON and are rejected rather than written as `null`.
 */
import { randomBytes } from "node:crypto";
import { isInteger, isSafeNumber, LosslessNumber, stringify } from "lossless-json";
import { InvalidArgument } from "./errors.js";

export { LosslessNumber };

/** Any JSON value, as this package reads and writes it. */
export type JsonValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | LosslessNumber
  | JsonValue[]
  | { [key: string]: JsonValue };

function parseNumber(text: string): number | bigint | LosslessNumber {
  if (isSafeNumber(text)) return Number(text);
  if (isInteger(text)) return BigInt(text);
  return new LosslessNumber(text);
}

// A JSON string literal (skipped) or a JSON number token outside strings (checked).
const TOKEN = /"[^"\\]*(?:\\.[^"\\]*)*"|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

/**
 * Parses JSON text with the number policy above. Throws `InvalidArgument` on invalid JSON.
 *
 * Implementation: one regex pass finds the number tokens a double cannot hold exactly; each is
 * replaced by a string literal carrying a random per-call marker (checked absent from the text),
 * so the native `JSON.parse` does the parsing and a reviver turns the marked strings into
 * `bigint` / `LosslessNumber`. Text without such numbers goes straight to `JSON.parse`. (The
 * lossless-json parser gives the same values but is ~100x slower on multi-MiB payloads.)
 */
export function parseJson(text: string, field = "json"): JsonValue {
  let marker = "";
  let found = false;
  const rewritten = text.replace(TOKEN, (token) => {
    if (token.charCodeAt(0) === 34 /* " */ || isSafeNumber(token)) return token;
    if (!found) {
      found = true;
      do marker = `wfe-json-number-${randomBytes(12).toString("hex")}:`;
      while (text.includes(marker));
    }
    return `"${marker}${token}"`;
  });
  try {
    if (!found) return JSON.parse(text) as JsonValue;
    return JSON.parse(rewritten, (_key, value: unknown) =>
      typeof value === "string" && value.startsWith(marker) ? parseNumber(value.slice(marker.length)) : value,
    ) as JsonValue;
  } catch (cause) {
    throw new InvalidArgument(`${field} is not valid JSON text: ${(cause as Error).message}`, { field, cause });
  }
}

/** Parses optional JSON text (absent stays `undefined`). */
export function parseOptionalJson(text: string | undefined, field: string): JsonValue | undefined {
  return text === undefined ? undefined : parseJson(text, field);
}

function rejectNonFinite(this: unknown, _key: string, value: unknown): unknown {
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new InvalidArgument(`${value} is not a JSON number`);
  }
  return value;
}

/**
 * Writes a value as JSON text. `undefined` (no data) is written as `null`. Throws
 * `InvalidArgument` for a value JSON cannot hold (NaN, Infinity, a cycle, ...).
 */
export function stringifyJson(value: unknown, field = "json"): string {
  if (value === undefined) return "null";
  let text: string | undefined;
  try {
    text = stringify(value, rejectNonFinite);
  } catch (cause) {
    if (cause instanceof InvalidArgument) {
      throw new InvalidArgument(`${field}: ${cause.message}`, { field, cause });
    }
    throw new InvalidArgument(`${field} cannot be written as JSON: ${(cause as Error).message}`, { field, cause });
  }
  if (text === undefined) {
    throw new InvalidArgument(`${field} cannot be written as JSON`, { field });
  }
  return text;
}

/**
 * Writes an optional value: `undefined` and `null` are both sent as absent. As in WFE (Rust's
 * `Option<serde_json::Value>` reads JSON `null` as `None`) and the Python client (`None`), an
 * optional JSON field cannot hold a JSON `null` distinct from "absent"; it reads back `undefined`.
 */
export function stringifyOptionalJson(value: unknown, field: string): string | undefined {
  return value === undefined || value === null ? undefined : stringifyJson(value, field);
}
