// A data state as bytes (runtime codec: msgpack, typed arrays as binary) or as JSON (typed
// arrays as base64), for checkpoints.
import { decode, encode } from "../runtime/index.ts";
import { DataError } from "./errors.ts";
import type { DataState } from "./types.ts";

export function encodeState(state: DataState): Uint8Array {
  return encode(state);
}

export function decodeState(bytes: Uint8Array): DataState {
  const s = decode(bytes) as DataState;
  if (!s || s.version !== 1) throw new DataError("not a data state (version 1)");
  return s;
}

const I32 = "$int32";

/** A JSON-safe copy: each Int32Array becomes {"$int32": base64}. */
export function stateToJSON(state: DataState): unknown {
  return JSON.parse(
    JSON.stringify(state, (_k, v: unknown) =>
      v instanceof Int32Array ? { [I32]: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") } : v,
    ),
  );
}

export function stateFromJSON(json: unknown): DataState {
  const revive = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(revive);
    if (v && typeof v === "object") {
      const o = v as Record<string, unknown>;
      if (typeof o[I32] === "string") {
        const b = Buffer.from(o[I32], "base64");
        const out = new Int32Array(b.byteLength / 4);
        new Uint8Array(out.buffer).set(b);
        return out;
      }
      const r: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(o)) r[k] = revive(x);
      return r;
    }
    return v;
  };
  const s = revive(json) as DataState;
  if (!s || s.version !== 1) throw new DataError("not a data state (version 1)");
  return s;
}
