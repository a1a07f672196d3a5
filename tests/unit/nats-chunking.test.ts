import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Reassembler,
  formatChunkHeader,
  parseChunkHeader,
  splitBytes,
  type ChunkInfo,
} from "../../runtime/transport/chunking.ts";
import { checkAddress, checkJobName } from "../../runtime/transport/index.ts";

function bytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

test("splitBytes covers the input exactly, in order, with views not copies", () => {
  const b = bytes(10_001);
  const parts = splitBytes(b, 1000);
  assert.equal(parts.length, 11);
  assert.equal(parts[10]?.byteLength, 1);
  assert.ok(parts.every((p) => p.buffer === b.buffer));
  assert.deepEqual(Buffer.concat(parts), Buffer.from(b));
  assert.equal(splitBytes(new Uint8Array(0), 10).length, 1);
  assert.throws(() => splitBytes(b, 0), RangeError);
});

test("chunk headers round-trip and malformed ones are rejected, not thrown", () => {
  const info: ChunkInfo = { id: "abc", index: 2, count: 5, totalBytes: 12345 };
  assert.deepEqual(parseChunkHeader(formatChunkHeader(info)), info);
  for (const bad of ["", "abc", "abc 1 2", "abc 5 5 10", "abc -1 2 3", "abc x 2 3", "abc 0 0 0", "abc 0 1 -4", "a 0 1 1 extra"]) {
    assert.equal(parseChunkHeader(bad), undefined, bad);
  }
});

test("Reassembler rebuilds interleaved messages and hands back chunk 0's meta", () => {
  const r = new Reassembler<string>(1000, 1 << 20);
  const a = bytes(2500);
  const b = bytes(1200).reverse();
  const pa = splitBytes(a, 1000);
  const pb = splitBytes(b, 1000);
  const add = (id: string, parts: Uint8Array[], i: number, total: number) =>
    r.add({ id, index: i, count: parts.length, totalBytes: total }, parts[i] as Uint8Array, () => `meta-${id}-${i}`);
  assert.equal(add("a", pa, 0, a.byteLength).kind, "pending");
  assert.equal(add("b", pb, 0, b.byteLength).kind, "pending");
  assert.equal(add("a", pa, 1, a.byteLength).kind, "pending");
  assert.equal(r.size, 2);
  const doneB = add("b", pb, 1, b.byteLength);
  assert.equal(doneB.kind, "complete");
  if (doneB.kind === "complete") {
    assert.deepEqual(doneB.bytes, b);
    assert.equal(doneB.meta, "meta-b-0");
  }
  const doneA = add("a", pa, 2, a.byteLength);
  assert.equal(doneA.kind, "complete");
  if (doneA.kind === "complete") assert.deepEqual(doneA.bytes, a);
  assert.equal(r.size, 0);
});

test("Reassembler drops messages with gaps, lies about their size, or no start", () => {
  const r = new Reassembler<null>(1000, 10_000);
  const meta = () => null;
  const chunk = new Uint8Array(100);
  assert.equal(r.add({ id: "x", index: 1, count: 3, totalBytes: 300 }, chunk, meta).kind, "dropped");
  assert.equal(r.add({ id: "y", index: 0, count: 3, totalBytes: 300 }, chunk, meta).kind, "pending");
  assert.equal(r.add({ id: "y", index: 2, count: 3, totalBytes: 300 }, chunk, meta).kind, "dropped");
  assert.equal(r.size, 0, "a message with a gap is forgotten");
  assert.equal(r.add({ id: "z", index: 0, count: 2, totalBytes: 150 }, chunk, meta).kind, "pending");
  assert.equal(r.add({ id: "z", index: 1, count: 2, totalBytes: 150 }, chunk, meta).kind, "dropped", "overflows its size");
  assert.equal(r.add({ id: "big", index: 0, count: 2, totalBytes: 1e9 }, chunk, meta).kind, "dropped", "over maxBytes");
  assert.equal(r.add({ id: "short", index: 0, count: 2, totalBytes: 300 }, chunk, meta).kind, "pending");
  assert.equal(r.add({ id: "short", index: 1, count: 2, totalBytes: 300 }, chunk, meta).kind, "dropped", "too few bytes");
  assert.equal(r.size, 0);
});

test("Reassembler.sweep forgets messages whose remaining chunks never came", () => {
  const r = new Reassembler<null>(1000, 10_000);
  r.add({ id: "old", index: 0, count: 2, totalBytes: 20 }, new Uint8Array(10), () => null, 0);
  r.add({ id: "new", index: 0, count: 2, totalBytes: 20 }, new Uint8Array(10), () => null, 900);
  assert.equal(r.sweep(999), 0);
  assert.equal(r.sweep(1000), 1);
  assert.equal(r.size, 1);
  assert.equal(r.sweep(1900), 1);
  assert.equal(r.size, 0);
});

test("job names and addresses must be valid NATS subject tokens", () => {
  checkJobName("job-1_a");
  checkAddress("rank.3");
  checkAddress("coordinator");
  for (const bad of ["", "a b", "a.b", "*", "x>", "\t"]) assert.throws(() => checkJobName(bad), /invalid job name/, bad);
  for (const bad of ["", "a b", "a..b", ".a", "a.", "rank.*", ">", "a.>"]) {
    assert.throws(() => checkAddress(bad), /invalid address/, bad);
  }
});
