import { test } from "node:test";
import assert from "node:assert/strict";
import { encode, decode, CodecError } from "../../runtime/index.ts";

test("codec round-trips typed arrays as binary", () => {
  const f = new Float32Array(1000).map((_, i) => i * 0.5 - 3);
  const msg = { step: 7, f, i: new Int32Array([1, -2, 2 ** 31 - 1]), u: new Uint8Array([0, 255]), big: 2n ** 40n };
  const bytes = encode(msg);
  // 4000 bytes of floats plus a small header: numbers were not written one by one as msgpack floats (5 bytes each)
  assert.ok(bytes.byteLength < 4200, `encoded size ${bytes.byteLength}`);
  const out = decode(bytes) as typeof msg;
  assert.ok(out.f instanceof Float32Array);
  assert.deepEqual(Array.from(out.f), Array.from(f));
  assert.ok(out.i instanceof Int32Array);
  assert.deepEqual(Array.from(out.i), [1, -2, 2 ** 31 - 1]);
  assert.deepEqual(Array.from(out.u), [0, 255]);
  assert.equal(out.big, 2n ** 40n);
});

test("codec turns garbage into a CodecError", () => {
  assert.throws(() => decode(new Uint8Array([0xc1, 0xc1, 0xc1])), CodecError);
  const truncated = encode({ a: "x".repeat(100) }).subarray(0, 20);
  assert.throws(() => decode(truncated), CodecError);
});
