// Checkpoint and resume through the trainer's actors, on one rank: a 20-step run stopped at
// step 10 and resumed (checkpoint.resume: auto) is the uninterrupted 20-step run bit for bit:
// the same loss, grad norm and lr per step as numbers, and a final checkpoint whose every
// tensor (weights and optimizer buffers) has the same bits, with the same optimizer step
// counts, data state and RNG state. The stop comes from trainer.max_tokens (the tokens of
// the uninterrupted run's first 10 steps), so the stopped run has max_steps 20 and the
// 20-step cosine schedule, as a run cut short has. Same kernels, same thread count, same
// inputs: nothing may differ, so nothing is allowed to.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { startTraining, type TrainRecord } from "../../actors/index.ts";
import { assertSameCheckpointBits, config, trainRecords } from "./train-multirank-kit.ts";
import { tempDir } from "./train-testkit.ts";

async function train(out: string, overrides: readonly string[]) {
  const cfg = config(out, ["trainer.max_steps=20", ...overrides]);
  let err = "";
  const run = await startTraining(cfg, { stderr: { write: (t: string) => void (err += t), isTTY: false } });
  const summary = await run.done;
  assert.equal(summary.state, "done", `${summary.reason}\n${err}`);
  return { summary, records: trainRecords(out), err, checkpoints: cfg.checkpoint.dir };
}

const curve = (rs: readonly TrainRecord[]) => rs.map((r) => ({ step: r.step, loss: r.loss, grad_norm: r.grad_norm, lr: r.lr, tokens: r.tokens, loss_tokens: r.loss_tokens, total_tokens: r.total_tokens }));

test("a 20-step run stopped at step 10 and resumed equals the uninterrupted run bit for bit: every loss, every final tensor", async () => {
  const whole = await train(tempDir("tessera-whole-"), ["checkpoint.every=0"]);
  assert.deepEqual(whole.records.map((r) => r.step), Array.from({ length: 20 }, (_, i) => i + 1));
  const tokensAt10 = whole.records[9]!.total_tokens;

  const split = tempDir("tessera-resume-");
  const first = await train(split, [`trainer.max_tokens=${tokensAt10}`, "checkpoint.every=5", "checkpoint.keep_last=1"]);
  assert.equal(first.summary.step, 10, first.summary.reason);
  assert.match(first.summary.reason, /max_tokens/);
  assert.deepEqual(readdirSync(first.checkpoints).sort(), ["latest", "step-000010"], "keep_last=1 pruned step 5");

  const resumed = await train(split, ["checkpoint.every=0"]);
  assert.match(resumed.err, /resumed from .*step-000010 at step 10/);
  assert.deepEqual(resumed.records.map((r) => r.step), whole.records.map((r) => r.step), "the resumed run appends to the metrics file, each step once");
  assert.ok(existsSync(`${resumed.checkpoints}/step-000020`), "the final checkpoint");
  assert.equal(resumed.summary.tokens, whole.summary.tokens);
  // deepEqual compares numbers with Object.is: the same doubles, not close ones.
  assert.deepEqual(curve(resumed.records), curve(whole.records));
  await assertSameCheckpointBits(`${resumed.checkpoints}/step-000020`, `${whole.checkpoints}/step-000020`);
});
