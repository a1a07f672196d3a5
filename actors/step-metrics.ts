// The trainer's per-step figures as OpenTelemetry instruments (exposed by the Prometheus
// endpoint when telemetry sets one up; names there: tessera_train_loss, ...), and the model
// FLOPs behind MFU. Instruments come from the global meter provider at construction, so
// build this after setupTelemetry; without a provider they are no-ops.
import { metrics, type Attributes } from "@opentelemetry/api";
import type { JobConfig } from "../runtime/index.ts";
import type { TrainRecord } from "./metrics.ts";

/** H100 SXM dense bf16 TFLOP/s: the default peak on cuda. */
const H100_BF16_TFLOPS = 989;

/** Per-device peak TFLOP/s for MFU: the config's, else by device; null on cpu (no honest default). */
export function peakTflops(cfg: Pick<JobConfig, "device" | "telemetry">): number | null {
  return cfg.telemetry.peak_tflops ?? (cfg.device === "cuda" ? H100_BF16_TFLOPS : null);
}

/**
 * Training FLOPs of a step (forward and backward), the usual MFU count: 6 per parameter per
 * token for the matmuls, plus attention's scores and weighted sum, 12 * layers * width per
 * pair of positions. Packed sequences attend only within themselves, so the pairs are the
 * sum over sequences of length squared (not tokens * packing_length). Causal masking is not
 * halved and the embedding table counts as parameters, as in the PaLM/Megatron convention.
 */
export function stepFlops(m: ModelShape, params: number, tokens: number, seqLenSq: number): number {
  return 6 * params * tokens + 12 * m.layers * m.attentionWidth * seqLenSq;
}

export interface ModelShape {
  layers: number;
  /** Query heads times head size (differs from hidden_size when head_dim is set). */
  attentionWidth: number;
}

/** Reads a config.json's shape (Hugging Face names; GPT-2's as well); null when it lacks one. */
export function modelShape(config: Record<string, unknown>): ModelShape | null {
  const num = (...keys: string[]) => keys.map((k) => config[k]).find((v): v is number => typeof v === "number");
  const layers = num("num_hidden_layers", "n_layer");
  const hidden = num("hidden_size", "n_embd");
  const heads = num("num_attention_heads", "n_head");
  const headDim = num("head_dim");
  if (layers === undefined || hidden === undefined) return null;
  return { layers, attentionWidth: headDim !== undefined && heads !== undefined ? headDim * heads : hidden };
}

export interface StepMetricsOptions {
  job: string;
  model: Record<string, unknown>;
  /** Per device; null: MFU unknown. */
  peakTflops: number | null;
  /** Devices doing the step (ranks). */
  devices: number;
}

const SECONDS_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class StepMetrics {
  private readonly attrs: Attributes;
  private readonly shape: ModelShape | null;
  private readonly meter = metrics.getMeter("tessera.trainer");
  private readonly step = this.meter.createGauge("tessera.train.step", { description: "Last finished optimizer step" });
  private readonly loss = this.meter.createGauge("tessera.train.loss", { description: "Mean cross-entropy of the last step" });
  private readonly lr = this.meter.createGauge("tessera.train.lr", { description: "Learning rate of the last step" });
  private readonly gradNorm = this.meter.createGauge("tessera.train.grad_norm", { description: "Global gradient norm before clipping" });
  private readonly tokensPerS = this.meter.createGauge("tessera.train.tokens_per_second", { description: "Tokens per second of the last step", unit: "1/s" });
  private readonly mfuGauge = this.meter.createGauge("tessera.train.mfu", { description: "Model FLOPs utilization of the last step (0..1)" });
  private readonly stepS = this.meter.createHistogram("tessera.train.step_seconds", {
    description: "Wall time of an optimizer step",
    unit: "s",
    advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
  });
  private readonly dataWaitS = this.meter.createHistogram("tessera.train.data_wait_seconds", {
    description: "Time a step waited for its batches",
    unit: "s",
    advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
  });
  private readonly tokens = this.meter.createCounter("tessera.train.tokens", { description: "Tokens trained on by this process" });
  private readonly skipped = this.meter.createCounter("tessera.train.skipped_steps", { description: "Steps whose update was skipped (non-finite gradient norm)" });
  private readonly liveBytes = this.meter.createGauge("tessera.memory.live_tensor_bytes", { description: "Rank 0's live tensor bytes after the step", unit: "By" });
  private readonly cudaBytes = this.meter.createGauge("tessera.memory.cuda_bytes", {
    description: "Rank 0's device allocator bytes after the step, by state (allocated, reserved, peak)",
    unit: "By",
  });

  constructor(private readonly o: StepMetricsOptions) {
    this.attrs = { job: o.job };
    this.shape = modelShape(o.model);
  }

  /** MFU of a step; null without a peak or a readable model shape. */
  mfu(params: number, tokens: number, seqLenSq: number, stepS: number): number | null {
    if (this.o.peakTflops === null || this.shape === null || stepS <= 0) return null;
    return stepFlops(this.shape, params, tokens, seqLenSq) / stepS / (this.o.peakTflops * 1e12 * this.o.devices);
  }

  record(r: TrainRecord): void {
    const a = this.attrs;
    this.step.record(r.step, a);
    this.loss.record(r.loss, a);
    this.lr.record(r.lr, a);
    if (r.grad_norm !== null) this.gradNorm.record(r.grad_norm, a);
    this.tokensPerS.record(r.tokens_per_s, a);
    if (r.mfu !== null) this.mfuGauge.record(r.mfu, a);
    this.stepS.record(r.step_s, a);
    this.dataWaitS.record(r.data_wait_s, a);
    this.tokens.add(r.tokens, a);
    if (r.skipped) this.skipped.add(1, a);
    this.liveBytes.record(r.memory.live_bytes, a);
    const cuda = r.memory.cuda;
    if (cuda) for (const state of ["allocated", "reserved", "peak"] as const) this.cudaBytes.record(cuda[state], { ...a, state });
  }
}
