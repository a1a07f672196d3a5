// The CUDA varlen flash attention against the CPU backend (float32) and against PyTorch's
// scaled_dot_product_attention (float32 on the GPU, through tests/gpu/attention_torch.py), on
// the GPU machine (`npm run test:gpu`). Inputs are drawn as bf16 values, so every side sees the
// same numbers; random cu_seqlens carry empty and length-1 sequences. Tolerance: max |got - want|
// <= 1e-2 x max |want| for o, dq, dk, dv (bf16 outputs, bf16 P and dS inside the kernels) and
// 1e-3 for lse (fp32). Every allocation is NaN-filled (debug fill), so an unwritten element fails.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AttentionOptions,
  type Tensor,
  attention,
  attentionBackward,
  cast,
  cudaAvailable,
  cudaAttentionFamilies,
  cudaAttentionKernels,
  cudaSetDebugFill,
  cudaSynchronize,
  randn,
  scope,
  tensor,
} from "../../native/index.ts";
import { mulberry32 } from "../../models/generate.ts";

const SKIP = cudaAvailable() ? false : "no CUDA device here: attention's GPU tests run on the GPU machine";
const TORCH = !SKIP && spawnSync("python3", ["-c", "import torch; assert torch.cuda.is_available()"]).status === 0;
const BASE_SEED = randomInt(1, 2 ** 40);
let seedCounter = 0;
const nextSeed = () => BASE_SEED + seedCounter++;
const TOL = 1e-2;
const LSE_TOL = 1e-3;

before(() => {
  if (!SKIP) cudaSetDebugFill(true);
});
after(() => {
  if (!SKIP) cudaSetDebugFill(false);
  if (!SKIP) cudaAttentionKernels("auto");
});

// Each kernel family this build can run (mma.sync always; Hopper's wgmma where built for sm_90a
// on such a GPU): every comparison below runs once per family.
const FAMILIES: ("mma" | "wgmma")[] = SKIP ? ["mma"] : cudaAttentionFamilies();

interface Case {
  Hq: number;
  Hkv: number;
  Dh: number;
  opts: AttentionOptions;
}

// GQA ratios 1, 6, 7; both head dims; causal with and without a window, and non-causal.
const CASES: Case[] = [
  { Hq: 6, Hkv: 1, Dh: 64, opts: { causal: true } },
  { Hq: 14, Hkv: 2, Dh: 64, opts: { causal: true, window: 45 } },
  { Hq: 2, Hkv: 2, Dh: 64, opts: { causal: false } },
  { Hq: 7, Hkv: 1, Dh: 128, opts: { causal: true, window: 100 } },
  { Hq: 3, Hkv: 3, Dh: 128, opts: { causal: true } },
  { Hq: 12, Hkv: 2, Dh: 128, opts: { causal: false, scale: 0.05 } },
];

/**
 * Offsets of random lengths that always include empty and length-1 sequences and cross the
 * kernels' blocks: 32 and 64 keys, 128 query rows (forward) and 128 keys (backward).
 */
function randomCuSeqlens(seed: number): number[] {
  const rand = mulberry32(seed);
  const lens = [
    0, 1, 1 + Math.floor(rand() * 300), 0, 1, 64, 1 + Math.floor(rand() * 130), 65 + Math.floor(rand() * 70), 128,
    129 + Math.floor(rand() * 200),
  ];
  for (let i = lens.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [lens[i], lens[j]] = [lens[j]!, lens[i]!];
  }
  const cu = [0];
  for (const n of lens) cu.push(cu[cu.length - 1]! + n);
  return cu;
}

/** The same bf16-representable values as a cpu float32 tensor and a cuda bf16 tensor. */
function pairOf(shape: number[]): { cpu: Tensor; gpu: Tensor } {
  const host = randn(shape, { seed: nextSeed(), dtype: "bfloat16" });
  return { cpu: cast(host, "float32"), gpu: host.to("cuda") };
}

