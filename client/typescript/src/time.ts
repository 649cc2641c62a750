/**
 * Instants.
 *
 * The store keeps microsecond precision, but a JavaScript `Date` only holds milliseconds. Every
 * instant this package returns is a {@link PreciseDate}: a real `Date` (so all `Date` code works
 * on it) that also carries the sub-millisecond nanoseconds it was read with. Passing it back to
 * the provider sends the full precision, so a read-modify-write round trip never truncates the
 * stored microseconds. A plain `Date` is sent with its milliseconds.
 *
 * If a `PreciseDate` is mutated through a `Date` setter, its extra nanoseconds no longer belong to
 * it and are dropped (the millisecond value wins).
 */
import { create } from "@bufbuild/protobuf";
import { type Duration, DurationSchema, type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { InvalidArgument } from "./errors.js";

const NANOS_PER_MILLI = 1_000_000;

export class PreciseDate extends Date {
  readonly #subMilliNanos: number;
  readonly #epochMillis: number;

  /**
   * @param epochMillis milliseconds since the epoch (an integer)
   * @param subMilliNanos nanoseconds past that millisecond, 0 to 999999
   */
  constructor(epochMillis: number, subMilliNanos = 0) {
    super(epochMillis);
    if (!Number.isInteger(epochMillis) || !Number.isFinite(this.getTime())) {
      throw new RangeError(`not an integral, valid epoch millisecond: ${epochMillis}`);
    }
    if (!Number.isInteger(subMilliNanos) || subMilliNanos < 0 || subMilliNanos >= NANOS_PER_MILLI) {
      throw new RangeError(`sub-millisecond nanoseconds out of range: ${subMilliNanos}`);
    }
    this.#epochMillis = epochMillis;
    this.#subMilliNanos = subMilliNanos;
  }

  /** An instant from epoch microseconds. */
  static fromEpochMicros(micros: bigint): PreciseDate {
    const millis = floorDiv(micros, 1000n);
    return new PreciseDate(Number(millis), Number(micros - millis * 1000n) * 1000);
  }

  /** An instant from epoch nanoseconds. */
  static fromEpochNanos(nanos: bigint): PreciseDate {
    const millis = floorDiv(nanos, 1_000_000n);
    return new PreciseDate(Number(millis), Number(nanos - millis * 1_000_000n));
  }

  /** Nanoseconds past the millisecond of `getTime()` (0 if the date was changed since). */
  getSubMillisecondNanos(): number {
    return this.getTime() === this.#epochMillis ? this.#subMilliNanos : 0;
  }

  /** Microseconds past the millisecond of `getTime()`, 0 to 999. */
  getMicroseconds(): number {
    return Math.floor(this.getSubMillisecondNanos() / 1000);
  }

  /** Epoch nanoseconds, exact. */
  get epochNanos(): bigint {
    return BigInt(this.getTime()) * 1_000_000n + BigInt(this.getSubMillisecondNanos());
  }

  /** Epoch microseconds, truncated toward the past. */
  get epochMicros(): bigint {
    return floorDiv(this.epochNanos, 1000n);
  }

  /** ISO 8601 in UTC with as many fraction digits as needed (3, 6 or 9). */
  toPreciseISOString(): string {
    const base = this.toISOString(); // 2024-01-02T03:04:05.678Z
    const extra = this.getSubMillisecondNanos();
    if (extra === 0) return base;
    const digits = String(extra).padStart(6, "0").replace(/000$/, "");
    return `${base.slice(0, -1)}${digits}Z`;
  }
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

/** The epoch nanoseconds of any `Date`, keeping a `PreciseDate`'s extra precision. */
export function epochNanosOf(date: Date): bigint {
  if (date instanceof PreciseDate) return date.epochNanos;
  return BigInt(date.getTime()) * 1_000_000n;
}

/** @internal Converts a `Date` to a protobuf Timestamp; rejects anything that is not a valid Date. */
export function toTimestamp(date: Date, field: string): Timestamp {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) {
    throw new InvalidArgument(`${field} must be a valid Date, got ${String(date)}`, { field });
  }
  const nanos = epochNanosOf(date);
  const seconds = floorDiv(nanos, 1_000_000_000n);
  return create(TimestampSchema, { seconds, nanos: Number(nanos - seconds * 1_000_000_000n) });
}

/** @internal Converts an optional `Date`. */
export function toOptionalTimestamp(date: Date | undefined | null, field: string): Timestamp | undefined {
  return date === undefined || date === null ? undefined : toTimestamp(date, field);
}

/** @internal Converts a protobuf Timestamp to a PreciseDate. */
export function fromTimestamp(ts: Timestamp): PreciseDate {
  return PreciseDate.fromEpochNanos(ts.seconds * 1_000_000_000n + BigInt(ts.nanos));
}

/** @internal Converts an optional protobuf Timestamp. */
export function fromOptionalTimestamp(ts: Timestamp | undefined): PreciseDate | undefined {
  return ts === undefined ? undefined : fromTimestamp(ts);
}

/** @internal Converts a whole number of milliseconds (>= 0) to a protobuf Duration. */
export function toDuration(ms: number): Duration {
  return create(DurationSchema, { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
}
