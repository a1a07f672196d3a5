// Muon on cuda against the CPU backend (`npm run test:gpu`): newtonSchulz5 (bf16 with fp32
// accumulation, through cuBLASLt and through the tiled reference GEMM) against the CPU op in
// float64, muonStep over several steps against the CPU's float32 muonStep, and MuonWithAdamW on
// parameters placed on cuda (fp32 masters, bf16 compute copies). Inputs are random and fresh per
// run (the base seed is in every failure message). Every allocation is NaN-filled (debug fill),
// so an element a kernel forgets to write fails the finiteness checks.
//
// Tolerances. The exact float64 iteration against the same iteration with X, A and B rounded to
// bf16 at each store (a float64 emulation of the kernels, 12 seeds at the shapes below) differs
// by 1.1-1.3% in relative Frobenius norm and 1.4-2.0% of max |ref| in the worst element: bf16's
// 2^-9 relative rounding, compounded over 5 steps. NS_FRO and NS_MAX leave about 2x of margin;
// a wrong transpose, coefficient or norm misses them by far (the results then differ by O(1)).
// A muonStep moves the weights by lr * 0.2 * sqrt(max(M,N)) * NS(u), so its error relative to
// the update is the Newton-Schulz's: the same bounds apply to the change of the weights. The
// momentum is fp32 elementwise arithmetic on both sides (F32), and the copy is bf16(master)
// exactly (both round to nearest even).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  type Tensor,
  cast,
  cudaSetDebugFill,
  empty,
  muonStep,
  newtonSchulz5,
  randn,
  scope,
  tensor,
  zeros,
} from "../../native/index.ts";
import { Param } from "../../models/index.ts";
import { createOptimizer } from "../../models/optim/index.ts";
import { assertRelClose } from "./compare.ts";
import { BASE_SEED, nextSeed, seeded } from "./pairs.ts";

const NS_FRO = 0.03;
const NS_MAX = 0.04;
const F32 = 1e-5;

before(() => cudaSetDebugFill(true));
after(() => cudaSetDebugFill(false));

const SHAPES: [number, number][] = [
  [256, 256],
  [128, 384],
  [384, 128],
  [96, 200],
];

function finite(label: string, a: Float64Array): void {
  const bad = a.reduce((n, x) => n + (Number.isFinite(x) ? 0 : 1), 0);
  assert.equal(bad, 0, `${label}: ${bad} of ${a.length} elements are not finite (unwritten?) [seed ${BASE_SEED}]`);
}

/** Finite, relative Frobenius error <= fro, and max |got - want| <= max * max |want|; returns both figures for the log. */
function assertNs(label: string, got: Float64Array, want: Float64Array, fro: number, max: number): string {
  finite(label, got);
  let se = 0, sr = 0, maxErr = 0, maxRef = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!);
    se += e * e;
    sr += want[i]! * want[i]!;
    maxErr = Math.max(maxErr, e);
    maxRef = Math.max(maxRef, Math.abs(want[i]!));
  }
  assert.ok(maxRef > 0, `${label}: the reference is all zeros; the test proves nothing`);
  const rel = Math.sqrt(se / sr);
  assert.ok(rel <= fro, `${label}: relative Frobenius error ${rel} exceeds ${fro} [seed ${BASE_SEED}]`);
  assert.ok(maxErr <= max * maxRef, `${label}: max error ${maxErr} exceeds ${max} x max |ref| ${maxRef} [seed ${BASE_SEED}]`);
  return `${label}: relative Frobenius error ${rel.toExponential(2)}, max error / max |ref| ${(maxErr / maxRef).toExponential(2)}`;
}

/** The compute copy holds exactly bf16(master). */
function assertCopyOf(label: string, copy: Tensor, master: Tensor): void {
  const got = copy.toFloat64Array();
  finite(label, got);
  const want = scope(() => cast(master.to("cpu"), "bfloat16").toFloat64Array());
  const diff = got.findIndex((x, i) => x !== want[i]);
  assert.equal(diff, -1, `${label}: copy[${diff}] = ${got[diff]} but bf16(master) = ${want[diff]} [seed ${BASE_SEED}]`);
}

const minus = (a: Float64Array, b: Float64Array): Float64Array => a.map((x, i) => x - b[i]!);

test("newtonSchulz5 on cuda (bf16, fp32 accumulation) matches the CPU op in float64: square, wide, tall, odd", (t) => {
  for (const [M, N] of SHAPES) {
    scope(() => {
      const g = randn([M, N], { seed: nextSeed() });
      const want = newtonSchulz5(cast(g, "float64")).toFloat64Array();
      const gpu = g.to("cuda");
      for (const reference of [false, true]) {
        const got = newtonSchulz5(gpu, 5, { reference });
        assert.equal(got.device, "cuda");
        assert.equal(got.dtype, "float32");
        assert.deepEqual(got.shape, [M, N]);
        t.diagnostic(assertNs(`NS ${M}x${N} (${reference ? "reference GEMM" : "cuBLASLt"})`, got.toFloat64Array(), want, NS_FRO, NS_MAX));
      }
      // bfloat16 in, bfloat16 out: the CPU sees the same bf16-rounded values.
      const gb = cast(gpu, "bfloat16");
      const wantB = newtonSchulz5(cast(gb.to("cpu"), "float64")).toFloat64Array();
      const gotB = newtonSchulz5(gb);
      assert.equal(gotB.dtype, "bfloat16");
      t.diagnostic(assertNs(`NS ${M}x${N} (bf16 in/out)`, gotB.toFloat64Array(), wantB, NS_FRO, NS_MAX));
      // No iterations: the Frobenius normalisation alone, within one bf16 rounding (2^-8 relative).
      const norm0 = newtonSchulz5(cast(g, "float64"), 0).toFloat64Array();
      assertRelClose(newtonSchulz5(gpu, 0).toFloat64Array(), norm0, 2 ** -8, seeded(`NS ${M}x${N} steps 0 (normalisation)`));
    });
  }
});

