// DP and FSDP plans against one rank on the same global batch: loss, global grad norm and
// the parameters after one AdamW step; FSDP holds only its shards between steps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { flatShardRange as checkpointRange } from "../../models/index.ts";
import { flatShardRange } from "../../mesh/plans/index.ts";
import { assertMatches, batchOf, meshStep, referenceStep, tinyConfigs } from "./mesh-plans-kit.ts";

const two = [batchOf([5, 9, 2], 1), batchOf([7, 3, 6], 2)];
const four = [...two, batchOf([4, 4, 8], 3), batchOf([11, 5], 4)];

test("DP=2 (qwen2, float64): one step equals a single rank on both batches", async () => {
  const run = await meshStep(tinyConfigs.qwen2!, "float64", { dp: 2, fsdp: 1, sp: 1 }, two);
  assertMatches(run, referenceStep(tinyConfigs.qwen2!, "float64", two), 1e-10);
  assert.ok(run.heldAfterStep.every((n) => n === run.totalParamElements), "DP keeps whole parameters");
});

test("FSDP=2 (gpt2, float64): two steps equal a single rank's; each rank holds only its shards between steps", async () => {
  const run = await meshStep(tinyConfigs.gpt2!, "float64", { dp: 1, fsdp: 2, sp: 1 }, two, { steps: 2 });
  assertMatches(run, referenceStep(tinyConfigs.gpt2!, "float64", two, "adamw", 2), 1e-10);
  assert.deepEqual(run.releasedAfterStep, [true, true], "every Param released its whole value");
  const total = run.totalParamElements;
  assert.equal(run.heldAfterStep[0]! + run.heldAfterStep[1]!, total, "the shards partition the parameters");
  for (const held of run.heldAfterStep) assert.ok(held <= Math.ceil(total / 2) + 64 && held >= total / 2 - 64, `held ${held} of ${total}`);
});

test("FSDP=4 (qwen2, float64, blocks kept gathered from forward to backward) equals a single rank", async () => {
  const run = await meshStep(tinyConfigs.qwen2!, "float64", { dp: 1, fsdp: 4, sp: 1 }, four, { reshardAfterForward: false });
  assertMatches(run, referenceStep(tinyConfigs.qwen2!, "float64", four), 1e-10);
  const total = run.totalParamElements;
  assert.equal(
    run.heldAfterStep.reduce((a, b) => a + b, 0),
    total,
  );
  for (const held of run.heldAfterStep) assert.ok(held <= total / 4 + 64, `held ${held} of ${total}`);
});

test("dp=2 x fsdp=2 (qwen3, tied head, float64): two steps equal a single rank's on four batches", async () => {
  const run = await meshStep(tinyConfigs.qwen3!, "float64", { dp: 2, fsdp: 2, sp: 1 }, four, { steps: 2 });
  assertMatches(run, referenceStep(tinyConfigs.qwen3!, "float64", four, "adamw", 2), 1e-10);
});

test("FSDP=2 in float32 (llama, biases) matches a single rank within 1e-5", async () => {
  const run = await meshStep(tinyConfigs.llama!, "float32", { dp: 1, fsdp: 2, sp: 1 }, two);
  assertMatches(run, referenceStep(tinyConfigs.llama!, "float32", two), 1e-5);
});

test("the plans' flat shard ranges are the checkpoint's", () => {
  for (const [n, k] of [[10, 4], [3, 4], [16, 4], [0, 2], [7, 1]] as const) {
    for (let j = 0; j < k; j++) assert.deepEqual(flatShardRange(n, j, k), checkpointRange(n, j, k), `${n} over ${k}, shard ${j}`);
  }
});

test("FSDP=2 with two micro-batches per rank (gradient accumulation into the shards) equals a single rank", async () => {
  const run = await meshStep(tinyConfigs.qwen2!, "float64", { dp: 1, fsdp: 2, sp: 1 }, four);
  assertMatches(run, referenceStep(tinyConfigs.qwen2!, "float64", four), 1e-10);
});
