// The reply envelope on the wire: `{ ok: true, value }` or `{ ok: false, error: WireError }`.
// Plain objects, so every transport's codec carries them, and errors are rebuilt as their
// typed class on the asking side.
import { z } from "zod";
import { fromWireError, InvalidMessageError, toWireError, type RuntimeErrorCode, type WireError } from "../errors.ts";

export type ReplyEnvelope = { ok: true; value: unknown } | { ok: false; error: WireError };

const envelope = z.union([
  z.object({ ok: z.literal(true), value: z.unknown() }),
  z.object({ ok: z.literal(false), error: z.object({ code: z.string(), message: z.string() }) }),
]);

export const okReply = (value: unknown): ReplyEnvelope => ({ ok: true, value });
export const errorReply = (err: unknown): ReplyEnvelope => ({ ok: false, error: toWireError(err) });

/** The value a reply carries; throws the typed error it carries, or InvalidMessageError if it is not an envelope. */
export function openReply(body: unknown, from: string): unknown {
  const r = envelope.safeParse(body);
  if (!r.success) throw new InvalidMessageError(`malformed reply from "${from}": not a reply envelope`);
  if (r.data.ok) return r.data.value;
  // An unknown code (a newer peer) is rebuilt by fromWireError as a HandlerError.
  throw fromWireError({ code: r.data.error.code as RuntimeErrorCode, message: r.data.error.message });
}
