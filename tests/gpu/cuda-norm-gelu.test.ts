// GPT-2's row-wise layers on cuda: LayerNorm and GELU (tanh) forward and backward against the
// CPU backend in float64, and a GPT-2 training step on cuda (bf16 compute over fp32 masters)
// against the same model on the CPU (float32).
// Op tolerances, as a fraction of the reference's largest magnitude: float32 1e-5 forward and
// 1e-4 backward (row and column sums in fp32), bfloat16 1e-2 (both backends get the same
// bf16-rounded inputs, so what remains is the 2^-9 rounding of the outputs). The step's, as
// tests/gpu/train-step.test.ts's: loss within 2e-2 relative, each gradient within 5e-2 of its
// tensor's largest magnitude (bf16 activations at every op of two layers). Inputs are fresh
// random values (the base seed is in every failure message); every device allocation is
// NaN-filled (debug fill), so an element a kernel leaves unwritten fails the comparison.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createOptimizer, mulberry32, noDecay, packSequences, type CausalLM, type Param } from "../../models/index.ts";
import {
  cast,
  cudaAvailable,
  cudaSetDebugFill,
  gelu,
  geluBackward,
  layernorm,
  layernormBackward,
  randn,
  scope,
  tensor,
  type Tensor,
} from "../../native/index.ts";
import { buildModel } from "../../actors/model-spec.ts";
import { loadConfig } from "../../runtime/config/index.ts";
import { assertClose } from "./compare.ts";
import { BASE_SEED, nextSeed } from "./pairs.ts";

const SKIP = cudaAvailable() ? false : "no CUDA device here: run it on the GPU machine";

before(() => {
  if (!SKIP) cudaSetDebugFill(true);
});
after(() => {
  if (!SKIP) cudaSetDebugFill(false);
});

type GpuDtype = "float32" | "bfloat16";
const DTYPES: { dtype: GpuDtype; fwd: number; bwd: number }[] = [
  { dtype: "float32", fwd: 1e-5, bwd: 1e-4 },
  { dtype: "bfloat16", fwd: 1e-2, bwd: 1e-2 },
];

/** Random values (std, plus offset) rounded to dtype: on cuda in dtype, and the same values on the CPU in float64. */
function inputOf(shape: number[], dtype: GpuDtype, o: { std?: number; offset?: number } = {}): { cpu: Tensor; gpu: Tensor } {
  const r = randn(shape, { seed: nextSeed(), std: o.std ?? 1 });
  const a = r.toArray() as Float32Array;
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + (o.offset ?? 0);
  const host = cast(tensor(a, shape), dtype);
  return { cpu: cast(host, "float64"), gpu: host.to("cuda") };
}

/** The worst error ratio of each check, printed at the end of each test as the run's figures. */
const worst = new Map<string, number>();

