// Device placement on a machine without a GPU (CI, and this one): asking for "cuda" is an Error
// that names the op and says why; the CPU path of the device API (to, liveTensors) works.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  adamwStep, buildInfo, cast, cudaAvailable, cudaMemoryStats, liveTensors, randn, scope, summarizeCudaProfile, tensor, zeros,
} from "../../native/index.ts";

const noGpu = !cudaAvailable();
const why = buildInfo().cuda ? /no CUDA device is visible/ : /built without CUDA/;

test("asking for cuda without a usable GPU is an Error naming the op and the reason", { skip: !noGpu && "a GPU is visible" }, () => {
  assert.throws(() => tensor([1, 2], [2], { device: "cuda" }), (e: Error) => e.message.startsWith("tensor: device \"cuda\" is not available") && why.test(e.message));
  assert.throws(() => zeros([2], "float32", "cuda"), /^Error: zeros: device "cuda" is not available/);
  assert.throws(() => randn([2], { seed: 1, device: "cuda" }), /^Error: randn: device "cuda" is not available/);
  const t = tensor([1, 2], [2]);
  assert.throws(() => t.to("cuda"), /^Error: to: device "cuda" is not available/);
  assert.throws(() => cudaMemoryStats(), /^Error: cudaMemoryStats: device "cuda" is not available/);
  t.dispose();
});

test("an unknown device is refused", () => {
  assert.throws(() => tensor([1], [1], { device: "tpu" as never }), /tensor: unknown device tpu/);
});

test("CPU tensors say so, to('cpu') copies, and liveTensors counts no device tensors", () => {
  const before = liveTensors();
  assert.equal(before.cudaCount, 0);
  assert.equal(before.cudaBytes, 0);
  scope(() => {
    const a = tensor([1.5, -2, 3], [3]);
    assert.equal(a.device, "cpu");
    const b = a.to("cpu");
    assert.notEqual(b, a);
    assert.equal(b.device, "cpu");
    assert.deepEqual(Array.from(b.toFloat64Array()), [1.5, -2, 3]);
    a.dispose();
    assert.deepEqual(Array.from(b.toFloat64Array()), [1.5, -2, 3], "the copy owns its storage");
    assert.equal(liveTensors().count, before.count + 1);
  });
  assert.deepEqual(liveTensors(), before);
});

test("adamwStep's bf16Copy receives the updated weights rounded to bfloat16 (CPU)", () => {
  scope(() => {
    const p = randn([257], { seed: 7 });
    const g = randn([257], { seed: 8 });
    const [m, v] = [zeros([257]), zeros([257])];
    const copy = zeros([257], "bfloat16");
    adamwStep(p, g, m, v, { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 1, bf16Copy: copy });
    assert.deepEqual(Array.from(copy.toFloat64Array()), Array.from(cast(p, "bfloat16").toFloat64Array()));
    assert.ok(copy.toFloat64Array().some((x) => x !== 0));
    assert.throws(() => adamwStep(p, g, m, v, { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 2, bf16Copy: zeros([257]) }), /adamwStep: bf16Copy must be bfloat16, got float32/);
  });
});

test("summarizeCudaProfile orders ops slowest first, totals the device time and rounds to microseconds", () => {
  const byOp = new Map([
    ["rmsnorm", { ms: 0.12345, calls: 3 }],
    ["matmul", { ms: 10.00049, calls: 7 }],
    ["attention", { ms: 2.5, calls: 1 }],
  ]);
  const s = summarizeCudaProfile(byOp);
  assert.deepEqual(Object.keys(s.ops), ["matmul", "attention", "rmsnorm"]);
  assert.deepEqual(s.ops.matmul, { ms: 10, calls: 7 });
  assert.deepEqual(s.ops.rmsnorm, { ms: 0.123, calls: 3 });
  assert.equal(s.device_ms, 12.624);
  assert.deepEqual(summarizeCudaProfile(new Map()), { device_ms: 0, ops: {} });
});
