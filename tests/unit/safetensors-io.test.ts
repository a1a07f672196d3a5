import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsReader, writeSafetensors, roundToBf16 } from "../../models/index.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tessera-st-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Builds a safetensors file by hand (independent of the writer under test). */
function rawFile(header: Record<string, unknown>, data: Uint8Array, headerText?: string): Buffer {
  const json = Buffer.from(headerText ?? JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

test("fp32 round trip is bit-exact, including NaN, -0, infinities and subnormals", async () => {
  await withDir(async (dir) => {
    const special = new Float32Array([NaN, -0, Infinity, -Infinity, 1.4e-45, 3.4028234e38, Math.PI]);
    const rnd = new Float32Array(300).map((_, i) => Math.sin(i * 12.9898) * 43758.5453);
    const p = join(dir, "a.safetensors");
    await writeSafetensors(p, [
      { name: "w", shape: [special.length], data: special },
      { name: "b.x", shape: [3, 100], data: rnd },
    ]);
    const r = await SafetensorsReader.open(p);
    try {
      assert.deepEqual(r.names(), ["b.x", "w"]);
      assert.deepEqual(bytesOf(await r.readFloat32("w", [7])), bytesOf(special));
      assert.deepEqual(bytesOf(await r.readFloat32("b.x")), bytesOf(rnd));
      assert.deepEqual(r.metadata, { format: "pt" });
    } finally {
      await r.close();
    }
    // Nothing but the file itself is left in the folder (the temporary name was renamed).
    assert.deepEqual(await readdir(dir), ["a.safetensors"]);
  });
});

test("file layout: 8-aligned space-padded header, tensors in name order, format pt", async () => {
  await withDir(async (dir) => {
    const p = join(dir, "b.safetensors");
    await writeSafetensors(p, [
      { name: "z", shape: [1], data: new Float32Array([1]) },
      { name: "a", shape: [2], data: new Float32Array([2, 3]) },
      { name: "ids", shape: [2], data: new Int32Array([5, -6]), dtype: "I64" },
    ]);
    const buf = await readFile(p);
    const n = Number(buf.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    const text = buf.subarray(8, 8 + n).toString("utf8");
    assert.match(text, / *$/);
    const h = JSON.parse(text);
    assert.deepEqual(h.__metadata__, { format: "pt" });
    assert.deepEqual(h.a, { dtype: "F32", shape: [2], data_offsets: [0, 8] });
    assert.deepEqual(h.ids, { dtype: "I64", shape: [2], data_offsets: [8, 24] });
    assert.deepEqual(h.z, { dtype: "F32", shape: [1], data_offsets: [24, 28] });
    assert.equal(buf.length, 8 + n + 28);
    assert.equal(buf.readBigInt64LE(8 + n + 16), -6n);
    const r = await SafetensorsReader.open(p);
    assert.deepEqual(Array.from(await r.readInt32("ids")), [5, -6]);
    await r.close();
  });
});

test("bf16: values round to nearest-even, and a bf16 file round-trips bit-exactly", async () => {
  // Hand-computed: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> even (1); 1 + 3*2^-8 -> 1 + 2^-6.
  assert.equal(roundToBf16(1 + 2 ** -8), 1);
  assert.equal(roundToBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6);
  assert.equal(roundToBf16(1 + 2 ** -8 + 2 ** -20), 1 + 2 ** -7);
  assert.ok(Number.isNaN(roundToBf16(NaN)));
  await withDir(async (dir) => {
    const vals = new Float32Array(257).map((_, i) => Math.cos(i) * 10 ** ((i % 9) - 4));
    const p1 = join(dir, "1.safetensors");
    const p2 = join(dir, "2.safetensors");
    await writeSafetensors(p1, [{ name: "t", shape: [257], data: vals }], { dtype: "BF16" });
    const r1 = await SafetensorsReader.open(p1);
    assert.equal(r1.info("t").dtype, "BF16");
    const back = await r1.readFloat32("t");
    await r1.close();
    back.forEach((v, i) => assert.equal(v, roundToBf16(vals[i]!)));
    await writeSafetensors(p2, [{ name: "t", shape: [257], data: back }], { dtype: "BF16" });
    assert.deepEqual(await readFile(p2), await readFile(p1));
  });
});

test("F16, I64 and BF16 written by another writer are read exactly", async () => {
  await withDir(async (dir) => {
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x3800, 0x8000, 0x7c00]);
    const bf16 = new Uint16Array([0x3f80, 0xc049]); // 1, -3.140625
    const i64 = new BigInt64Array([0n, -1n, 2147483647n]);
    const data = Buffer.concat([bytesOf(f16), bytesOf(bf16), bytesOf(i64)]);
    const p = join(dir, "c.safetensors");
    await writeFile(
      p,
      rawFile(
        {
          h: { dtype: "F16", shape: [7], data_offsets: [0, 14] },
          b: { dtype: "BF16", shape: [2, 1], data_offsets: [14, 18] },
          i: { dtype: "I64", shape: [3], data_offsets: [18, 42] },
        },
        data,
      ),
    );
    const r = await SafetensorsReader.open(p);
    assert.deepEqual(Array.from(await r.readFloat32("h")), [1, -2, 65504, 2 ** -24, 0.5, -0, Infinity]);
    assert.deepEqual(Array.from(await r.readFloat32("b", [2, 1])), [1, -3.140625]);
    assert.deepEqual(Array.from(await r.readInt32("i")), [0, -1, 2147483647]);
    assert.deepEqual(Array.from(await r.readFloat32("i")), [0, -1, 2147483648]);
    await assert.rejects(r.readInt32("h"), /tensor h .*not an integer/);
    await r.close();
  });
});

test("sharded checkpoints are read through model.safetensors.index.json", async () => {
  await withDir(async (dir) => {
    const a = new Float32Array([1, 2, 3, 4]);
    const b = new Float32Array([5, 6]);
    await writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), [{ name: "layer.0.w", shape: [2, 2], data: a }]);
    await writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), [{ name: "layer.1.w", shape: [2], data: b }]);
    const index: { metadata: object; weight_map: Record<string, string> } = {
      metadata: { total_size: 24 },
      weight_map: { "layer.0.w": "model-00001-of-00002.safetensors", "layer.1.w": "model-00002-of-00002.safetensors" },
    };
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    const r = await SafetensorsReader.open(dir);
    assert.deepEqual(r.names(), ["layer.0.w", "layer.1.w"]);
    assert.deepEqual(Array.from(await r.readFloat32("layer.1.w")), [5, 6]);
    assert.deepEqual(Array.from(await r.readFloat32("layer.0.w", [2, 2])), [1, 2, 3, 4]);
    assert.match(r.info("layer.1.w").file, /model-00002-of-00002\.safetensors$/);
    await r.close();

    // An index naming a tensor its shard does not hold is an error naming both.
    index.weight_map["layer.2.w"] = "model-00002-of-00002.safetensors";
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    await assert.rejects(SafetensorsReader.open(dir), /tensor layer\.2\.w .*model-00002-of-00002\.safetensors/);
  });
});

