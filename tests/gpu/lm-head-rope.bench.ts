// The lm head's fused cross-entropy at the Qwen2.5-1.5B step's shape (T = 8192, D = 1536, bf16)
// with the real tokenizer's vocabulary (151,669: not a multiple of 64) beside the padded
// config's (151,936), with each call's peak of device memory; and RoPE on q and k (12 and 2
// heads of 128) through the direct op (cos / sin formed per call) and through the per-batch
// table (ropeWithTable), the table's own build timed apart.
//
//   node --import tsx tests/gpu/lm-head-rope.bench.ts [lm-head | rope]     (on the GPU machine; not a test)
//
// Times are device times per call (timed events around each call), the median of 5 rounds of
// REPS calls after a warm-up, as in cuda-ops.bench.ts. A short kernel's events also time the
// host's ~25 us per op call while the queue is empty; the rope rows therefore queue ~6 ms of GEMM
// first (as a step's queue is never empty) and time 20 calls between two events (kernelUs).
import {
  cudaMemoryStats, cudaResetPeak, cudaSynchronize, linearCrossEntropy, matmul, randn, rope, ropeBackwardWithTable, ropeTable, ropeWithTable, scope,
  tensor, type Tensor,
} from "../../native/index.ts";
import { loadAddon } from "../../native/addon.ts";

const REPS = 10;
const T = 8192;
const D = 1536;
const raw = loadAddon().cuda!;
const only = process.argv[2];

function deviceUs(fn: () => void, reps = REPS): number {
  const round = () =>
    scope(() => {
      const spans = Array.from({ length: reps }, () => {
        const start = raw.recordEvent(0, true);
        fn();
        return [start, raw.recordEvent(0, true)] as const;
      });
      cudaSynchronize();
      return (spans.reduce((acc, [a, b]) => acc + raw.eventElapsedMs(a, b), 0) * 1000) / reps;
    });
  round();
  const samples = Array.from({ length: 5 }, round).sort((a, b) => a - b);
  return samples[2]!;
}

/**
 * Device time per call of a short kernel: `blocker` (a few ms of GEMM) first, then reps calls
 * between two events, so the host queues them all while the blocker runs and the events time
 * the kernels back to back, not the host's per-call cost. Median of 5 rounds after a warm-up.
 */
function kernelUs(fn: () => void, blocker: () => void, reps = 20): number {
  const round = () =>
    scope(() => {
      blocker();
      const start = raw.recordEvent(0, true);
      for (let i = 0; i < reps; i++) fn();
      const end = raw.recordEvent(0, true);
      cudaSynchronize();
      return (raw.eventElapsedMs(start, end) * 1000) / reps;
    });
  round();
  const samples = Array.from({ length: 5 }, round).sort((a, b) => a - b);
  return samples[2]!;
}

const bf = (shape: number[], seed: number, std = 1): Tensor => randn(shape, { seed, std, dtype: "bfloat16", device: "cuda" }).keep();

for (const V of only === "rope" ? [] : [151_669, 151_936]) {
  const x = bf([T, D], 1);
  const w = bf([V, D], 2, 0.02);
  const labels = tensor(Int32Array.from({ length: T }, (_, i) => (i * 104729) % V), [T], { dtype: "int32", device: "cuda" }).keep();
  const us = deviceUs(() => void linearCrossEntropy(x, w, labels, { gradScale: 1 / T }), 5);
  cudaSynchronize();
  const base = cudaMemoryStats().allocated;
  cudaResetPeak();
  scope(() => void linearCrossEntropy(x, w, labels, { gradScale: 1 / T }));
  cudaSynchronize();
  const peak = cudaMemoryStats().peak;
  // Outputs dx (bf16 [T,D]) and dw (fp32 [V,D]) are part of the peak; the rest is the call's scratch.
  const outputs = T * D * 2 + V * D * 4;
  console.log(
    JSON.stringify({
      kernel: "linearCrossEntropy (fwd + bwd)",
      V,
      deviceMs: +(us / 1000).toFixed(3),
      tflops: +((3 * 2 * T * D * V) / (us * 1e-6) / 1e12).toFixed(1),
      peakAboveInputsGB: +((peak - base) / 1e9).toFixed(3),
      scratchGB: +((peak - base - outputs) / 1e9).toFixed(3),
    }),
  );
  for (const t of [x, w, labels]) t.dispose();
}

if (only !== "lm-head") {
  const pos = tensor(Int32Array.from({ length: T }, (_, i) => i % 2048), [T], { dtype: "int32", device: "cuda" }).keep();
  const opts = { theta: 1e6 };
  const table = ropeTable(pos, 128, opts).keep();
  const big = bf([8192, 8192], 30);
  const busy = () => {
    for (let i = 0; i < 4; i++) matmul(big, big).dispose();
  };
  for (const [name, H] of [["q", 12], ["k", 2]] as const) {
    const h = bf([T, H, 128], 6 + H);
    const moved = 2 * T * H * 128 * 2;
    const direct = kernelUs(() => void rope(h, pos, opts), busy);
    const fwd = kernelUs(() => void ropeWithTable(h, table), busy);
    const bwd = kernelUs(() => void ropeBackwardWithTable(h, table), busy);
    console.log(
      JSON.stringify({
        kernel: `rope (${name})`,
        shape: `[${T}, ${H}, 128] bf16`,
        directUs: +direct.toFixed(1),
        directGBs: Math.round(moved / direct / 1e3),
        tableUs: +fwd.toFixed(1),
        tableGBs: Math.round(moved / fwd / 1e3),
        tableBackwardUs: +bwd.toFixed(1),
      }),
    );
    h.dispose();
  }
  console.log(JSON.stringify({ kernel: "ropeTable", shape: `[${T}] -> [${T}, 2, 64] fp32`, us: +kernelUs(() => void ropeTable(pos, 128, opts), busy).toFixed(1) }));
}
