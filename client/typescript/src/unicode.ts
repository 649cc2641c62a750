/**
 * @internal The one check, for every call of this client, that outgoing text is valid Unicode.
 *
 * protobuf-es encodes a JavaScript string holding a lone surrogate ("\uD800", half of an emoji
 * after a bad slice) as U+FFFD, silently: a lock on "\uD800" would be taken on "\uFFFD", a
 * reference stored changed, a delete by such an id would delete the "\uFFFD" one. The Python
 * client cannot send such text either (its protobuf refuses it) and says
 * `InvalidArgument('<field>: not valid Unicode text (lone surrogate)')`; so does this check, for
 * every string field of every request message (nested messages, repeated and map fields, map keys
 * too), before anything is sent. It wraps the transport the service clients are created on.
 *
 * Fields are named as this client's other errors name them: the request's field path in the
 * TypeScript (camelCase) names, `workflow.reference`, `subscriptions[0].eventKey`,
 * `workflow.executionPointers[2].extensionAttributes.key`; the visibility filter's fields by
 * their option names (`reference`, `definitionId`), as the visibility calls take them.
 *
 * JSON data (workflow data, event data, ...) never holds a lone surrogate here: JSON.stringify
 * (and lossless-json's stringify, which uses it for strings) writes one as the escape `\udXXX`.
 */
import { ScalarType, type DescField, type DescMessage, type DescMethodStreaming, type DescMethodUnary, type MessageInitShape } from "@bufbuild/protobuf";
import type { ContextValues, StreamResponse, Transport, UnaryResponse } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { InvalidArgument } from "./errors.js";
import { WorkflowFilterSchema, ListWorkflowsRequestSchema, SearchWorkflowsRequestSchema } from "./gen/wfe/persistence/v1/visibility_pb.js";

type HeaderInit = Parameters<Transport["unary"]>[3];

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Whether `value` has no lone surrogate: `String.prototype.isWellFormed` (ES2024, Node 20), one
 * native scan; {@link LONE_SURROGATE} where a runtime lacks it.
 */
const wellFormed: (value: string) => boolean =
  typeof (String.prototype as { isWellFormed?: unknown }).isWellFormed === "function"
    ? (value) => (value as unknown as { isWellFormed(): boolean }).isWellFormed()
    : (value) => !LONE_SURROGATE.test(value);

/** Fields named otherwise than their path: the visibility filter's, by the options that set them ("" = no name of its own). */
const API_NAMES = new Map<DescField, string>([
  [ListWorkflowsRequestSchema.field.filter, ""],
  [SearchWorkflowsRequestSchema.field.filter, ""],
  [WorkflowFilterSchema.field.workflowDefinitionId, "definitionId"],
]);

function join(path: string, field: DescField): string {
  const name = API_NAMES.get(field) ?? field.localName;
  return name === "" ? path : path === "" ? name : `${path}.${name}`;
}

function checkText(value: unknown, field: string): void {
  if (typeof value === "string" && !wellFormed(value)) {
    throw new InvalidArgument(`${field}: not valid Unicode text (lone surrogate)`, { field });
  }
}

/** Whether messages of `desc` can hold text at all (a Timestamp cannot: not walked). */
const HOLDS_TEXT = new WeakMap<DescMessage, boolean>();

function holdsText(desc: DescMessage): boolean {
  const known = HOLDS_TEXT.get(desc);
  if (known !== undefined) return known;
  HOLDS_TEXT.set(desc, true); // while deciding: a recursive message is walked
  const result = desc.fields.some((f) => {
    switch (f.fieldKind) {
      case "scalar":
        return f.scalar === ScalarType.STRING;
      case "list":
        return f.listKind === "scalar" ? f.scalar === ScalarType.STRING : f.listKind === "message" && holdsText(f.message);
      case "map":
        return (
          f.mapKey === ScalarType.STRING ||
          (f.mapKind === "scalar" ? f.scalar === ScalarType.STRING : f.mapKind === "message" && holdsText(f.message))
        );
      case "message":
        return holdsText(f.message);
      default:
        return false;
    }
  });
  HOLDS_TEXT.set(desc, result);
  return result;
}

/**
 * InvalidArgument naming the first string field of `message` (a message of `desc`, or its init
 * shape) that holds a lone surrogate; nothing when there is none.
 */
export function checkWellFormed(desc: DescMessage, message: unknown, path = ""): void {
  if (message === null || typeof message !== "object" || !holdsText(desc)) return;
  const fields = message as Record<string, unknown>;
  for (const member of desc.members) {
    if (member.kind === "oneof") {
      const chosen = fields[member.localName] as { case?: unknown; value?: unknown } | undefined;
      const field = member.fields.find((f) => f.localName === chosen?.case);
      if (field !== undefined) checkField(field, chosen?.value, path);
    } else {
      checkField(member, fields[member.localName], path);
    }
  }
}

function checkField(field: DescField, value: unknown, path: string): void {
  if (value === undefined || value === null) return;
  const name = join(path, field);
  switch (field.fieldKind) {
    case "scalar":
      if (field.scalar === ScalarType.STRING) checkText(value, name);
      return;
    case "message":
      checkWellFormed(field.message, value, name);
      return;
    case "list":
      if (!Array.isArray(value)) return;
      if (field.listKind === "scalar") {
        if (field.scalar === ScalarType.STRING) value.forEach((item: unknown, i) => checkText(item, `${name}[${i}]`));
      } else if (field.listKind === "message" && holdsText(field.message)) {
        value.forEach((item: unknown, i) => checkWellFormed(field.message, item, `${name}[${i}]`));
      }
      return;
    case "map":
      if (typeof value !== "object") return;
      for (const [key, item] of Object.entries(value)) {
        if (field.mapKey === ScalarType.STRING) checkText(key, name);
        if (field.mapKind === "scalar") {
          if (field.scalar === ScalarType.STRING) checkText(item, `${name}.${key}`);
        } else if (field.mapKind === "message") {
          checkWellFormed(field.message, item, `${name}.${key}`);
        }
      }
      return;
    default:
      return;
  }
}

/** `transport`, refusing (InvalidArgument, nothing sent) a request with a lone surrogate in any string field. */
export class WellFormedTransport implements Transport {
  readonly #transport: Transport;

  constructor(transport: Transport) {
    this.#transport = transport;
  }

  async unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeaderInit,
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ): Promise<UnaryResponse<I, O>> {
    checkWellFormed(method.input, input);
    return this.#transport.unary(method, signal, timeoutMs, header, input, contextValues);
  }

  async stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeaderInit,
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ): Promise<StreamResponse<I, O>> {
    let messages: AsyncIterable<MessageInitShape<I>>;
    if (method.methodKind === "server_streaming") {
      // Its one request, checked before the stream is opened.
      const request: MessageInitShape<I>[] = [];
      for await (const message of input) {
        checkWellFormed(method.input, message);
        request.push(message);
      }
      messages = createAsyncIterable(request);
    } else {
      messages = checkEach(method.input, input);
    }
    return this.#transport.stream(method, signal, timeoutMs, header, messages, contextValues);
  }
}

async function* checkEach<T>(desc: DescMessage, input: AsyncIterable<T>): AsyncIterable<T> {
  for await (const message of input) {
    checkWellFormed(desc, message);
    yield message;
  }
}