test("muonStep on cuda tracks the CPU's float32 muonStep: fp32 master with its bf16 copy, Nesterov on and off, weight decay", (t) => {
  const cases = [
    { nesterov: true, weightDecay: 0.1 },
    { nesterov: false, weightDecay: 0.1 },
    { nesterov: true, weightDecay: 0 },
  ];
  for (const [M, N] of [[256, 384], [384, 128], [96, 200]] as const) {
    for (const c of cases) {
      scope(() => {
        const label = `muon ${M}x${N} nesterov ${c.nesterov} wd ${c.weightDecay}`;
        const p0 = randn([M, N], { seed: nextSeed(), std: 0.05 });
        const pCpu = p0.clone();
        const pGpu = p0.to("cuda");
        const bufCpu = zeros([M, N]);
        const bufGpu = zeros([M, N], "float32", "cuda");
        const copy = empty([M, N], "bfloat16", "cuda");
        for (let step = 1; step <= 4; step++) {
          const o = { lr: 0.02 / step, momentum: 0.95, nesterov: c.nesterov, weightDecay: c.weightDecay };
          const g = randn([M, N], { seed: nextSeed() });
          muonStep(pGpu, g.to("cuda"), bufGpu, { ...o, bf16Copy: copy });
          muonStep(pCpu, g, bufCpu, o);
          assertCopyOf(`${label} step ${step}: copy`, copy, pGpu);
        }
        assertRelClose(bufGpu.toFloat64Array(), bufCpu.toFloat64Array(), F32, seeded(`${label}: momentum`));
        const start = p0.toFloat64Array();
        const moved = minus(pGpu.toFloat64Array(), start);
        finite(`${label}: param`, moved);
        t.diagnostic(assertNs(`${label}: change of the weights`, moved, minus(pCpu.toFloat64Array(), start), NS_FRO, NS_MAX));
      });
    }
  }
});

test("muonStep on cuda names what is wrong: devices, dtypes, the copy", () => {
  scope(() => {
    const p = zeros([8, 16], "float32", "cuda");
    assert.throws(() => muonStep(p, zeros([8, 16]), zeros([8, 16], "float32", "cuda"), { lr: 0.1 }), /muonStep: grad is on cpu but param is on cuda/);
    const pb = zeros([8, 16], "bfloat16", "cuda");
    assert.throws(() => muonStep(pb, pb, pb, { lr: 0.1 }), /muonStep: param must be float32, got bfloat16/);
    const g = zeros([8, 16], "float32", "cuda");
    const buf = zeros([8, 16], "float32", "cuda");
    assert.throws(() => muonStep(p, g, buf, { lr: 0.1, bf16Copy: g }), /muonStep: bf16Copy must be bfloat16/);
  });
});

test("MuonWithAdamW on parameters placed on cuda: Muon on the matrices, AdamW on the rest, compute copies rewritten", (t) => {
  const spec: [string, number[]][] = [
    ["model.layers.0.mlp.up_proj.weight", [384, 128]],
    ["model.layers.0.self_attn.o_proj.weight", [128, 200]],
    ["model.layers.0.input_layernorm.weight", [128]],
  ];
  const config = { name: "muon" as const, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weight_decay: 0.1, muon: { momentum: 0.95, nesterov: true, ns_steps: 5 } };
  const starts = spec.map(([, s]) => randn(s, { seed: nextSeed(), std: 0.05 }).toFloat64Array());
  const make = (device: "cpu" | "cuda") =>
    spec.map(([name, s], i) => {
      const p = new Param(name, tensor(starts[i]!, s, { dtype: "float32" }), s.length >= 2);
      if (device === "cuda") p.place("cuda", "bfloat16");
      return p;
    });
  const cpu = make("cpu");
  const gpu = make("cuda");
  const optCpu = createOptimizer(config, cpu.map((p) => p.optimParam()));
  const optGpu = createOptimizer(config, gpu.map((p) => p.optimParam()));
  try {
    assert.deepEqual([...optGpu.algorithms().values()], ["muon", "muon", "adamw"]);
    for (let step = 1; step <= 3; step++) {
      spec.forEach(([, s], i) => {
        const g = randn(s, { seed: nextSeed() });
        gpu[i]!.accumulate(g.to("cuda"));
        cpu[i]!.accumulate(g);
      });
      // A clipping scale, which the Muon rule applies to the gradient before its step.
      optGpu.step(0.02 / step, 0.5);
      optCpu.step(0.02 / step, 0.5);
      for (const p of [...cpu, ...gpu]) p.zeroGrad();
    }
    spec.forEach(([name, s], i) => {
      const got = gpu[i]!.master.toFloat64Array();
      const want = cpu[i]!.master.toFloat64Array();
      if (s.length === 2) t.diagnostic(assertNs(`${name}: change of the weights`, minus(got, starts[i]!), minus(want, starts[i]!), NS_FRO, NS_MAX));
      else assertRelClose(got, want, F32, seeded(`${name} (AdamW)`));
      assertCopyOf(`${name}: compute copy`, gpu[i]!.value, gpu[i]!.master);
    });
  } finally {
    optCpu.dispose();
    optGpu.dispose();
    for (const p of [...cpu, ...gpu]) p.dispose();
  }
});
