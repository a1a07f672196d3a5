// Benchmark of training on CPU: configs/tiny.yaml run in this process as `tessera train` runs
// it (every actor, the in-process transport), at hidden size 64 (the file's), 128 and 256.
// Per variant: tokens/s over the measured steps (the first WARMUP steps, which allocate the
// optimizer state and warm the caches, are left out), the mean step time and how it splits
// into the rank's data wait, forward+backward and optimizer spans, and the achieved GFLOP/s
// by the 6 * parameters * tokens rule (attention's own FLOPs left out; the 151,669-row tied
// embedding / head dominates the count at these widths).
//
//   node --import tsx tests/bench/train-tiny.bench.ts
//
// Prints a table and writes tests/bench/results/train-tiny.json. About a minute on 2 cores.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { buildModel, resolveModelSpec, startTraining, type TrainRecord } from "../../actors/index.ts";
import { loadConfig, setupTelemetry, type JobConfig, type SpanRecord } from "../../runtime/index.ts";

const WARMUP = 2;
const MEASURED = 10;
/** Hidden sizes; the MLP is twice as wide as tiny.yaml's (128 for 64), heads stay 4 with 2 KV. */
const HIDDEN = [64, 128, 256];

const root = join(import.meta.dirname, "..", "..");

interface Row {
  hidden: number;
  params: number;
  packingLength: number;
  steps: number;
  tokens: number;
  tokensPerSec: number;
  stepMs: number;
  /** Per step, from the rank's spans: waiting for its batch, forward+backward, optimizer. */
  dataWaitMs: number;
  forwardBackwardMs: number;
  optimizerMs: number;
  /** The coordinator's wait for the step's batches to exist (metrics data_wait_s). */
  coordinatorDataWaitMs: number;
  gflopsPerSec: number;
  finalLoss: number;
}

function config(hidden: number, out: string): JobConfig {
  return loadConfig(join(root, "configs/tiny.yaml"), {
    overrides: [
      `output_dir=${JSON.stringify(out)}`,
      `model.config.hidden_size=${hidden}`,
      `model.config.intermediate_size=${2 * hidden}`,
      `trainer.max_steps=${WARMUP + MEASURED}`,
      "trainer.eval_every=0",
      `trainer.log_every=${WARMUP + MEASURED}`,
      "checkpoint.every=0",
      "optimizer.schedule.warmup_steps=1",
      "telemetry.exporter=jsonl",
    ],
  });
}

async function paramCount(cfg: JobConfig): Promise<number> {
  const model = await buildModel(resolveModelSpec(cfg), cfg);
  const n = model.params().reduce((a, p) => a + p.value.numel, 0);
  model.dispose();
  return n;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

/** Mean per measured step of a phase's spans (several per step with grad_accum: summed). */
function phaseMs(spans: SpanRecord[], name: string, measured: Set<number>): number {
  const perStep = new Map<number, number>();
  for (const s of spans) {
    const step = s.attributes.step;
    if (s.name !== name || typeof step !== "number" || !measured.has(step)) continue;
    // The coordinator's data_wait carries no micro attribute; the rank's does.
    if (name === "data_wait" && s.attributes.micro === undefined) continue;
    perStep.set(step, (perStep.get(step) ?? 0) + s.durationMs);
  }
  return mean([...perStep.values()]);
}

async function bench(hidden: number): Promise<Row> {
  const out = mkdtempSync(join(tmpdir(), "tessera-bench-train-"));
  try {
    const cfg = config(hidden, out);
    const params = await paramCount(cfg);
    const telemetry = await setupTelemetry(cfg.telemetry);
    try {
      const run = await startTraining(cfg, { stderr: { write: () => {}, isTTY: false } });
      const summary = await run.done;
      if (summary.state !== "done") throw new Error(`hidden ${hidden}: ${summary.state}: ${summary.reason}`);
    } finally {
      await telemetry.shutdown();
    }
    const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as TrainRecord)
      .filter((r) => r.kind === "train" && r.step > WARMUP);
    const spans = readFileSync(cfg.telemetry.jsonl_path, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as SpanRecord);
    const measured = new Set(records.map((r) => r.step));
    const tokens = records.reduce((a, r) => a + r.tokens, 0);
    const seconds = records.reduce((a, r) => a + r.step_s, 0);
    const tokensPerSec = tokens / seconds;
    return {
      hidden,
      params,
      packingLength: cfg.data.packing_length,
      steps: records.length,
      tokens,
      tokensPerSec: Math.round(tokensPerSec),
      stepMs: round(mean(records.map((r) => r.step_s * 1000))),
      dataWaitMs: round(phaseMs(spans, "data_wait", measured)),
      forwardBackwardMs: round(phaseMs(spans, "forward_backward", measured)),
      optimizerMs: round(phaseMs(spans, "optimizer", measured)),
      coordinatorDataWaitMs: round(mean(records.map((r) => r.data_wait_s * 1000))),
      gflopsPerSec: round((6 * params * tokensPerSec) / 1e9),
      finalLoss: round(records.at(-1)!.loss),
    };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const round = (x: number) => Number(x.toFixed(2));

const rows: Row[] = [];
for (const h of HIDDEN) rows.push(await bench(h));

console.log(`training tiny.yaml on CPU: ${MEASURED} steps measured after ${WARMUP} warm-up steps, one rank`);
console.log("hidden   params   tokens/s  step ms  data wait  fwd+bwd  optimizer  GFLOP/s");
for (const r of rows) {
  console.log(
    [
      String(r.hidden).padStart(6),
      `${(r.params / 1e6).toFixed(2)}M`.padStart(8),
      String(r.tokensPerSec).padStart(10),
      r.stepMs.toFixed(1).padStart(8),
      r.dataWaitMs.toFixed(1).padStart(10),
      r.forwardBackwardMs.toFixed(1).padStart(8),
      r.optimizerMs.toFixed(1).padStart(10),
      r.gflopsPerSec.toFixed(2).padStart(8),
    ].join(" "),
  );
}

const result = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? "unknown",
  cores: cpus().length,
  loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
  config: "configs/tiny.yaml",
  warmupSteps: WARMUP,
  measuredSteps: MEASURED,
  rows,
};
const dir = join(import.meta.dirname, "results");
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, "train-tiny.json"), JSON.stringify(result, null, 2) + "\n");
