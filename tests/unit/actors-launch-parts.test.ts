// The small parts of multi-rank training that need no processes: the pad that makes a batch
// split evenly over a Ulysses group (it must change neither the loss nor any gradient), the
// CPU threads each local rank gets, the world size `tessera train` derives, and the one-rank
// plan that touches no collectives.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createModel } from "../../models/index.ts";
import { DeviceMesh } from "../../mesh/index.ts";
import { createRankPlan, noCollectives, padToMultiple, threadsPerRank, type Batch } from "../../actors/index.ts";
import { worldSize } from "../../actors/commands/train.ts";
import { UsageError } from "../../runtime/index.ts";
import { randomizeParams, tinyBatch, tinyConfigs } from "./models-testkit.ts";

const asBatch = (b: ReturnType<typeof tinyBatch>): Batch => ({ tokens: b.tokens, positions: b.positions, cu_seqlens: b.cuSeqlens, labels: b.labels! });

test("padToMultiple appends one loss-free sequence; the model's loss and gradients are those of the unpadded batch", () => {
  const b = asBatch(tinyBatch()); // 16 tokens
  assert.equal(padToMultiple(b, 4), b, "already a multiple: the batch itself");
  const p = padToMultiple(b, 6);
  assert.equal(p.tokens.length, 18);
  assert.deepEqual([...p.cu_seqlens], [...b.cu_seqlens, 18]);
  assert.deepEqual([...p.labels.subarray(16)], [-100, -100]);
  assert.deepEqual([...p.positions.subarray(16)], [0, 1]);
  assert.deepEqual([...p.tokens.subarray(0, 16)], [...b.tokens]);

  const run = (batch: Batch) => {
    const model = createModel(tinyConfigs.qwen2!, { seed: 3, dtype: "float64" });
    randomizeParams(model.params(), 11);
    const r = model.loss({ tokens: batch.tokens, positions: batch.positions, cuSeqlens: batch.cu_seqlens, labels: batch.labels }, { gradScale: 0.1 });
    const grads = model.params().map((q) => Float64Array.from(q.grad!.toArray() as Float64Array));
    model.dispose();
    return { r, grads };
  };
  const a = run(b);
  const c = run(p);
  assert.equal(c.r.count, a.r.count);
  assert.equal(c.r.lossSum, a.r.lossSum);
  c.grads.forEach((g, i) => assert.deepEqual(g, a.grads[i]));
});

test("threadsPerRank shares the cores among a node's ranks, at least one each", () => {
  assert.equal(threadsPerRank(2, 16), 8);
  assert.equal(threadsPerRank(3, 16), 5);
  assert.equal(threadsPerRank(4, 2), 1);
  assert.equal(threadsPerRank(1, 2), 2);
});

test("tessera train's world size: the product of the mesh dims, or --nproc (needed when a dim is -1)", () => {
  assert.equal(worldSize({ dp: 2, fsdp: 2, sp: 1 }, undefined), 4);
  assert.equal(worldSize({ dp: -1, fsdp: 2, sp: 1 }, "6"), 6);
  assert.throws(() => worldSize({ dp: -1, fsdp: 2, sp: 1 }, undefined), UsageError);
  assert.throws(() => worldSize({ dp: 1, fsdp: 1, sp: 1 }, "0"), UsageError);
});

test("a one-rank plan asks for no collectives and steps like the model alone", async () => {
  const batch = tinyBatch();
  const make = () => {
    const m = createModel(tinyConfigs.qwen2!, { seed: 3, dtype: "float32" });
    randomizeParams(m.params(), 11);
    return m;
  };
  const model = make();
  const plan = createRankPlan(model, new DeviceMesh({ dp: 1, fsdp: 1, sp: 1 }, 1).layout(0), noCollectives, {
    optimizer: { name: "adamw", lr: 1e-3, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, muon: { momentum: 0.95, nesterov: true, ns_steps: 5 }, schedule: { name: "constant", warmup_steps: 0, decay_fraction: 0.1, min_lr_ratio: 0.1 } },
  });
  const got = await plan.microStep(batch, 0.05);
  await plan.finishGradients();
  const ref = make();
  const want = ref.loss(batch, { gradScale: 0.05 });
  assert.equal(got.lossSum, want.lossSum);
  const refSq = ref.params().reduce((a, p) => a + (p.grad!.toArray() as Float32Array).reduce((s, x) => s + x * x, 0), 0);
  const { norm, clip } = await plan.optimStep(1e-3, 1.0);
  const sq = norm * norm;
  assert.ok(Math.abs(sq - refSq) <= 1e-9 * refSq, `${sq} vs ${refSq}`);
  assert.equal(clip.finite, true);
  assert.ok(model.params().every((p) => p.grad === undefined || (p.grad.toArray() as Float32Array).every((x) => x === 0)), "gradients zeroed");
  plan.dispose();
  model.dispose();
  ref.dispose();
});
