// TFLOP/s of the CUDA varlen attention, forward and backward, at the two Qwen2.5 shapes (T = 8192
// packed as 4 sequences of 2048, causal, bf16), beside PyTorch's sdpa on the same shapes in the
// same call (tests/gpu/attention_torch.py --bench). FLOPs: forward 4 * sum(len^2) / 2 * Hq * Dh,
// backward 2.5x that; the floor is FLOPs over 989 TFLOP/s. Prints one JSON line.
//
//   node --import tsx tests/gpu/attention.bench.ts      (on the GPU machine; not a test)
//
// Each figure: REPS calls back to back, then one wait, over REPS (the B+1 offsets travel on the
// host, as the model passes them, so no call waits); the median of 5 rounds after a warm-up.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { attention, attentionBackward, cudaAttentionFamilies, cudaAttentionKernels, randn, tensor, type Tensor } from "../../native/index.ts";
import { wallSeconds } from "./timing.ts";

const REPS = 20;
const B = 4;
const N = 2048;
const T = B * N;
const PEAK = 989e12;

const bf = (shape: number[], seed: number): Tensor => randn(shape, { seed, dtype: "bfloat16", device: "cuda" }).keep();
const cu = tensor(Int32Array.from({ length: B + 1 }, (_, i) => i * N), [B + 1], { dtype: "int32", device: "cuda" }).keep();
// The offsets ride along on the host, as a packed batch gives them: no wait per call.
const opts = { causal: true, cuSeqlensHost: Int32Array.from({ length: B + 1 }, (_, i) => i * N) };

const shapes: [string, number, number, number][] = [
  ["qwen2.5-0.5b", 14, 2, 64],
  ["qwen2.5-1.5b", 12, 2, 128],
];
// Each kernel family this build can run: mma.sync always, wgmma where built for sm_90a on Hopper.
const families = cudaAttentionFamilies();
const ours: Record<string, Record<string, unknown>> = {};
for (const family of families) {
  cudaAttentionKernels(family);
  const mine: Record<string, unknown> = (ours[family] = {});
  for (const [name, Hq, Hkv, Dh] of shapes) {
    const q = bf([T, Hq, Dh], 1);
    const k = bf([T, Hkv, Dh], 2);
    const v = bf([T, Hkv, Dh], 3);
    const dout = bf([T, Hq, Dh], 4);
    const { o, lse } = attention(q, k, v, cu, opts);
    o.keep();
    lse.keep();
    const flops = (4 * B * N * N) / 2 * Hq * Dh;
    const fwd = wallSeconds(() => void attention(q, k, v, cu, opts), REPS);
    const bwd = wallSeconds(() => void attentionBackward(dout, q, k, v, o, lse, cu, opts), REPS);
    mine[name] = {
      fwd_us: fwd * 1e6,
      fwd_tflops: flops / fwd / 1e12,
      fwd_floor_us: (flops / PEAK) * 1e6,
      bwd_us: bwd * 1e6,
      bwd_tflops: (2.5 * flops) / bwd / 1e12,
      bwd_floor_us: ((2.5 * flops) / PEAK) * 1e6,
    };
  }

  // The per-call cost that is not the kernels' (the cu_seqlens wait, launches, bindings): one
  // sequence of 128 tokens, whose kernels take a few microseconds.
  {
    const [Hq, Hkv, Dh] = [14, 2, 64];
    const n = 128;
    const q = bf([n, Hq, Dh], 5);
    const k = bf([n, Hkv, Dh], 6);
    const cuSmall = tensor(Int32Array.from([0, n]), [2], { dtype: "int32", device: "cuda" }).keep();
    const small = { causal: true, cuSeqlensHost: Int32Array.from([0, n]) };
    const { o, lse } = attention(q, k, k, cuSmall, small);
    o.keep();
    lse.keep();
    mine["small-128-tokens"] = {
      fwd_us: wallSeconds(() => void attention(q, k, k, cuSmall, small), REPS) * 1e6,
      bwd_us: wallSeconds(() => void attentionBackward(q, q, k, k, o, lse, cuSmall, small), REPS) * 1e6,
    };
  }

}
cudaAttentionKernels("auto");

const script = join(import.meta.dirname, "attention_torch.py");
const torchRun = spawnSync("python3", [script, "--bench"], { encoding: "utf8" });
const torch = torchRun.status === 0 ? JSON.parse(torchRun.stdout.trim().split("\n").pop()!) : { error: torchRun.stderr.slice(-500) };
console.log(JSON.stringify({ bench: "attention", T, sequences: B, causal: true, tessera: ours, torch }));
