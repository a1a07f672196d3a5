// configs/tiny.yaml trained in this process, as `tessera train` runs it: the metrics file,
// a falling loss on the repeated tiny data, evaluation, no tensor leak, and a clean stop.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../runtime/index.ts";
import { ADDRESS, CoordinatorProtocol, startTraining, type EvalRecord, type TrainRecord } from "../../actors/index.ts";
import { SMALL, tempDir } from "./train-testkit.ts";

const root = join(import.meta.dirname, "..", "..");

function tinyConfig(overrides: string[]) {
  const out = tempDir("tessera-train-");
  return loadConfig(join(root, "configs/tiny.yaml"), { overrides: [`output_dir=${JSON.stringify(out)}`, ...overrides] });
}

function captured() {
  let text = "";
  return { stream: { write: (t: string) => void (text += t), isTTY: false }, text: () => text };
}

test("six steps of tiny.yaml: metrics per step and per eval, the loss falls, no tensor leaks", async () => {
  // A constant lr after one warmup step, so that six steps move the loss clearly.
  const cfg = tinyConfig([
    "trainer.max_steps=6",
    "trainer.eval_every=3",
    "trainer.log_every=2",
    "data.eval.max_batches=2",
    "optimizer.lr=3e-3",
    "optimizer.schedule.name=constant",
    "optimizer.schedule.warmup_steps=1",
  ]);
  const err = captured();
  const run = await startTraining(cfg, { stderr: err.stream });
  const summary = await run.done;
  assert.equal(summary.state, "done", summary.reason);
  assert.equal(summary.step, 6);
  assert.match(summary.reason, /max_steps/);

  const records = readFileSync(join(cfg.output_dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as TrainRecord | EvalRecord);
  const train = records.filter((r): r is TrainRecord => r.kind === "train");
  const evals = records.filter((r): r is EvalRecord => r.kind === "eval");
  assert.deepEqual(train.map((r) => r.step), [1, 2, 3, 4, 5, 6]);
  for (const r of train) {
    for (const k of ["loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"] as const) {
      assert.equal(typeof r[k], "number", `step ${r.step}: ${k}`);
      assert.ok(Number.isFinite(r[k]), `step ${r.step}: ${k} = ${r[k]}`);
    }
    assert.ok(r.tokens > 0 && r.tokens <= cfg.data.packing_length);
    assert.equal(r.skipped, false);
    // cpu and no telemetry.peak_tflops: no peak to measure against.
    assert.equal(r.mfu, null);
    assert.deepEqual(r.memory, { live_bytes: r.live_bytes, cuda: null });
  }
  assert.equal(summary.tokens, train.reduce((a, r) => a + r.tokens, 0));
  assert.equal(train[0]!.lr, 3e-3);
  // An untrained model predicts about uniformly over 151,669 tokens: ln(151669) = 11.93.
  assert.ok(Math.abs(train[0]!.loss - Math.log(151_669)) < 0.5, `first loss ${train[0]!.loss}`);
  assert.ok(train.at(-1)!.loss < train[0]!.loss - 0.1, `loss ${train[0]!.loss} -> ${train.at(-1)!.loss}`);
  assert.ok(train.every((r) => r.elapsed_s > 0) && train.at(-1)!.elapsed_s >= train[0]!.elapsed_s);

  // Leak check: after the first step (which creates the optimizer state) the count stays put.
  const live = train.map((r) => r.live_tensors);
  assert.ok(live.every((n) => n === live[0]), `live tensors per step: ${live.join(", ")}`);

  assert.deepEqual(evals.map((r) => r.step), [3, 6]);
  for (const e of evals) {
    assert.ok(Number.isFinite(e.eval_loss) && e.eval_tokens > 0 && e.eval_batches === 2, JSON.stringify(e));
  }
  assert.ok(evals[1]!.eval_loss < evals[0]!.eval_loss, "held-out loss falls too");

  const lines = err.text().split("\n");
  assert.ok(lines.some((l) => /^step 2\/6 \| loss \d+\.\d{4} \|.*tok\/s \| ETA/.test(l)), err.text());
  assert.ok(!lines.some((l) => l.startsWith("step 1/6")), "not a TTY: one line per log_every steps");
  assert.match(err.text(), /eval at step 3: loss/);
  // checkpoint.every is 20: only the final checkpoint.
  assert.match(err.text(), /checkpoint at step 6: .*step-000006/);
  assert.deepEqual(readdirSync(cfg.checkpoint.dir).sort(), ["latest", "step-000006"]);
});

test("a stop finishes the step in progress, checkpoints and ends the run as stopped", async () => {
  const cfg = tinyConfig([...SMALL, "trainer.max_steps=40", "trainer.eval_every=0"]);
  const err = captured();
  const run = await startTraining(cfg, { stderr: err.stream });
  const coordinator = run.system.ref(ADDRESS.coordinator, CoordinatorProtocol);
  while ((await coordinator.ask({ type: "status" })).step < 1) await new Promise((r) => setTimeout(r, 20));
  await run.stop("test stop");
  const summary = await run.done;
  assert.equal(summary.state, "stopped");
  assert.equal(summary.reason, "test stop");
  assert.ok(summary.step >= 1 && summary.step < 40, `stopped at step ${summary.step}`);
  const lines = readFileSync(join(cfg.output_dir, "metrics.jsonl"), "utf8").trim().split("\n");
  assert.equal(lines.length, summary.step);
  assert.ok(readdirSync(cfg.checkpoint.dir).includes(`step-${String(summary.step).padStart(6, "0")}`), err.text());
});