test("a folder with one model.safetensors opens without an index", async () => {
  await withDir(async (dir) => {
    await writeSafetensors(join(dir, "model.safetensors"), [{ name: "x", shape: [1], data: new Float32Array([7]) }]);
    const r = await SafetensorsReader.open(dir);
    assert.deepEqual(Array.from(await r.readFloat32("x")), [7]);
    await r.close();
  });
});

test("corrupt and truncated files fail with an error naming the tensor and the file", async () => {
  await withDir(async (dir) => {
    const ok = { w: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, v: { dtype: "F32", shape: [1], data_offsets: [8, 12] } };
    const data = new Uint8Array(12);
    const cases: { name: string; bytes: Buffer; error: RegExp }[] = [
      { name: "short", bytes: Buffer.from([1, 2, 3]), error: /short\.safetensors.*too short/ },
      {
        name: "hdrlen",
        bytes: (() => {
          const b = rawFile(ok, data);
          b.writeBigUInt64LE(10_000n);
          return b;
        })(),
        error: /hdrlen\.safetensors: header length 10000 exceeds the file size/,
      },
      { name: "json", bytes: rawFile({}, data, '{"w": {"dtype": "F32",'), error: /json\.safetensors: header is not valid JSON/ },
      {
        name: "range",
        bytes: rawFile({ ...ok, v: { dtype: "F32", shape: [1], data_offsets: [8, 16] } }, data),
        error: /tensor v in .*range\.safetensors: data_offsets \[8, 16\] out of range/,
      },
      {
        name: "overlap",
        bytes: rawFile({ ...ok, v: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, data),
        error: /tensor v in .*overlap\.safetensors overlaps tensor w/,
      },
      {
        name: "size",
        bytes: rawFile({ ...ok, w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, data),
        error: /tensor w in .*size\.safetensors: holds 8 bytes but shape \[3\] of F32 needs 12/,
      },
      {
        name: "dtype",
        bytes: rawFile({ ...ok, w: { dtype: "F8_E4M3", shape: [8], data_offsets: [0, 8] } }, data),
        error: /tensor w in .*dtype\.safetensors: unsupported dtype/,
      },
      // Cut in the data section: the last tensor's offsets now run past the end.
      { name: "trunc", bytes: rawFile(ok, data).subarray(0, -2), error: /tensor v in .*trunc\.safetensors: data_offsets \[8, 12\] out of range/ },
    ];
    for (const c of cases) {
      const p = join(dir, `${c.name}.safetensors`);
      await writeFile(p, c.bytes);
      await assert.rejects(SafetensorsReader.open(p), c.error, c.name);
    }
    const p = join(dir, "good.safetensors");
    await writeFile(p, rawFile(ok, data));
    const r = await SafetensorsReader.open(p);
    await assert.rejects(r.readFloat32("missing"), /tensor missing not found in .*good\.safetensors/);
    await assert.rejects(r.readFloat32("w", [1, 2]), /tensor w in .*good\.safetensors has shape \[2\], expected \[1, 2\]/);
    await r.close();
    await assert.rejects(SafetensorsReader.open(join(dir, "nope.safetensors")), /cannot open .*nope\.safetensors/);
  });
});

test("the writer refuses duplicate names and data that does not match its shape, leaving no file", async () => {
  await withDir(async (dir) => {
    const p = join(dir, "x.safetensors");
    const one = new Float32Array([1]);
    await assert.rejects(writeSafetensors(p, [{ name: "a", shape: [1], data: one }, { name: "a", shape: [1], data: one }]), /tensor a given twice/);
    await assert.rejects(writeSafetensors(p, [{ name: "a", shape: [2], data: one }]), /tensor a has 1 values but shape \[2\]/);
    assert.deepEqual(await readdir(dir), []);
  });
});

test("a tensor that fails to produce its data is named, with the file, and no file is left", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tessera-st-"));
  try {
    const path = join(dir, "m.safetensors");
    const tensors = [
      { name: "a", shape: [2], data: new Float32Array([1, 2]) },
      { name: "b", shape: [2], data: () => { throw new Error("device copy failed"); } },
    ];
    await assert.rejects(writeSafetensors(path, tensors), (err: Error) => {
      assert.equal(err.message, `safetensors: writing ${path} (tensor b): device copy failed`);
      return true;
    });
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