function relError(label: string, got: Tensor | Float32Array, want: Tensor | Float32Array, tol: number): number {
  const g = got instanceof Float32Array ? got : got.toFloat64Array();
  const w = want instanceof Float32Array ? want : want.toFloat64Array();
  assert.equal(g.length, w.length, `${label}: size`);
  let bad = 0;
  let maxErr = 0;
  let maxRef = 0;
  for (let i = 0; i < g.length; i++) {
    if (!Number.isFinite(g[i]!)) bad++;
    maxErr = Math.max(maxErr, Math.abs(g[i]! - w[i]!));
    maxRef = Math.max(maxRef, Math.abs(w[i]!));
  }
  assert.equal(bad, 0, `${label}: ${bad} of ${g.length} elements are not finite (unwritten?) [seed ${BASE_SEED}]`);
  assert.ok(maxRef > 0, `${label}: the reference is all zeros; the test proves nothing`);
  const rel = maxErr / maxRef;
  assert.ok(rel <= tol, `${label}: max error ${maxErr} exceeds ${tol} x max |ref| ${maxRef} [seed ${BASE_SEED}]`);
  return rel;
}

function describe(c: Case, cu: number[]): string {
  const w = c.opts.window ? ` window ${c.opts.window}` : "";
  return `Hq ${c.Hq}/Hkv ${c.Hkv} Dh ${c.Dh} ${c.opts.causal ? "causal" : "non-causal"}${w} lens [${cu.slice(1).map((e, i) => e - cu[i]!).join(",")}]`;
}

for (const kernels of FAMILIES) test(`cuda attention forward and backward match the CPU backend (float32 reference) [${kernels}]`, { skip: SKIP }, () => {
  cudaAttentionKernels(kernels);
  for (const c of CASES) {
    scope(() => {
      const cu = randomCuSeqlens(nextSeed());
      const T = cu[cu.length - 1]!;
      const label = describe(c, cu);
      const q = pairOf([T, c.Hq, c.Dh]);
      const k = pairOf([T, c.Hkv, c.Dh]);
      const v = pairOf([T, c.Hkv, c.Dh]);
      const dout = pairOf([T, c.Hq, c.Dh]);
      const cuCpu = tensor(Int32Array.from(cu), [cu.length], { dtype: "int32" });
      const cuGpu = cuCpu.to("cuda");
      const want = attention(q.cpu, k.cpu, v.cpu, cuCpu, c.opts);
      const got = attention(q.gpu, k.gpu, v.gpu, cuGpu, c.opts);
      assert.equal(got.o.dtype, "bfloat16");
      assert.equal(got.lse.dtype, "float32");
      const wantG = attentionBackward(dout.cpu, q.cpu, k.cpu, v.cpu, want.o, want.lse, cuCpu, c.opts);
      const gotG = attentionBackward(dout.gpu, q.gpu, k.gpu, v.gpu, got.o, got.lse, cuGpu, c.opts);
      const errs = {
        o: relError(`o ${label}`, got.o, want.o, TOL),
        lse: relError(`lse ${label}`, got.lse, want.lse, LSE_TOL),
        dq: relError(`dq ${label}`, gotG.dq, wantG.dq, TOL),
        dk: relError(`dk ${label}`, gotG.dk, wantG.dk, TOL),
        dv: relError(`dv ${label}`, gotG.dv, wantG.dv, TOL),
      };
      console.log(`vs cpu: ${label}: ${JSON.stringify(Object.fromEntries(Object.entries(errs).map(([n, e]) => [n, e.toExponential(2)])))}`);
      // The kernels' float32 sums handed over as they are (no cast pass): as close to the CPU.
      const wide = attentionBackward(dout.gpu, q.gpu, k.gpu, v.gpu, got.o, got.lse, cuGpu, c.opts, true);
      for (const n of ["dq", "dk", "dv"] as const) {
        assert.equal(wide[n].dtype, "float32", `${n} float32Grads ${label}`);
        assert.deepEqual(wide[n].shape, gotG[n].shape);
        relError(`${n} float32Grads ${label}`, wide[n], wantG[n], TOL);
      }
    });
  }
});

