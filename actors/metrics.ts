// The run's metrics file, OUTPUT_DIR/metrics.jsonl: one JSON object per line, always written
// whatever the telemetry exporter. A train record per optimizer step; an eval record per
// evaluation. Non-finite numbers become null (JSON has no NaN).
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

export interface TrainRecord {
  kind: "train";
  step: number;
  /** Mean cross-entropy over the step's counted tokens (every rank, every micro-batch). */
  loss: number;
  lr: number;
  /** Global gradient norm before clipping; null when non-finite (the step was skipped). */
  grad_norm: number | null;
  skipped: boolean;
  clipped: boolean;
  /** Tokens of this step (all ranks), and those that carried loss. */
  tokens: number;
  loss_tokens: number;
  /** Tokens of this run so far (resumed runs include the resumed ones). */
  total_tokens: number;
  tokens_per_s: number;
  step_s: number;
  /** Time the coordinator waited for the step's batches to exist. */
  data_wait_s: number;
  elapsed_s: number;
  /** Rank 0's live tensors and their bytes after the step (the leak check reads this). */
  live_tensors: number;
  live_bytes: number;
  /**
   * Model FLOPs utilization (0..1, actors/step-metrics stepFlops over the step's time and
   * every rank's peak); null when no peak is known: on cpu unless telemetry.peak_tflops is set.
   */
  mfu: number | null;
  /** Rank 0's memory after the step: live tensor bytes, and the device allocator's on cuda (else null). */
  memory: { live_bytes: number; cuda: { allocated: number; reserved: number; peak: number } | null };
}

export interface EvalRecord {
  kind: "eval";
  step: number;
  eval_loss: number;
  eval_tokens: number;
  eval_batches: number;
  eval_s: number;
  elapsed_s: number;
}

export type MetricsRecord = TrainRecord | EvalRecord;

export class MetricsFile {
  /**
   * A fresh run starts the file anew. A resumed run (`resumedAt`: its checkpoint's step) keeps
   * the records up to that step and drops later ones: the steps after the checkpoint are
   * trained again, and each step should appear once.
   */
  constructor(
    readonly path: string,
    resumedAt?: number,
  ) {
    mkdirSync(dirname(path), { recursive: true });
    let kept = "";
    if (resumedAt !== undefined && existsSync(path)) {
      kept = readFileSync(path, "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "" && stepOf(l) <= resumedAt)
        .map((l) => l + "\n")
        .join("");
    }
    writeFileSync(path, kept);
  }

  write(r: MetricsRecord): void {
    appendFileSync(this.path, JSON.stringify(r, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v)) + "\n");
  }
}

/** A line's step; a line that is not a record (a torn write) counts as past every step. */
function stepOf(line: string): number {
  try {
    const step = (JSON.parse(line) as { step?: unknown }).step;
    return typeof step === "number" ? step : Infinity;
  } catch {
    return Infinity;
  }
}