function check(label: string, got: Tensor, want: Tensor, dtype: string, rel: number): void {
  assert.equal(got.device, "cuda", `${label}: stays on cuda`);
  assert.equal(got.dtype, dtype, `${label}: dtype`);
  assert.deepEqual(got.shape, want.shape, `${label}: shape`);
  const ref = want.toFloat64Array();
  assert.ok(ref.some((v) => v !== 0), `${label}: the reference is all zeros; the test proves nothing`);
  const ratio = assertClose(got.toFloat64Array(), ref, rel, `${label} [seed ${BASE_SEED}]`);
  const key = label.replace(/ \[.*$/, "");
  worst.set(key, Math.max(worst.get(key) ?? 0, ratio));
}

function maxAbs(a: Float64Array): number {
  return a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
}

function report(prefix: string, dtype: GpuDtype): void {
  for (const [k, v] of worst) if (k.startsWith(prefix) && k.endsWith(dtype)) console.log(`# ${k}: max |diff| / max |ref| = ${v.toExponential(2)}`);
}

// 768 and 1600: GPT-2 small and XL; 1000: whole vectors of both dtypes but not a power of two;
// 770: not a whole number of vectors (the scalar kernels); 5000 bf16 and 1600 fp32: rows too
// long for a warp's registers in the backward; 2500 rows: more than one row per warp of the
// backward's fixed grid; one row: a grid of one warp.
const LN_SHAPES: [number, number][] = [
  [1, 768],
  [64, 768],
  [33, 1600],
  [17, 1000],
  [9, 770],
  [2500, 1000],
  [3, 5000],
];

for (const { dtype, fwd, bwd } of DTYPES) {
  test(`layernorm forward and backward on cuda (${dtype}) match the CPU in float64`, { skip: SKIP }, () => {
    scope(() => {
      for (const [R, D] of LN_SHAPES) {
        const at = `${dtype} [${R}, ${D}]`;
        const x = inputOf([R, D], dtype, { std: 2, offset: 3 });
        const w = inputOf([D], dtype, { std: 0.3, offset: 1 });
        const b = inputOf([D], dtype, { std: 0.5 });
        const dy = inputOf([R, D], dtype);
        const want = layernorm(x.cpu, w.cpu, b.cpu, 1e-5);
        const got = layernorm(x.gpu, w.gpu, b.gpu, 1e-5);
        check(`layernorm y ${at}`, got.y, want.y, dtype, fwd);
        check(`layernorm mean ${at}`, got.mean, want.mean, "float32", fwd);
        check(`layernorm rstd ${at}`, got.rstd, want.rstd, "float32", fwd);
        const wantB = layernormBackward(dy.cpu, x.cpu, w.cpu, want.mean, want.rstd);
        const gotB = layernormBackward(dy.gpu, x.gpu, w.gpu, got.mean, got.rstd);
        check(`layernormBackward dx ${at}`, gotB.dx, wantB.dx, dtype, bwd);
        check(`layernormBackward dw ${at}`, gotB.dw, wantB.dw, "float32", bwd);
        check(`layernormBackward db ${at}`, gotB.db, wantB.db, "float32", bwd);
      }
      const x = inputOf([2, 8], dtype).gpu;
      const stat = inputOf([2], "bfloat16").gpu;
      assert.throws(() => layernormBackward(x, x, inputOf([8], dtype).gpu, stat, stat), /^Error: layernormBackward: mean must be float32, got bfloat16/);
    });
    report("layernorm", dtype);
  });

  test(`gelu forward and backward on cuda (${dtype}) match the CPU in float64`, { skip: SKIP }, () => {
    scope(() => {
      // 4097 and 5,000,003: a tail past the last whole vector; 5,000,003 fp32 also more vectors
      // than the grid has threads (the grid-stride loop); [64, 3072]: GPT-2 small's MLP width.
      for (const shape of [[1], [7], [1000], [4097], [64, 3072], [5_000_003]]) {
        const at = `${dtype} [${shape.join(", ")}]`;
        const x = inputOf(shape, dtype, { std: 3 });
        const dy = inputOf(shape, dtype);
        check(`gelu ${at}`, gelu(x.gpu), gelu(x.cpu), dtype, fwd);
        check(`geluBackward ${at}`, geluBackward(dy.gpu, x.gpu), geluBackward(dy.cpu, x.cpu), dtype, bwd);
      }
    });
    report("gelu", dtype);
  });
}

/**
 * Matrices N(0, 0.08^2), biases N(0, 0.1^2), norm weights 1 + N(0, 0.1^2): no path is trivial,
 * and the softmax is neither saturated nor flat. (models-testkit's randomizeParams puts biases
 * around 1, which here makes every logit of a query nearly the same: the query and key gradients
 * come out ~200x smaller than the others, differences of nearly equal bf16 terms.)
 */
function randomizeGpt2(params: readonly Param[], seed: number): void {
  params.forEach((p, i) => {
    const bias = p.name.endsWith(".bias");
    const r = randn(p.shape, { seed: seed + i, std: p.decay ? 0.08 : 0.1 });
    const a = r.toArray() as Float32Array;
    r.dispose();
    if (!p.decay && !bias) for (let j = 0; j < a.length; j++) a[j] = a[j]! + 1;
    p.set(tensor(a, p.shape));
  });
}

test("a GPT-2 training step on cuda (bf16 over fp32 masters) matches the CPU backend, and AdamW steps follow it", { skip: SKIP }, async () => {
  // Head dim 64 (cuda attention takes 64 or 128); an odd vocabulary; built through the trainer's
  // builder, so its device checks and placement are the ones a job gets.
  const hf = { model_type: "gpt2", vocab_size: 101, n_positions: 96, n_embd: 128, n_layer: 2, n_head: 2 };
  const job = loadConfig("configs/qwen2_5-0_5b-gpu.yaml");
  const spec = { kind: "config" as const, hf, seed: 3 };
  const seed = nextSeed();
  const build = async (device: "cpu" | "cuda"): Promise<CausalLM> => {
    const m = await buildModel(spec, { device, model: { ...job.model, dtype: device === "cuda" ? "bfloat16" : "float32" } });
    randomizeGpt2(m.params(), seed);
    return m;
  };
  const cpu = await build("cpu");
  const gpu = await build("cuda");
  const rand = mulberry32(seed);
  const batch = packSequences([40, 7, 64, 1, 23].map((n) => Array.from({ length: n }, () => Math.floor(rand() * hf.vocab_size))));
  const cfg = { name: "adamw" as const, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weight_decay: 0.1, muon: { momentum: 0.95, nesterov: true, ns_steps: 5 } };
  const models = [cpu, gpu];
  const opts = models.map((m) => createOptimizer(cfg, m.params().map((p) => p.optimParam()), { noDecay }));
  try {
    assert.equal(gpu.device, "cuda");
    assert.equal(gpu.computeDtype, "bfloat16");
    const rc = cpu.loss(batch);
    const rg = gpu.loss(batch);
    assert.equal(rg.count, rc.count);
    assert.ok(Math.abs(rg.loss - rc.loss) <= 2e-2 * rc.loss, `cuda loss ${rg.loss} vs cpu ${rc.loss} [seed ${BASE_SEED}]`);
    let worstGrad = { ratio: 0, name: "" };
    const cpuParams = cpu.params();
    gpu.params().forEach((p, i) => {
      const c = cpuParams[i]!;
      assert.equal(p.name, c.name);
      assert.equal(p.value.dtype, "bfloat16", `${p.name}: compute copy`);
      assert.equal(p.grad?.dtype, "float32", `${p.name}: the gradient accumulates in fp32`);
      if (p.name.endsWith(".c_attn.k.bias")) {
        // The key bias adds q.b to all of a query's logits, which softmax ignores: its true
        // gradient is 0 and both backends give rounding noise (the CPU's ~1e-10, bf16's far
        // more). It must stay small beside the value bias's gradient.
        const vb = cpuParams.find((q) => q.name === p.name.replace(/k\.bias$/, "v.bias"))!;
        const noise = maxAbs(p.grad!.toFloat64Array());
        assert.ok(noise <= 1e-2 * maxAbs(vb.grad!.toFloat64Array()), `${p.name}: |grad| ${noise} is not small beside ${vb.name}'s [seed ${BASE_SEED}]`);
        return;
      }
      const ratio = assertClose(p.grad!.toFloat64Array(), c.grad!.toFloat64Array(), 5e-2, `cuda grad of ${p.name} [seed ${BASE_SEED}]`);
      if (ratio > worstGrad.ratio) worstGrad = { ratio, name: p.name };
    });
    console.log(`# gpt2 step: loss cpu ${rc.loss.toFixed(6)} cuda ${rg.loss.toFixed(6)}; worst gradient ${worstGrad.name} ${worstGrad.ratio.toExponential(2)} of its max`);

    const losses: number[][] = [[rc.loss], [rg.loss]];
    for (let step = 0; step < 3; step++) {
      models.forEach((m, i) => {
        opts[i]!.step(1e-3);
        m.zeroGrad();
        losses[i]!.push(m.loss(batch).loss);
      });
    }
    const [lc, lg] = losses as [number[], number[]];
    console.log(`# gpt2 AdamW losses: cpu ${lc.map((l) => l.toFixed(4)).join(", ")}; cuda ${lg.map((l) => l.toFixed(4)).join(", ")}`);
    assert.ok(lc[3]! < lc[0]! && lg[3]! < lg[0]!, `the loss falls on both: cpu ${lc.join(", ")}; cuda ${lg.join(", ")}`);
    lc.forEach((l, i) => assert.ok(Math.abs(lg[i]! - l) <= 3e-2 * l, `step ${i}: cuda loss ${lg[i]} vs cpu ${l}`));
  } finally {
    opts.forEach((o) => o.dispose());
    models.forEach((m) => m.dispose());
  }
});
