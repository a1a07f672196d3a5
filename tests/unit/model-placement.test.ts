// Parameters' placement and precision bookkeeping (the CPU half: the bf16-over-fp32 step itself
// is tested on the GPU machine by tests/gpu/train-step.test.ts), and what the trainer refuses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Param, createModel, createOptimizer, noDecay } from "../../models/index.ts";
import { cudaAvailable, matmul, randn, tensor } from "../../native/index.ts";
import { checkTrainable, computeDtypeOf } from "../../actors/model-spec.ts";
import { loadConfig } from "../../runtime/config/index.ts";
import { tinyBatch, tinyConfigs } from "./models-testkit.ts";

test("a weight gradient accumulated by one GEMM equals the sum of the products", () => {
  const p = new Param("w", randn([5, 7], { seed: 1 }), true);
  const dy1 = randn([9, 5], { seed: 2 });
  const x1 = randn([9, 7], { seed: 3 });
  const dy2 = randn([4, 5], { seed: 4 });
  const x2 = randn([4, 7], { seed: 5 });
  p.accumulateProduct(dy1, x1, { transA: true });
  p.accumulateProduct(dy2, x2, { transA: true });
  const a = matmul(dy1, x1, { transA: true }).toFloat64Array();
  const b = matmul(dy2, x2, { transA: true }).toFloat64Array();
  const g = p.grad!.toFloat64Array();
  for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i]! - (a[i]! + b[i]!)) <= 1e-5 * (1 + Math.abs(a[i]! + b[i]!)), `element ${i}`);
  p.dispose();
});

test("without mixed precision the optimizer's view is the parameter itself", () => {
  const p = new Param("w", randn([3, 4], { seed: 1 }), true);
  const o = p.optimParam();
  assert.equal(o.value, p.value);
  assert.equal(o.value, p.master);
  assert.equal(o.computeCopy, undefined);
  p.accumulate(tensor(new Float32Array(12).fill(1), [3, 4]));
  assert.equal(o.grad, p.grad, "the view follows the gradient");
  o.zeroGrad();
  assert.equal(p.grad, undefined);
  p.dispose();
});

test("set() takes a master-dtype tensor and refuses another dtype or shape, naming the parameter", () => {
  const p = new Param("layer.w", randn([2, 2], { seed: 1 }), true);
  assert.throws(() => p.set(randn([2, 3], { seed: 2 })), /param layer\.w: shape \[2, 3\] given for \[2, 2\]/);
  assert.throws(() => p.set(randn([2, 2], { seed: 2, dtype: "float64" })), /param layer\.w: float64 given for float32/);
  p.dispose();
});

test("placing a model on the CPU again changes nothing: the same loss bit for bit, AdamW over the masters", () => {
  const m = createModel(tinyConfigs.qwen2!, { seed: 3 });
  const batch = tinyBatch();
  const before = m.loss(batch).loss;
  m.zeroGrad();
  m.place("cpu", "float32");
  assert.equal(m.device, "cpu");
  assert.equal(m.computeDtype, "float32");
  assert.equal(m.loss(batch).loss, before);
  const opt = createOptimizer(
    { name: "adamw", betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, muon: { momentum: 0.95, nesterov: true, ns_steps: 5 } },
    m.params().map((p) => p.optimParam()),
    { noDecay },
  );
  opt.step(1e-2);
  m.zeroGrad();
  assert.ok(m.loss(batch).loss < before, "the step moved the weights the layers read");
  opt.dispose();
  m.dispose();
});

test("the trainer's device checks: cuda without a GPU, several cuda ranks, bf16 on cpu", () => {
  const base = loadConfig("configs/qwen2_5-0_5b-gpu.yaml");
  assert.equal(computeDtypeOf(base), "bfloat16");
  assert.equal(computeDtypeOf({ ...base, model: { ...base.model, dtype: "float32" } }), "float32");
  assert.equal(computeDtypeOf({ ...base, device: "cpu" }), "float32");
  if (!cudaAvailable()) {
    assert.throws(() => checkTrainable(base), /device cuda: this addon was built without CUDA or sees no GPU/);
    assert.throws(() => createModel(tinyConfigs.qwen2!, { seed: 1 }).place("cuda", "bfloat16"), /device "cuda" is not available/);
  } else {
    assert.throws(() => checkTrainable(base, 8), /device cuda: 8 ranks need the NCCL backend/);
  }
  assert.throws(() => checkTrainable({ ...base, device: "cpu" }), /model\.dtype bfloat16: the cpu backend computes in float32/);
});
