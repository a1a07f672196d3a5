// The live progress line on stderr. On a terminal it rewrites one line every step; in a log
// file (not a TTY) it writes one line every log_every steps and on the last step, so logs
// stay readable. Other messages (eval results, checkpoints, warnings) go through `note`,
// which keeps them from being overwritten by the next progress line.
import type { TrainRecord } from "./metrics.ts";

export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export class Progress {
  private live = false;

  constructor(
    private readonly stream: ProgressStream,
    private readonly maxSteps: number,
    private readonly logEvery: number,
  ) {}

  step(r: TrainRecord, etaS: number): void {
    const line = formatProgress(r, this.maxSteps, etaS);
    if (this.stream.isTTY) {
      this.stream.write(`\r\x1b[2K${line}`);
      this.live = true;
    } else if (r.step % this.logEvery === 0 || r.step === this.maxSteps) {
      this.stream.write(line + "\n");
    }
  }

  note(text: string): void {
    this.end();
    this.stream.write(text + "\n");
  }

  /** Leaves the live line in place and moves below it. */
  end(): void {
    if (this.live) this.stream.write("\n");
    this.live = false;
  }
}

export function formatProgress(r: TrainRecord, maxSteps: number, etaS: number): string {
  const width = String(maxSteps).length;
  const parts = [
    `step ${String(r.step).padStart(width)}/${maxSteps}`,
    `loss ${r.loss.toFixed(4)}`,
    `lr ${r.lr.toExponential(2)}`,
    `grad_norm ${r.grad_norm === null ? "non-finite (skipped)" : r.grad_norm.toFixed(3)}`,
    `${Math.round(r.tokens_per_s).toLocaleString("en-US")} tok/s`,
    `ETA ${formatDuration(etaS)}`,
  ];
  return parts.join(" | ");
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = String(t % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}
