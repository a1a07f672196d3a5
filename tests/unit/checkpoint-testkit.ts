// Shared by checkpoint-*.test.ts: deterministic tensors, their per-rank shards under a mesh,
// and temp roots.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { flatShardRange, rowShardRange, type CheckpointMeta, type RankShardInput, type ShardRange } from "../../models/checkpoint/index.ts";

export interface TestTensor {
  name: string;
  shape: number[];
  data: Float32Array;
  /** How the saving mesh splits it. */
  split: "flat" | "rows";
}

/** Values with awkward bits (-0, a subnormal, a NaN payload, infinities) so "bit-identical" means something. */
export function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = (a / 2 ** 32 - 0.5) * 4;
  }
  const bits = new Uint32Array(out.buffer);
  if (n > 0) bits[0] = 0x80000000;
  if (n > 1) bits[1] = 0x00000001;
  if (n > 2) bits[2] = 0x7fc01234;
  if (n > 3) out[3] = -Infinity;
  return out;
}

export function testTensors(): TestTensor[] {
  const spec: [string, number[], "flat" | "rows"][] = [
    ["model.embed_tokens.weight", [10, 6], "rows"],
    ["model.layers.0.mlp.up_proj.weight", [8, 6], "flat"],
    ["model.layers.0.mlp.up_proj.bias", [7], "flat"],
    ["model.layers.0.self_attn.q_proj.weight", [5, 3], "flat"],
    ["model.norm.weight", [3], "flat"],
  ];
  return spec.map(([name, shape, split], i) => ({ name, shape, split, data: values(shape.reduce((x, y) => x * y, 1), 11 + i) }));
}

export function rangeOf(t: TestTensor, index: number, count: number): ShardRange {
  return t.split === "rows" ? rowShardRange(t.shape, index, count) : flatShardRange(t.data.length, index, count);
}

/** Each of `world` fsdp ranks' input: its range of every tensor. */
export function rankInputs(tensors: TestTensor[], world: number): RankShardInput[] {
  return Array.from({ length: world }, (_, r) => ({
    tensors: tensors.map((t) => {
      const range = rangeOf(t, r, world);
      return { name: t.name, shape: t.shape, range, data: t.data.slice(range.start, range.end) };
    }),
  }));
}

export function meta(step: number, world: number, extra: Partial<CheckpointMeta> = {}): CheckpointMeta {
  return { step, tokensSeen: step * 1000, mesh: { dp: 1, fsdp: world, sp: 1 }, ...extra };
}

export function bitsEqual(a: Float32Array, b: Float32Array, what: string): void {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  if (x.length !== y.length) throw new Error(`${what}: ${x.length} values, expected ${y.length}`);
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) throw new Error(`${what}: bits differ at ${i}: ${x[i]!.toString(16)} vs ${y[i]!.toString(16)}`);
  }
}

export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tessera-ckpt-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
