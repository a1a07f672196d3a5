// Throughput of the first CUDA kernels at the Qwen2.5-1.5B step's shapes (T = 8192, D = 1536,
// FFN 8960, 12 q heads of 128): GB/s for the memory-bound ones (bytes as in native/NOTES.md:
// each tensor read or written once, re-reads counted where the kernel re-reads), TFLOP/s for
// the GEMMs (cuBLASLt, the default where built in, beside the tiled reference) at the step's
// projection shapes. Fills the "measured" column of native/NOTES.md.
//
//   node --import tsx tests/gpu/cuda-ops.bench.ts      (on the GPU machine; not a test)
//
// Each figure: REPS launches back to back, then one wait, over REPS (launch overhead included,
// as in a step); the median of 5 such rounds after a warm-up.
import {
  addInto, adamwStep, buildInfo, cast, cudaMemoryStats, cudaSynchronize, embedding, embeddingBackward, globalNorm, matmul, randn,
  rmsnorm, rmsnormBackward, rope, scope, swiglu, swigluBackward, tensor, zeros, type Tensor,
} from "../../native/index.ts";

const REPS = 20;
const T = 8192;
const D = 1536;
const F = 8960;
const V = 151_936;
const N_OPT = 100_000_000; // elements for the optimizer-sized kernels (GB/s does not depend on n at this size)

function seconds(fn: () => void): number {
  const round = () =>
    scope(() => {
      const t0 = performance.now();
      for (let i = 0; i < REPS; i++) fn();
      cudaSynchronize();
      return (performance.now() - t0) / 1000 / REPS;
    });
  round();
  const samples = Array.from({ length: 5 }, round).sort((a, b) => a - b);
  return samples[2]!;
}

const rows: { kernel: string; shape: string; us: number; gbs?: number; tflops?: number }[] = [];
function bytes(kernel: string, shape: string, moved: number, fn: () => void): void {
  const s = seconds(fn);
  rows.push({ kernel, shape, us: s * 1e6, gbs: moved / s / 1e9 });
}

const bf = (shape: number[], seed: number): Tensor => randn(shape, { seed, dtype: "bfloat16", device: "cuda" }).keep();

const x = bf([T, D], 1);
const w = bf([D], 2);
const dy = bf([T, D], 3);
const { rstd } = rmsnorm(x, w, 1e-6);
rstd.keep();
bytes("rmsnorm fwd", `[${T}, ${D}] bf16`, 2 * T * D * 2, () => void rmsnorm(x, w, 1e-6));
bytes("rmsnorm bwd", `[${T}, ${D}] bf16`, 5 * T * D * 2, () => void rmsnormBackward(dy, x, w, rstd));

const gate = bf([T, F], 4);
const up = bf([T, F], 5);
bytes("swiglu fwd", `[${T}, ${F}] bf16`, 3 * T * F * 2, () => void swiglu(gate, up));
bytes("swiglu bwd", `[${T}, ${F}] bf16`, 5 * T * F * 2, () => void swigluBackward(gate, gate, up));

const q = bf([T, 12, 128], 6);
const pos = tensor(Int32Array.from({ length: T }, (_, i) => i % 2048), [T], { dtype: "int32", device: "cuda" }).keep();
bytes("rope fwd (q)", `[${T}, 12, 128] bf16`, 2 * T * 12 * 128 * 2, () => void rope(q, pos, { theta: 1e6 }));

const emb = bf([V, D], 7);
const ids = tensor(Int32Array.from({ length: T }, (_, i) => (i * 7919) % V), [T], { dtype: "int32", device: "cuda" }).keep();
bytes("embedding fwd", `${T} ids x ${D} bf16`, 2 * T * D * 2, () => void embedding(emb, ids));
bytes("embedding bwd", `dW [${V}, ${D}] fp32`, T * D * 2 + V * D * 4 + 2 * T * D * 4, () => void embeddingBackward(dy, ids, V));

const p = zeros([N_OPT], "float32", "cuda").keep();
const g = bf([N_OPT], 8);
const m = zeros([N_OPT], "float32", "cuda").keep();
const v = zeros([N_OPT], "float32", "cuda").keep();
const copy = zeros([N_OPT], "bfloat16", "cuda").keep();
let step = 0;
bytes("AdamW + bf16 copy (bf16 grad)", `${N_OPT}`, N_OPT * 28, () =>
  adamwStep(p, g, m, v, { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: ++step, bf16Copy: copy }),
);
bytes("cast fp32 -> bf16", `${N_OPT}`, N_OPT * 6, () => void cast(p, "bfloat16"));
bytes("addInto fp32 += bf16", `${N_OPT}`, N_OPT * 10, () => addInto(p, g, 1e-3));
{
  const s = seconds(() => void globalNorm([p]));
  rows.push({ kernel: "globalNorm (fp32, host read)", shape: `${N_OPT}`, us: s * 1e6, gbs: (N_OPT * 4) / s / 1e9 });
}

// Each product is disposed at once: REPS live lm-head outputs ([T, V] bf16, 2.5 GB each) would not fit.
const gemms: { name: string; m: number; k: number; n: number }[] = [
  { name: "mlp up / gate", m: T, k: D, n: F },
  { name: "mlp down", m: T, k: F, n: D },
  { name: "qkv", m: T, k: D, n: D + 2 * 2 * 128 },
  { name: "lm head", m: T, k: D, n: V },
];
const fastPath = buildInfo().cublasLt ? "cuBLASLt" : "reference (no cuBLASLt in this build)";
for (const [i, { name, m, k, n }] of gemms.entries()) {
  const a = bf([m, k], 20 + i);
  const b = bf([k, n], 30 + i);
  for (const reference of [false, true]) {
    const s = seconds(() => matmul(a, b, { reference }).dispose());
    rows.push({
      kernel: `matmul ${name} (${reference ? "reference" : fastPath})`,
      shape: `[${m},${k}]x[${k},${n}] bf16`,
      us: s * 1e6,
      tflops: (2 * m * n * k) / s / 1e12,
    });
  }
  a.dispose();
  b.dispose();
}

console.table(rows.map((r) => ({ ...r, us: r.us.toFixed(1), gbs: r.gbs?.toFixed(0), tflops: r.tflops?.toFixed(1) })));
console.log(JSON.stringify({ device: "cuda", memory: cudaMemoryStats(), rows }));
