// The wire codec: MessagePack through msgpackr. Typed arrays (Float32Array, Int32Array,
// Uint8Array, BigInt64Array, ...) travel as binary extension records, not as number lists.
// msgpackr encodes them straight from their memory; on decode it copies each array once into
// a fresh, aligned buffer (a view into the receive buffer could be misaligned for its type).
// Uint8Array decodes as a view into the received bytes: no copy.
import { Packr } from "msgpackr";
import { CodecError } from "./errors.ts";

const packr = new Packr({ useRecords: false, moreTypes: true, int64AsType: "bigint" });

export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes one message; garbage or truncated bytes raise a CodecError (never a crash). */
export function decode(bytes: Uint8Array): unknown {
  try {
    return packr.unpack(bytes);
  } catch (err) {
    throw new CodecError(`cannot decode ${bytes.byteLength}-byte message: ${(err as Error).message}`);
  }
}
