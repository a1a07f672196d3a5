// Throughput of the CPU kernels: GFLOP/s for the compute-bound ops (matmul, attention,
// fused linear cross-entropy), GB/s for the memory-bound ones (rmsnorm, swiglu, adamw,
// casts), each the median of timed repetitions after a warm-up.
//
//   node --import tsx tests/bench/cpu-ops.bench.ts          (TESSERA_CPU_THREADS=n to pin the pool)
//
// Prints a table and writes tests/bench/results/cpu-ops.json.
// FLOP conventions: matmul 2MNK; causal attention forward 4*Dh*Hq*sum(L^2)/2 (QK^T and PV over
// the visible half), backward 2.5x the forward (FlashAttention-2's convention: five matmuls
// against two); linear cross-entropy 6*T*D*V (logits, dx, dw). Bytes: each tensor read or
// written once.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  adamwStep, attention, attentionBackward, cast, cpuThreads, linearCrossEntropy, matmul, randn, rmsnorm, rmsnormBackward,
  scope, swiglu, swigluBackward, tensor, zeros, type Tensor,
} from "../../native/index.ts";

interface Result {
  op: string;
  shape: string;
  ms: number;
  gflops?: number;
  gbs?: number;
}

const MIN_REPS = 3;
const MIN_SECONDS = 0.6;

/** Median wall time of fn in seconds; every tensor fn makes (its result included) is freed at once. */
function time(fn: () => unknown): number {
  const run = () => scope(() => void fn());
  run();
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < MIN_REPS || (performance.now() - start) / 1000 < MIN_SECONDS) {
    const t0 = performance.now();
    run();
    samples.push((performance.now() - t0) / 1000);
    if (samples.length >= 50) break;
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

const results: Result[] = [];
function record(x: Result): void {
  results.push(x);
  const rate = x.gflops !== undefined ? `${x.gflops.toFixed(1)} GFLOP/s` : `${x.gbs!.toFixed(1)} GB/s`;
  console.log(`${x.op.padEnd(28)} ${x.shape.padEnd(42)} ${x.ms.toFixed(2).padStart(9)} ms  ${rate}`);
}
function flops(op: string, shape: string, n: number, fn: () => unknown): void {
  const s = time(fn);
  record({ op, shape, ms: s * 1e3, gflops: n / s / 1e9 });
}
function bytes(op: string, shape: string, n: number, fn: () => unknown): void {
  const s = time(fn);
  record({ op, shape, ms: s * 1e3, gbs: n / s / 1e9 });
}

let seed = 1;
const r = (shape: number[], std = 1): Tensor => randn(shape, { seed: seed++, std });

const cpu = cpus()[0]?.model ?? "unknown";
console.log(`CPU: ${cpu}, ${cpus().length} logical cores, kernel pool ${cpuThreads()} threads`);

scope(() => {
  for (const [M, K, N] of [[512, 512, 512], [1024, 1024, 1024], [2048, 1024, 4096]] as const) {
    const a = r([M, K]), b = r([K, N]);
    flops("matmul", `${M}x${K}x${N}`, 2 * M * N * K, () => matmul(a, b));
  }
  {
    const [M, K, N] = [1024, 1024, 1024];
    const a = r([M, K]), bt = r([N, K]), at = r([K, M]), b = r([K, N]);
    flops("matmul A B^T", `${M}x${K}x${N}`, 2 * M * N * K, () => matmul(a, bt, { transB: true }));
    flops("matmul A^T B", `${M}x${K}x${N}`, 2 * M * N * K, () => matmul(at, b, { transA: true }));
  }

  for (const { seqs, Hq, Hkv, Dh } of [
    { seqs: [2048], Hq: 16, Hkv: 4, Dh: 64 },
    { seqs: [512, 512, 512, 512], Hq: 16, Hkv: 4, Dh: 128 },
  ]) {
    const T = seqs.reduce((a, b) => a + b, 0);
    const cu = tensor(Int32Array.from([0, ...seqs.map((_, i) => seqs.slice(0, i + 1).reduce((a, b) => a + b, 0))]), [seqs.length + 1], {
      dtype: "int32",
    });
    const q = r([T, Hq, Dh]), k = r([T, Hkv, Dh]), v = r([T, Hkv, Dh]);
    const fwd = 4 * Dh * Hq * seqs.reduce((a, L) => a + (L * L) / 2, 0);
    const shape = `T=${T} seqs=${seqs.length} Hq=${Hq} Hkv=${Hkv} Dh=${Dh}`;
    flops("attention fwd", shape, fwd, () => attention(q, k, v, cu, { causal: true }));
    const { o, lse } = attention(q, k, v, cu, { causal: true });
    flops("attention bwd", shape, 2.5 * fwd, () => attentionBackward(o, q, k, v, o, lse, cu, { causal: true }));
  }

  {
    const [T, D, V] = [512, 1024, 32768];
    const x = r([T, D]), w = r([V, D], 0.02);
    const labels = tensor(Int32Array.from({ length: T }, (_, i) => (i * 7919) % V), [T], { dtype: "int32" });
    flops("linearCrossEntropy fwd+bwd", `T=${T} D=${D} V=${V}`, 6 * T * D * V, () => linearCrossEntropy(x, w, labels, { gradScale: 1 / T }));
  }

  {
    const [T, D] = [8192, 2048];
    const x = r([T, D]), w = r([D]), dy = r([T, D]);
    const { rstd } = rmsnorm(x, w, 1e-6);
    bytes("rmsnorm fwd", `${T}x${D}`, 4 * (2 * T * D + D + T), () => rmsnorm(x, w, 1e-6));
    bytes("rmsnorm bwd", `${T}x${D}`, 4 * (3 * T * D + 2 * D + T), () => rmsnormBackward(dy, x, w, rstd));
  }
  {
    const n = 8192 * 4096;
    const g = r([n]), u = r([n]), dh = r([n]);
    bytes("swiglu fwd", `${n}`, 4 * 3 * n, () => swiglu(g, u));
    bytes("swiglu bwd", `${n}`, 4 * 5 * n, () => swigluBackward(dh, g, u));
  }
  {
    const n = 1 << 25;
    const p = r([n], 0.02), g = r([n], 1e-3), m = zeros([n]), v = zeros([n]);
    let step = 0;
    bytes("adamw", `${n}`, 4 * 7 * n, () => adamwStep(p, g, m, v, { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: ++step }));
    const b = cast(p, "bfloat16");
    bytes("cast f32->bf16", `${n}`, 6 * n, () => cast(p, "bfloat16"));
    bytes("cast bf16->f32", `${n}`, 6 * n, () => cast(b, "float32"));
  }
});

const out = join(dirname(fileURLToPath(import.meta.url)), "results", "cpu-ops.json");
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  JSON.stringify({ date: new Date().toISOString(), cpu, logicalCores: cpus().length, threads: cpuThreads(), results }, null, 2) + "\n",
);
console.log(`wrote ${out}`);
