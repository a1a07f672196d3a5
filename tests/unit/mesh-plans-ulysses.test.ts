// Ulysses sequence parallelism against one rank on the same batch: sequences cross the
// shard boundaries, heads are split (or KV heads replicated) by all-to-alls inside
// attention; alone, with FSDP over sp, with dp, with recomputation.
import { test } from "node:test";
import assert from "node:assert/strict";
import { kvHeads, sequenceShard } from "../../mesh/plans/index.ts";
import { liveTensors } from "../../native/index.ts";
import { assertMatches, batchOf, meshStep, referenceStep, tinyConfigs } from "./mesh-plans-kit.ts";

// 16 tokens: with sp=2 the boundary (8) falls inside the second sequence; with sp=4 the
// boundaries 4, 8 and 12 all fall inside sequences.
const one = [batchOf([5, 9, 2], 1)];

test("sequenceShard: contiguous token slices, cu_seqlens clipped to the slice, positions and labels kept", () => {
  const b = one[0]!;
  const s0 = sequenceShard(b, 0, 2);
  const s1 = sequenceShard(b, 1, 2);
  assert.deepEqual(Array.from(s0.cuSeqlens), [0, 5, 8]);
  assert.deepEqual(Array.from(s1.cuSeqlens), [0, 6, 8]);
  assert.deepEqual([...s0.tokens, ...s1.tokens], [...b.tokens]);
  assert.deepEqual([...s0.positions, ...s1.positions], [...b.positions]);
  assert.deepEqual([...s0.labels!, ...s1.labels!], [...b.labels!]);
  assert.deepEqual(Array.from(s1.positions.slice(0, 3)), [3, 4, 5], "the second slice starts mid-sequence");
  assert.throws(() => sequenceShard(batchOf([5, 4], 1), 0, 2), /9 tokens does not split evenly over sp=2/);
});

test("KV heads: split when they divide over sp, else each rank gets the head its query heads use", () => {
  assert.deepEqual([0, 1, 2, 3].map((j) => kvHeads(2, 4)(j)), [
    { start: 0, count: 1 },
    { start: 0, count: 1 },
    { start: 1, count: 1 },
    { start: 1, count: 1 },
  ]);
  assert.deepEqual([0, 1].map((j) => kvHeads(4, 2)(j)), [
    { start: 0, count: 2 },
    { start: 2, count: 2 },
  ]);
  assert.throws(() => kvHeads(3, 2), /3 KV heads/);
});

test("SP=2 (qwen2, heads split, float64, replicated grads): one step equals a single rank", async () => {
  const run = await meshStep(tinyConfigs.qwen2!, "float64", { dp: 1, fsdp: 1, sp: 2 }, one, { shard: false });
  assertMatches(run, referenceStep(tinyConfigs.qwen2!, "float64", one), 1e-10);
});

test("SP=4 (qwen2, 2 KV heads replicated over 4 ranks, FSDP over sp): two steps equal a single rank's", async () => {
  const run = await meshStep(tinyConfigs.qwen2!, "float64", { dp: 1, fsdp: 1, sp: 4 }, one, { steps: 2 });
  assertMatches(run, referenceStep(tinyConfigs.qwen2!, "float64", one, "adamw", 2), 1e-10);
});

test("SP=2 with recomputation (gpt2, learned positions) equals a single rank, and nothing leaks", async () => {
  const before = liveTensors().count;
  const run = await meshStep(tinyConfigs.gpt2!, "float64", { dp: 1, fsdp: 1, sp: 2 }, one, { recompute: true });
  assert.equal(liveTensors().count, before, "every tensor of the step, plan and models was freed");
  assertMatches(run, referenceStep(tinyConfigs.gpt2!, "float64", one), 1e-10);
});

test("dp=2 x sp=2 (mistral: sliding window, one KV head, float32) matches a single rank within 1e-5", async () => {
  const two = [...one, batchOf([3, 6, 7], 2)];
  const run = await meshStep(tinyConfigs.mistral!, "float32", { dp: 2, fsdp: 1, sp: 2 }, two);
  assertMatches(run, referenceStep(tinyConfigs.mistral!, "float32", two), 1e-5);
});
