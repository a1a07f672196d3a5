// What a run writes for people and tools: metrics.jsonl across a resume, and the progress line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatDuration, MetricsFile, Progress, type TrainRecord } from "../../actors/index.ts";

function record(step: number, over: Partial<TrainRecord> = {}): TrainRecord {
  return {
    kind: "train",
    step,
    loss: 2.5,
    lr: 1e-3,
    grad_norm: 0.5,
    skipped: false,
    clipped: false,
    tokens: 1000,
    loss_tokens: 900,
    total_tokens: 1000 * step,
    tokens_per_s: 12_345.6,
    step_s: 0.08,
    data_wait_s: 0,
    elapsed_s: step * 0.08,
    live_tensors: 10,
    live_bytes: 100,
    mfu: null,
    memory: { live_bytes: 100, cuda: null },
    ...over,
  };
}

test("metrics.jsonl: a fresh run starts it anew, a resumed run keeps the records up to its checkpoint's step", () => {
  const path = join(mkdtempSync(join(tmpdir(), "tessera-metrics-")), "metrics.jsonl");
  writeFileSync(path, "left over from an earlier run\n");
  const fresh = new MetricsFile(path);
  for (const s of [1, 2, 3]) fresh.write(record(s));
  fresh.write({ kind: "eval", step: 2, eval_loss: 2.4, eval_tokens: 10, eval_batches: 1, eval_s: 0.1, elapsed_s: 0.2 });
  fresh.write(record(4, { loss: Number.NaN, grad_norm: null, skipped: true }));
  const lines = readFileSync(path, "utf8").trim().split("\n");
  assert.equal(lines.length, 5);
  const last = JSON.parse(lines[4]!) as Record<string, unknown>;
  assert.equal(last.loss, null, "NaN is written as null");
  assert.equal(last.skipped, true);

  // The run crashed after step 4; its newest checkpoint is step 2's.
  const resumed = new MetricsFile(path, 2);
  resumed.write(record(3, { loss: 2.0 }));
  const after = readFileSync(path, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { kind: string; step: number; loss?: number });
  assert.deepEqual(after.map((r) => [r.kind, r.step]), [["train", 1], ["train", 2], ["eval", 2], ["train", 3]]);
  assert.equal(after[3]!.loss, 2.0);
});

test("progress: one line per log_every steps (and the last) when not a terminal; rewritten in place on one", () => {
  let text = "";
  const log = new Progress({ write: (t: string) => void (text += t), isTTY: false }, 10, 5);
  for (let s = 1; s <= 10; s++) log.step(record(s), (10 - s) * 0.08);
  log.note("eval at step 10: loss 2.4");
  assert.deepEqual(
    text.trim().split("\n").map((l) => l.slice(0, 10)),
    ["step  5/10", "step 10/10", "eval at st"],
  );
  assert.match(text, /^step  5\/10 \| loss 2\.5000 \| lr 1\.00e-3 \| grad_norm 0\.500 \| 12,346 tok\/s \| ETA 0:00$/m);

  let tty = "";
  const live = new Progress({ write: (t: string) => void (tty += t), isTTY: true }, 10, 5);
  live.step(record(1), 3725);
  live.step(record(2, { grad_norm: null, skipped: true }), 60);
  live.note("a note");
  assert.equal(tty.split("\r\x1b[2K").length, 3, "each step rewrites the line");
  assert.match(tty, /ETA 1:02:05/);
  assert.match(tty, /grad_norm non-finite \(skipped\)/);
  assert.ok(tty.endsWith("ETA 1:00\na note\n"), "a note moves below the live line");
  assert.equal(formatDuration(Number.NaN), "?");
});
