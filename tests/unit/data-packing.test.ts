import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DataPipeline, IGNORE_INDEX, Packer, type PackedBatch, type PackingStrategy, type TokenizedRecord } from "../../data/index.ts";
import { baseOptions, sequences, take, tempDir, text, writeJsonl } from "../fixtures/data/make.ts";
import { Rng } from "../../data/rng.ts";

/** A record whose every token is its id (so a sequence names the record it came from). */
function rec(id: number, n: number): TokenizedRecord {
  const tokens = new Int32Array(n).fill(id);
  const labels = new Int32Array(n).fill(id);
  labels[n - 1] = IGNORE_INDEX;
  return { tokens, labels, where: { file: "mem", line: id } };
}

function checkBatch(b: PackedBatch, L: number): void {
  const T = b.tokens.length;
  assert.ok(T > 0 && T <= L, `T=${T} within the budget ${L}`);
  assert.equal(b.labels.length, T);
  assert.equal(b.positions.length, T);
  assert.equal(b.cu_seqlens[0], 0);
  assert.equal(b.cu_seqlens[b.cu_seqlens.length - 1], T);
  for (let s = 0; s + 1 < b.cu_seqlens.length; s++) {
    const lo = b.cu_seqlens[s]!;
    const hi = b.cu_seqlens[s + 1]!;
    assert.ok(hi > lo, "no empty sequence");
    for (let i = lo; i < hi; i++) assert.equal(b.positions[i], i - lo, "positions restart per sequence");
    assert.equal(b.labels[hi - 1], IGNORE_INDEX, "no label across a sequence boundary");
    assert.ok(b.tokens.subarray(lo, hi).every((x) => x === b.tokens[lo]), "one record per sequence");
  }
}

function packAll(strategy: PackingStrategy, lengths: number[], L: number, group: number, window: number) {
  const p = new Packer({ length: L, strategy, window, group, onOverlong: "truncate" }, 1);
  const groups: PackedBatch[][] = [];
  let truncated = 0;
  lengths.forEach((n, id) => {
    if (p.add(rec(id + 1, n)) === "truncated") truncated++;
    for (let g = p.take(); g; g = p.take()) groups.push(g);
  });
  const tail = p.finish();
  for (let g = p.take(); g; g = p.take()) groups.push(g);
  return { groups, tail, truncated };
}

/** The largest difference in tokens between two batches of one step, as a fraction of the budget. */
function maxSpread(groups: PackedBatch[][], L: number): number {
  return Math.max(
    ...groups.map((g) => {
      const t = g.map((b) => b.tokens.length);
      return (Math.max(...t) - Math.min(...t)) / L;
    }),
  );
}

/** Batches a naive greedy packer needs: each record into the current batch, or a new one. */
function naiveBatches(lens: number[], L: number): number {
  let batches = 0;
  let room = 0;
  for (const n0 of lens) {
    const n = Math.min(n0, L);
    if (n > room) {
      batches++;
      room = L;
    }
    room -= n;
  }
  return batches;
}

const rng = new Rng(42);
const lengths = Array.from({ length: 3000 }, () => 1 + Math.floor(rng.next() ** 2 * 700));
lengths[10] = 1500; // longer than the budget: truncated

for (const strategy of ["ffd", "best_fit", "balanced"] as const) {
  test(`packing (${strategy}): every record whole in exactly one batch, invariants hold, budget well filled`, () => {
    const L = 1024;
    const { groups, tail, truncated } = packAll(strategy, lengths, L, 4, 256);
    assert.equal(truncated, 1);
    const seen = new Map<number, number>();
    for (const g of groups) {
      assert.equal(g.length, 4);
      for (const b of g) {
        checkBatch(b, L);
        for (let s = 0; s + 1 < b.cu_seqlens.length; s++) {
          const id = b.tokens[b.cu_seqlens[s]!]!;
          assert.ok(!seen.has(id), `record ${id} packed twice`);
          seen.set(id, b.cu_seqlens[s + 1]! - b.cu_seqlens[s]!);
        }
      }
    }
    assert.equal(seen.size + tail, lengths.length, "every record packed (or left in the last incomplete group)");
    for (const [id, n] of seen) assert.equal(n, Math.min(lengths[id - 1]!, L), `record ${id} whole`);
    const tokens = groups.flat().reduce((a, b) => a + b.tokens.length, 0);
    const fill = tokens / (groups.length * 4 * L);
    assert.ok(fill > 0.95, `fill ${fill.toFixed(3)}`);
    if (strategy === "balanced") {
      // the batches of one step carry near-equal loads: closer than ffd's
      const worst = maxSpread(groups, L);
      const ffd = maxSpread(packAll("ffd", lengths, L, 4, 256).groups, L);
      assert.ok(worst < 0.05 && worst < ffd, `largest load spread within a step: balanced ${worst.toFixed(3)}, ffd ${ffd.toFixed(3)} of the budget`);
    }
  });
}

test("packing beats a naive greedy packer (next record into the current batch, or a new batch)", () => {
  const L = 1024;
  const ffd = packAll("ffd", lengths, L, 1, 512).groups.flat();
  const naive = naiveBatches(lengths, L);
  assert.ok(ffd.length < naive * 0.9, `ffd ${ffd.length} batches, naive ${naive}`);
});

test("a shuffle window of one record still packs: records wait in the open batch until it is full", () => {
  const L = 1024;
  const { groups, tail } = packAll("best_fit", lengths.slice(0, 500), L, 1, 1);
  const batches = groups.flat();
  batches.forEach((b) => checkBatch(b, L));
  assert.equal(tail, 0);
  const fill = batches.reduce((a, b) => a + b.tokens.length, 0) / (batches.length * L);
  const naive = naiveBatches(lengths.slice(0, 500), L);
  assert.ok(batches.length < naive, `window 1: ${batches.length} batches (fill ${fill.toFixed(3)}), naive ${naive}`);
});

test("sharding: batch groups get disjoint shares covering the data; next() of group r is group()[r]", async (t) => {
  const path = join(tempDir(t), "t.jsonl");
  writeJsonl(path, Array.from({ length: 240 }, (_, i) => ({ text: text(i, i % 13) })));
  const W = 3;
  const opts = baseOptions({ path, repeat: false, packingLength: 128, shuffleWindow: 16 });
  const whole = await DataPipeline.open({ ...opts, shard: { index: 0, count: W } });
  const groups: PackedBatch[][] = [];
  for (let g = await whole.nextGroup(); g; g = await whole.nextGroup()) groups.push(g);
  const tail = whole.stats().tail_records;
  await whole.close();
  const shares: string[][] = [];
  for (let r = 0; r < W; r++) {
    const p = await DataPipeline.open({ ...opts, shard: { index: r, count: W } });
    const mine = await take(p, 1000);
    await p.close();
    assert.deepEqual(mine, groups.map((g) => g[r]!), `group ${r}`);
    shares.push(mine.flatMap(sequences));
  }
  const all = shares.flat();
  assert.equal(new Set(all).size, all.length, "no record in two shares");
  assert.equal(all.length + tail, 240);
});
