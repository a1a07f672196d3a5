// Protocols: the zod schemas of the messages an actor accepts and of the replies it gives.
// On the wire a message is one object discriminated by its `type` field: `{ type: "add", n: 1 }`.
// A protocol is declared as a map from type to the message's other fields (and, optionally,
// its reply), so the discriminant is written once and handlers are typed per message type.
import { z } from "zod";
import { InvalidMessageError } from "../errors.ts";

export interface MessageSpec {
  /** The message's fields other than `type` (which the protocol adds from the key). */
  readonly msg: z.ZodObject;
  /** The reply's schema; without one the reply is not checked and typed `unknown`. */
  readonly reply?: z.ZodType;
}

export type ProtocolSpec = Record<string, MessageSpec>;

export type MessageType<S extends ProtocolSpec> = keyof S & string;

// zod types an empty object as Record<string, never>, whose index signature would make
// `{ type: K } & fields` impossible; only the named fields are kept.
export type Named<T> = { [P in keyof T as string extends P ? never : P]: T[P] };

/** A message of type K as the handler receives it (after validation and zod's transforms). */
export type MessageOf<S extends ProtocolSpec, K extends MessageType<S> = MessageType<S>> = K extends MessageType<S>
  ? { type: K } & Named<z.output<S[K]["msg"]>>
  : never;

export type ReplyOf<S extends ProtocolSpec, K extends MessageType<S>> = S[K] extends { reply: infer R extends z.ZodType }
  ? z.output<R>
  : unknown;

export interface Protocol<S extends ProtocolSpec = ProtocolSpec> {
  readonly name: string;
  readonly spec: S;
  /** Checks an inbound body; throws InvalidMessageError that says what is wrong. */
  parseMessage(body: unknown): MessageOf<S>;
  /** Checks a reply to a message of type `type`; throws InvalidMessageError. */
  parseReply<K extends MessageType<S>>(type: K, value: unknown): ReplyOf<S, K>;
}

export function defineProtocol<const S extends ProtocolSpec>(name: string, spec: S): Protocol<S> {
  const schemas = new Map<string, z.ZodType>();
  for (const [type, m] of Object.entries(spec)) schemas.set(type, m.msg.extend({ type: z.literal(type) }));
  const known = [...schemas.keys()].join(", ");

  return {
    name,
    spec,
    parseMessage(body) {
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new InvalidMessageError(`${name}: a message must be an object with a "type", got ${describe(body)}`);
      }
      const type = (body as { type?: unknown }).type;
      const schema = typeof type === "string" ? schemas.get(type) : undefined;
      if (!schema) {
        throw new InvalidMessageError(`${name}: unknown message type ${JSON.stringify(type)} (known: ${known})`);
      }
      const r = schema.safeParse(body);
      if (!r.success) throw new InvalidMessageError(`${name}.${type as string}: ${z.prettifyError(r.error)}`);
      return r.data as MessageOf<S>;
    },
    parseReply(type, value) {
      const schema = spec[type]?.reply;
      if (!schema) return value as ReplyOf<S, typeof type>;
      const r = schema.safeParse(value);
      if (!r.success) throw new InvalidMessageError(`${name}.${type} reply: ${z.prettifyError(r.error)}`);
      return r.data as ReplyOf<S, typeof type>;
    },
  };
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (v instanceof Uint8Array) return `${v.byteLength} bytes`;
  return typeof v;
}
