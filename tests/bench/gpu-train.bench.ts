// The single-GPU training step of issue 6: Qwen2-shaped models (the Qwen2.5-0.5B and 1.5B
// shapes, read from configs/qwen2_5-{0_5b,1_5b}-gpu.yaml; random init, tied embeddings) on
// cuda, bf16 compute over fp32 master weights and gradients, AdamW writing the bf16 copies,
// 8192 tokens per step as a packed batch of 4 sequences of 2048, global-norm clipping at 1.0.
// Run on the GPU machine beside tests/bench/torch_reference.py (same shapes, same tokens per
// step), in the same call:
//
//   node --import tsx tests/bench/gpu-train.bench.ts [--models qwen2.5-0.5b,qwen2.5-1.5b]
//        [--steps 30] [--warmup 3] [--seq-len 2048] [--tokens 8192] [--out FILE]
//
// 30 timed steps by default: at 8, the 0.5B step read 68.7 to 75.1 ms between runs of one build
// (native/NOTES.md, 2026-11-24; the cause, presumably a host pause in the untimed loop, not found).
//
// --seq-len L packs the step's tokens as sequences of L (the last one shorter where L does not
// divide them): short documents, as a job on short records packs them. --tokens T: T tokens a
// step instead of 8192 (a packed job's count varies a little from step to step).
//
// Prints and writes JSON per model: tokens/s, step ms, MFU (the same FLOP count as the
// PyTorch script: 6 N T + causal attention, over 989 TFLOP/s), peak and reserved device
// memory, and the step's device time split by op family from timed CUDA events around every
// op (one extra profiled step: the events add host time, so the split is not the timed run).
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { configFromHF, createModel, createOptimizer, clipGradNorm, gradSumSquaresQueued, mulberry32, noDecay, packSequences, type CausalLM, type DecoderConfig } from "../../models/index.ts";
import { CudaEvent, cudaAvailable, cudaEmptyCache, cudaMemoryStats, cudaResetPeak, cudaSynchronize, liveTensors, startCudaProfile, stopCudaProfile, summarizeCudaProfile } from "../../native/index.ts";
import { loadConfig } from "../../runtime/config/index.ts";

/** The models by the names torch_reference.py gives them, and the job configs that hold their shapes. */
const CONFIGS: Record<string, string> = {
  "qwen2.5-0.5b": "configs/qwen2_5-0_5b-gpu.yaml",
  "qwen2.5-1.5b": "configs/qwen2_5-1_5b-gpu.yaml",
};
const PEAK_TFLOPS = 989;
// The configs leave the vocabulary to their tokenizer; the bench takes the released
// checkpoints' padded one, as torch_reference.py does.
const VOCAB = 151936;

/** The tensor-level fills, copies and uploads (native/cuda.ts profiledCopy). */
const COPIES = new Set(["zeros", "clone", "to", "copyInto", "tensor"]);

/** Which part of the step an op belongs to (the split, and the copies apart). */
function familyOf(op: string): string {
  if (op.startsWith("matmul")) return "gemm";
  if (op.startsWith("attention")) return "attention";
  if (op.startsWith("linearCrossEntropy")) return "loss (lm head GEMMs + softmax)";
  if (op.startsWith("adamwStep") || op === "sumSquaresOf" || op === "scaleInPlace" || op === "sumSquares") return "optimizer";
  if (COPIES.has(op)) return "copies and fills";
  return "fused ops";
}

/** The model of the named job config (only its model section is read: the bench makes its own batches). */
function modelConfig(name: string): DecoderConfig {
  const file = join(import.meta.dirname, "..", "..", CONFIGS[name]!);
  const hf = loadConfig(file, { checkPaths: false }).model.config;
  if (!hf) throw new Error(`gpu-train: ${file} gives no inline model.config`);
  const c = configFromHF({ ...hf, vocab_size: VOCAB }, file);
  if (c.family !== "decoder") throw new Error(`gpu-train: ${file} is not a decoder (${c.family})`);
  return c;
}

function seqLengths(seqLen: number): number[] {
  const lens: number[] = [];
  for (let left = TOKENS; left > 0; left -= seqLen) lens.push(Math.min(seqLen, left));
  return lens;
}

function flopsPerStep(c: DecoderConfig, params: number, seqLen: number): number {
  const sumSq = seqLengths(seqLen).reduce((a, l) => a + l * l, 0);
  const attn = (3 * 2 * 2 * sumSq * c.hiddenSize * c.numLayers) / 2;
  return 6 * params * TOKENS + attn;
}

function randomBatch(seed: number, seqLen: number) {
  const rand = mulberry32(seed);
  return packSequences(seqLengths(seqLen).map((l) => Array.from({ length: l }, () => Math.floor(rand() * VOCAB))));
}

