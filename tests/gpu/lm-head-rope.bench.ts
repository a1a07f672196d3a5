// The lm head's fused cross-entropy at the Qwen2.5-1.5B step's shape (T = 8192, D = 1536, bf16)
// with the real tokenizer's vocabulary (151,669: not a multiple of 64) beside the padded
// config's (151,936), with each call's peak of device memory; and RoPE on q and k (12 and 2
// heads of 128) through the direct op (cos / sin formed per call) and through the per-batch
// table (ropeWithTable; q and k in one launch: ropeQKWithTable), the table's own build timed
// apart; the attention backward's fused RoPE into the q/k/v gradient with its column sums
// (ropeQKVBackwardCat); and sumRows, the q and k/v bias gradients ([8192, 1536] and [8192, 256]).
//
//   node --import tsx tests/gpu/lm-head-rope.bench.ts [lm-head | rope | qkv-cat | sum-rows]     (on the GPU machine; not a test)
//
// Times are device times per call (timed events around each call), the median of 5 rounds of
// REPS calls after a warm-up (timing.ts). A short kernel's events also time the
// host's ~25 us per op call while the queue is empty; the rope and sumRows rows therefore queue
// ~6 ms of GEMM first (as a step's queue is never empty) and time 20 calls between two events
// (kernelUs), cycling through inputs of more than L2's 50 MB where one would stay in it.
import {
  cudaMemoryStats, cudaResetPeak, cudaSynchronize, linearCrossEntropy, matmul, randn, rope, ropeBackwardWithTable, ropeQKBackwardWithTable,
  ropeQKVBackwardCat, ropeQKWithTable, ropeTable, ropeWithTable, scope, sumRows, tensor, type Tensor,
} from "../../native/index.ts";
import { deviceSeconds, kernelUs } from "./timing.ts";

const REPS = 10;
const T = 8192;
const D = 1536;
const only = process.argv[2];

const deviceUs = (fn: () => void, reps = REPS): number => deviceSeconds(fn, reps) * 1e6;

const bf = (shape: number[], seed: number, std = 1): Tensor => randn(shape, { seed, std, dtype: "bfloat16", device: "cuda" }).keep();

for (const V of only === undefined || only === "lm-head" ? [151_669, 151_936] : []) {
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

const big = only === "lm-head" ? undefined : bf([8192, 8192], 30);
const busy = () => {
  for (let i = 0; i < 4; i++) matmul(big!, big!).dispose();
};

if (only === undefined || only === "rope") {
  const pos = tensor(Int32Array.from({ length: T }, (_, i) => i % 2048), [T], { dtype: "int32", device: "cuda" }).keep();
  const opts = { theta: 1e6 };
  const table = ropeTable(pos, 128, opts).keep();
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
  // A layer's q and k in one launch, four pairs in turn (117 MB), so the reads come from HBM as in a step.
  const qs = Array.from({ length: 4 }, (_, i) => bf([T, 12, 128], 40 + i));
  const ks = Array.from({ length: 4 }, (_, i) => bf([T, 2, 128], 50 + i));
  const movedQK = 2 * T * 14 * 128 * 2;
  const twoOps = kernelUs((i) => {
    ropeWithTable(qs[i % 4]!, table).dispose();
    ropeWithTable(ks[i % 4]!, table).dispose();
  }, busy);
  const qkFwd = kernelUs((i) => void ropeQKWithTable(qs[i % 4]!, ks[i % 4]!, table), busy);
  const qkBwd = kernelUs((i) => void ropeQKBackwardWithTable(qs[i % 4]!, ks[i % 4]!, table), busy);
  console.log(
    JSON.stringify({
      kernel: "rope q + k through the table",
      shape: `[${T}, 12, 128] + [${T}, 2, 128] bf16`,
      twoOpsUs: +twoOps.toFixed(1),
      qkUs: +qkFwd.toFixed(1),
      qkGBs: Math.round(movedQK / qkFwd / 1e3),
      qkBackwardUs: +qkBwd.toFixed(1),
      floorUsAt3TBs: +(movedQK / 3e6).toFixed(1),
    }),
  );
  for (const t of [...qs, ...ks]) t.dispose();
  console.log(JSON.stringify({ kernel: "ropeTable", shape: `[${T}] -> [${T}, 2, 64] fp32`, us: +kernelUs(() => void ropeTable(pos, 128, opts), busy).toFixed(1) }));
}

if (only === undefined || only === "qkv-cat") {
  // The attention backward's way into the fused q/k/v projection's gradient: dq, dk, dv (the
  // backward's fp32 sums, or bf16) rotated back into [T, (Hq + 2 Hk) Dh] bf16, with the column
  // sums (the bias gradient) from the same pass; four inputs in turn, past L2.
  const pos = tensor(Int32Array.from({ length: T }, (_, i) => i % 2048), [T], { dtype: "int32", device: "cuda" }).keep();
  for (const [name, Hq, Hk, Dh] of [["1.5B", 12, 2, 128], ["0.5B", 14, 2, 64]] as const) {
    const table = ropeTable(pos, Dh, { theta: 1e6 }).keep();
    for (const dtype of ["float32", "bfloat16"] as const) {
      const grads = Array.from({ length: 4 }, (_, i) =>
        [Hq, Hk, Hk].map((H, j) => randn([T, H, Dh], { seed: 70 + 3 * i + j, dtype, device: "cuda" }).keep()),
      );
      const bytesIn = T * (Hq + 2 * Hk) * Dh * (dtype === "float32" ? 4 : 2);
      const moved = bytesIn + T * (Hq + 2 * Hk) * Dh * 2;
      const cat = (i: number, columnSums: boolean) => {
        const [q, k, v] = grads[i % 4]!;
        const r = ropeQKVBackwardCat(q!, k!, v!, table, { dtype: "bfloat16", columnSums });
        r.dqkv.dispose();
        r.columnSums?.dispose();
      };
      const withSums = kernelUs((i) => cat(i, true), busy);
      const alone = kernelUs((i) => cat(i, false), busy);
      console.log(
        JSON.stringify({
          kernel: "ropeQKVBackwardCat",
          shape: `${name}: dq [${T}, ${Hq}, ${Dh}], dk, dv [${T}, ${Hk}, ${Dh}] ${dtype} -> bf16`,
          withSumsUs: +withSums.toFixed(1),
          withoutSumsUs: +alone.toFixed(1),
          GBs: Math.round(moved / withSums / 1e3),
          floorUsAt3TBs: +(moved / 3e6).toFixed(1),
        }),
      );
      for (const t of grads.flat()) t.dispose();
    }
    table.dispose();
  }
}

if (only === undefined || only === "sum-rows") {
  for (const N of [1536, 256]) {
    // Four gradients in turn: one [8192, 1536] would stay in L2 from call to call.
    const dys = Array.from({ length: 4 }, (_, i) => bf([T, N], 60 + i));
    const us = kernelUs((i) => void sumRows(dys[i % 4]!), busy);
    console.log(
      JSON.stringify({
        kernel: "sumRows (bias grad)",
        shape: `[${T}, ${N}] bf16 -> fp32`,
        us: +us.toFixed(1),
        GBs: Math.round((T * N * 2) / us / 1e3),
        floorUsAt3TBs: +((T * N * 2) / 3e6).toFixed(1),
      }),
    );
    for (const t of dys) t.dispose();
  }
}
