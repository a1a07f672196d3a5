// Opaque states (the data pipeline's, RNG) ride in the JSON manifest. They hold typed arrays
// (a packer's token buffers) and may hold bigints, which plain JSON loses; this keeps them,
// tagged as {"$typed": "Int32Array", "base64": "..."} and {"$bigint": "123"}, so that
// fromTaggedJSON(toTaggedJSON(x)) deep-equals x. An object whose only keys are a tag's is
// taken for the tag: no state of ours has such keys.

const TYPED = {
  Int8Array,
  Uint8Array,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
} as const;
type TypedName = keyof typeof TYPED;

function typedName(v: unknown): TypedName | undefined {
  if (!ArrayBuffer.isView(v) || v instanceof DataView) return undefined;
  const name = v.constructor.name;
  return name in TYPED ? (name as TypedName) : undefined;
}

/** A JSON-safe copy of `value` (typed arrays and bigints tagged); undefined members are dropped as JSON drops them. */
export function toTaggedJSON(value: unknown): unknown {
  return JSON.parse(
    JSON.stringify(value, function (this: unknown, key: string) {
      // The replacer's own argument is already toJSON'd (Buffers become {type, data}); read the original.
      const v = (this as Record<string, unknown>)[key];
      const name = typedName(v);
      if (name) {
        const a = v as ArrayBufferView;
        return { $typed: name, base64: Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64") };
      }
      if (typeof v === "bigint") return { $bigint: v.toString() };
      return v;
    }) ?? "null",
  );
}

export function fromTaggedJSON(json: unknown): unknown {
  if (Array.isArray(json)) return json.map(fromTaggedJSON);
  if (json === null || typeof json !== "object") return json;
  const o = json as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 2 && typeof o.$typed === "string" && typeof o.base64 === "string" && o.$typed in TYPED) {
    const Ctor = TYPED[o.$typed as TypedName];
    const bytes = Buffer.from(o.base64, "base64");
    if (bytes.byteLength % Ctor.BYTES_PER_ELEMENT !== 0) throw new Error(`tagged JSON: ${bytes.byteLength} bytes do not make a ${o.$typed}`);
    // A fresh buffer: a view into Buffer's pool could be misaligned for the element type.
    const out = new Ctor(bytes.byteLength / Ctor.BYTES_PER_ELEMENT);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  if (keys.length === 1 && typeof o.$bigint === "string") return BigInt(o.$bigint);
  const r: Record<string, unknown> = {};
  for (const k of keys) r[k] = fromTaggedJSON(o[k]);
  return r;
}