function benchModel(name: string, steps: number, warmup: number, seqLen: number) {
  const t0 = performance.now();
  const config = modelConfig(name);
  const model: CausalLM = createModel(config, { seed: 0, dtype: "float32" });
  model.place("cuda", "bfloat16");
  const nParams = model.params().reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  const params = model.params().map((p) => p.optimParam());
  const opt = createOptimizer(
    { name: "adamw", betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, muon: { momentum: 0.95, nesterov: true, ns_steps: 5 } },
    params,
    { noDecay },
  );
  const setupS = (performance.now() - t0) / 1000;
  const batches = [randomBatch(1, seqLen), randomBatch(2, seqLen)];
  const losses: number[] = [];
  // Where each step's time goes: device time between timed events at the step's start, after
  // forward+backward and after the optimizer, and the host's time to the same points (the host
  // waits for the device at the loss, the global norm and the embedding's id check).
  const phases = { device_fwd_bwd_ms: 0, device_optim_ms: 0, host_fwd_bwd_ms: 0, host_optim_ms: 0 };
  const step = (i: number, timed = false) => {
    const e0 = timed ? CudaEvent.record("compute", { timed: true }) : undefined;
    const h0 = performance.now();
    const r = model.loss(batches[i % 2]!);
    const e1 = timed ? CudaEvent.record("compute", { timed: true }) : undefined;
    const h1 = performance.now();
    // As the trainer's RankPlan.optimStep: the update is prepared while the device sums the
    // gradients' squares, and launched once the host has read the norm.
    const sum = gradSumSquaresQueued(params);
    const prepared = opt.prepareStep(1e-4);
    const clip = clipGradNorm(params, 1.0, { norm: Math.sqrt(sum.read()), scaleGrads: false });
    if (clip.finite) prepared.apply(clip.scale);
    else prepared.drop();
    model.zeroGrad();
    const e2 = timed ? CudaEvent.record("compute", { timed: true }) : undefined;
    const h2 = performance.now();
    losses.push(r.loss);
    if (e0 && e1 && e2) {
      e2.synchronize();
      phases.device_fwd_bwd_ms += e1.elapsedMsSince(e0) / steps;
      phases.device_optim_ms += e2.elapsedMsSince(e1) / steps;
      phases.host_fwd_bwd_ms += (h1 - h0) / steps;
      phases.host_optim_ms += (h2 - h1) / steps;
    }
  };
  cudaResetPeak();
  for (let i = 0; i < warmup; i++) step(i);
  cudaSynchronize();
  const mallocsBefore = cudaMemoryStats().mallocs;
  const t1 = performance.now();
  for (let i = 0; i < steps; i++) step(i);
  cudaSynchronize();
  const stepMs = (performance.now() - t1) / steps;
  const mem = cudaMemoryStats();
  for (let i = 0; i < steps; i++) step(i, true);

  startCudaProfile();
  step(0);
  const { device_ms: deviceMs, ops } = summarizeCudaProfile(stopCudaProfile());
  const split: Record<string, number> = {};
  for (const [op, t] of Object.entries(ops)) split[familyOf(op)] = (split[familyOf(op)] ?? 0) + t.ms;

  opt.dispose();
  model.dispose();
  const live = liveTensors();
  cudaEmptyCache();
  const flops = flopsPerStep(config, nParams, seqLen);
  return {
    model: name,
    params: nParams,
    tokens_per_step: TOKENS,
    seq_len: seqLen,
    step_ms: +stepMs.toFixed(2),
    tokens_per_s: Math.round(TOKENS / (stepMs / 1000)),
    mfu: +((flops / (stepMs / 1000)) / (PEAK_TFLOPS * 1e12)).toFixed(4),
    peak_gb: +(mem.peak / 1e9).toFixed(2),
    reserved_gb: +(mem.reserved / 1e9).toFixed(2),
    cuda_mallocs_in_timed_steps: mem.mallocs - mallocsBefore,
    phases_ms: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, +v.toFixed(2)])),
    losses: losses.map((l) => +l.toFixed(4)),
    setup_s: +setupS.toFixed(1),
    profiled_device_ms: +deviceMs.toFixed(2),
    split_ms: Object.fromEntries(Object.entries(split).map(([k, v]) => [k, +v.toFixed(2)])),
    ops,
    live_tensors_after_dispose: live.cudaCount,
  };
}

const { values } = parseArgs({
  options: {
    models: { type: "string", default: Object.keys(CONFIGS).join(",") },
    steps: { type: "string", default: "30" },
    warmup: { type: "string", default: "3" },
    "seq-len": { type: "string", default: "2048" },
    tokens: { type: "string", default: "8192" },
    out: { type: "string", default: "tests/bench/results/gpu-train.json" },
  },
});
if (!cudaAvailable()) {
  console.log("gpu-train: no CUDA device here; run it on the GPU machine");
  process.exit(0);
}
/** Tokens per step (--tokens). */
const TOKENS = Number(values.tokens);
const seqLen = Number(values["seq-len"]);
for (const [name, v] of [["--tokens", TOKENS], ["--seq-len", seqLen]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`gpu-train: ${name} must be a positive integer, got ${String(v)}`);
}
const results = [];
for (const name of values.models!.split(",")) {
  if (!CONFIGS[name]) throw new Error(`unknown model ${name}; have ${Object.keys(CONFIGS).join(", ")}`);
  const r = benchModel(name, Number(values.steps), Number(values.warmup), seqLen);
  console.log(JSON.stringify(r));
  results.push(r);
}
mkdirSync(dirname(values.out!), { recursive: true });
writeFileSync(values.out!, JSON.stringify({ device: "cuda", date: new Date().toISOString(), results }, null, 2));