// Scores of standard deviation ~8-11 (scale 1): each row's running max jumps by many units
// across key blocks, so the forward's rescaling of its accumulators is exercised (the backward's
// bf16 dS would need a looser tolerance at this scale, so only the forward is compared).
for (const kernels of FAMILIES) test(`cuda attention forward matches the CPU backend when the running max grows in large steps [${kernels}]`, { skip: SKIP }, () => {
  cudaAttentionKernels(kernels);
  for (const Dh of [64, 128]) {
    scope(() => {
      const c: Case = { Hq: 4, Hkv: 2, Dh, opts: { causal: true, scale: 1 } };
      const cu = randomCuSeqlens(nextSeed());
      const T = cu[cu.length - 1]!;
      const label = describe(c, cu);
      const q = pairOf([T, c.Hq, Dh]);
      const k = pairOf([T, c.Hkv, Dh]);
      const v = pairOf([T, c.Hkv, Dh]);
      const cuCpu = tensor(Int32Array.from(cu), [cu.length], { dtype: "int32" });
      const want = attention(q.cpu, k.cpu, v.cpu, cuCpu, c.opts);
      const got = attention(q.gpu, k.gpu, v.gpu, cuCpu.to("cuda"), c.opts);
      const errs = { o: relError(`o ${label}`, got.o, want.o, TOL), lse: relError(`lse ${label}`, got.lse, want.lse, LSE_TOL) };
      console.log(`vs cpu, scale 1: ${label}: ${JSON.stringify(Object.fromEntries(Object.entries(errs).map(([n, e]) => [n, e.toExponential(2)])))}`);
    });
  }
});

function writeF32(dir: string, name: string, t: Tensor): void {
  writeFileSync(join(dir, `${name}.f32`), Float32Array.from(t.toFloat64Array()));
}

function readF32(dir: string, name: string): Float32Array {
  const b = readFileSync(join(dir, `${name}.f32`));
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

for (const kernels of FAMILIES) test(
  `cuda attention matches PyTorch's scaled_dot_product_attention and its backward (float32 on the GPU) [${kernels}]`,
  { skip: SKIP || (TORCH ? false : "python3 cannot import torch with CUDA: the PyTorch comparison is skipped") },
  () => {
    cudaAttentionKernels(kernels);
    const script = join(import.meta.dirname, "attention_torch.py");
    for (const c of CASES) {
      const dir = mkdtempSync(join(tmpdir(), "tessera-attn-"));
      try {
        scope(() => {
          const cu = randomCuSeqlens(nextSeed());
          const T = cu[cu.length - 1]!;
          const label = describe(c, cu);
          const q = pairOf([T, c.Hq, c.Dh]);
          const k = pairOf([T, c.Hkv, c.Dh]);
          const v = pairOf([T, c.Hkv, c.Dh]);
          const dout = pairOf([T, c.Hq, c.Dh]);
          const scale = c.opts.scale ?? 1 / Math.sqrt(c.Dh);
          const meta = { T, Hq: c.Hq, Hkv: c.Hkv, Dh: c.Dh, causal: c.opts.causal, window: c.opts.window ?? 0, scale, cuSeqlens: cu };
          writeFileSync(join(dir, "case.json"), JSON.stringify(meta));
          writeF32(dir, "q", q.cpu);
          writeF32(dir, "k", k.cpu);
          writeF32(dir, "v", v.cpu);
          writeF32(dir, "dout", dout.cpu);
          const run = spawnSync("python3", [script, dir], { encoding: "utf8" });
          assert.equal(run.status, 0, `attention_torch.py failed: ${run.stderr}`);
          const cuGpu = tensor(Int32Array.from(cu), [cu.length], { dtype: "int32", device: "cuda" });
          const got = attention(q.gpu, k.gpu, v.gpu, cuGpu, c.opts);
          const gotG = attentionBackward(dout.gpu, q.gpu, k.gpu, v.gpu, got.o, got.lse, cuGpu, c.opts);
          const f32 = (t: Tensor) => Float32Array.from(t.toFloat64Array());
          const errs = {
            o: relError(`o ${label}`, f32(got.o), readF32(dir, "o"), TOL),
            lse: relError(`lse ${label}`, f32(got.lse), readF32(dir, "lse"), LSE_TOL),
            dq: relError(`dq ${label}`, f32(gotG.dq), readF32(dir, "dq"), TOL),
            dk: relError(`dk ${label}`, f32(gotG.dk), readF32(dir, "dk"), TOL),
            dv: relError(`dv ${label}`, f32(gotG.dv), readF32(dir, "dv"), TOL),
          };
          console.log(`vs torch: ${label}: ${JSON.stringify(Object.fromEntries(Object.entries(errs).map(([n, e]) => [n, e.toExponential(2)])))}`);
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  },
);

test("cuda attention refuses bad cu_seqlens, float32 inputs and other head dims with Errors naming the op", { skip: SKIP }, () => {
  scope(() => {
    const T = 10;
    const bf = (shape: number[]) => randn(shape, { seed: nextSeed(), dtype: "bfloat16", device: "cuda" });
    const q = bf([T, 2, 64]);
    const k = bf([T, 1, 64]);
    const v = bf([T, 1, 64]);
    const cuOf = (a: number[]) => tensor(Int32Array.from(a), [a.length], { dtype: "int32", device: "cuda" });
    const opts = { causal: true };
    assert.throws(() => attention(q, k, v, cuOf([1, 10]), opts), /^Error: attention: cu_seqlens must start at 0/);
    assert.throws(() => attention(q, k, v, cuOf([0, 6, 4, 10]), opts), /^Error: attention: cu_seqlens must be non-decreasing/);
    assert.throws(() => attention(q, k, v, cuOf([0, 4, 9]), opts), /^Error: attention: cu_seqlens must end at T=10/);
    const { o, lse } = attention(q, k, v, cuOf([0, 4, 10]), opts);
    assert.throws(
      () => attentionBackward(q, q, k, v, o, lse, cuOf([0, 4, 11]), opts),
      /^Error: attentionBackward: cu_seqlens must end at T=10/,
    );
    assert.throws(() => attentionBackward(q, q, k, v, o, cast(lse, "bfloat16"), cuOf([0, 10]), opts), /attentionBackward: lse must be float32/);
    const f = (t: Tensor) => cast(t, "float32");
    assert.throws(() => attention(f(q), f(k), f(v), cuOf([0, 10]), opts), /^Error: attention: .*float32.*bfloat16/);
    const q96 = bf([T, 2, 96]);
    const k96 = bf([T, 1, 96]);
    assert.throws(() => attention(q96, k96, k96, cuOf([0, 10]), opts), /^Error: attention: head dim 96 is not supported on cuda/);
    assert.throws(() => attention(q, k, v, cuOf([0, 10]), { causal: true, scale: -0.1 }), /^Error: attention: scale must be positive on cuda/);
  });
});

test("cuda attention with the offsets on the host gives the same outputs, and validates those offsets", { skip: SKIP }, () => {
  scope(() => {
    const offsets = [0, 1, 40, 40, 131];
    const T = 131;
    const bf = (shape: number[]) => randn(shape, { seed: nextSeed(), dtype: "bfloat16", device: "cuda" });
    const q = bf([T, 4, 128]);
    const k = bf([T, 2, 128]);
    const v = bf([T, 2, 128]);
    const dout = bf([T, 4, 128]);
    const cu = tensor(Int32Array.from(offsets), [offsets.length], { dtype: "int32", device: "cuda" });
    const opts = { causal: true };
    const hostOpts = { causal: true, cuSeqlensHost: Int32Array.from(offsets) };
    const a = attention(q, k, v, cu, opts);
    const b = attention(q, k, v, cu, hostOpts);
    assert.deepEqual(b.o.toArray(), a.o.toArray());
    assert.deepEqual(b.lse.toArray(), a.lse.toArray());
    const ga = attentionBackward(dout, q, k, v, a.o, a.lse, cu, opts);
    const gb = attentionBackward(dout, q, k, v, a.o, a.lse, cu, hostOpts);
    // dq sums by atomics, so its last bits may differ between calls; dk and dv are summed in a fixed order.
    relError("dq with host offsets", gb.dq, ga.dq, 1e-2);
    assert.deepEqual(gb.dk.toArray(), ga.dk.toArray());
    assert.deepEqual(gb.dv.toArray(), ga.dv.toArray());
    // The kernels read the validated host copy, not the device tensor: offsets on the device that
    // disagree (here past T, which would read out of bounds) change nothing.
    const wrong = tensor(Int32Array.from([0, 7, 500, 900, 4000]), [offsets.length], { dtype: "int32", device: "cuda" });
    const c = attention(q, k, v, wrong, hostOpts);
    assert.deepEqual(c.o.toArray(), a.o.toArray());
    const gc = attentionBackward(dout, q, k, v, a.o, a.lse, wrong, hostOpts);
    assert.deepEqual(gc.dk.toArray(), ga.dk.toArray());
    cudaSynchronize();
    assert.throws(() => attention(q, k, v, cu, { causal: true, cuSeqlensHost: Int32Array.from([0, 131]) }), /^Error: attention: cuSeqlensHost holds 2 offsets, cuSeqlens 5/);
    assert.throws(() => attention(q, k, v, cu, { causal: true, cuSeqlensHost: Int32Array.from([0, 1, 40, 30, 131]) }), /^Error: attention: cu_seqlens must be non-decreasing/);
  });
});
