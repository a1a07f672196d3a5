// Checkpoint and resume through the trainer's actors: a run stopped after step 4 and resumed
// (checkpoint.resume: auto) takes steps 5 and 6 exactly as an uninterrupted run does: same
// weights and optimizer state, same batches (the data state is the one as of step 4, not
// where the read-ahead pipeline was).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../runtime/index.ts";
import { startTraining, type TrainRecord } from "../../actors/index.ts";
import { SMALL, tempDir } from "./train-testkit.ts";

const root = join(import.meta.dirname, "..", "..");

async function train(out: string, overrides: string[]) {
  const cfg = loadConfig(join(root, "configs/tiny.yaml"), {
    overrides: [
      `output_dir=${JSON.stringify(out)}`,
      ...SMALL,
      "trainer.eval_every=0",
      "optimizer.lr=3e-3",
      "optimizer.schedule.name=constant",
      "optimizer.schedule.warmup_steps=1",
      ...overrides,
    ],
  });
  let err = "";
  const run = await startTraining(cfg, { stderr: { write: (t: string) => void (err += t), isTTY: false } });
  const summary = await run.done;
  assert.equal(summary.state, "done", `${summary.reason}\n${err}`);
  const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as TrainRecord);
  return { summary, records, err, checkpoints: join(out, "checkpoints") };
}

test("a run resumed from its step-4 checkpoint continues exactly as an uninterrupted run", async () => {
  const split = tempDir("tessera-resume-");
  const first = await train(split, ["trainer.max_steps=4", "checkpoint.every=2", "checkpoint.keep_last=1"]);
  assert.deepEqual(readdirSync(first.checkpoints).sort(), ["latest", "step-000004"], "keep_last=1 pruned step 2");

  const resumed = await train(split, ["trainer.max_steps=6", "checkpoint.every=0"]);
  assert.match(resumed.err, /resumed from .*step-000004 at step 4/);
  assert.deepEqual(resumed.records.map((r) => r.step), [1, 2, 3, 4, 5, 6], "the resumed run appends to the metrics file");
  assert.ok(existsSync(join(resumed.checkpoints, "step-000006")), "the final checkpoint");

  const whole = await train(tempDir("tessera-whole-"), ["trainer.max_steps=6", "checkpoint.every=0"]);
  assert.equal(resumed.summary.tokens, whole.summary.tokens);
  for (let i = 0; i < 6; i++) {
    const a = resumed.records[i]!;
    const b = whole.records[i]!;
    assert.equal(a.tokens, b.tokens, `step ${b.step}: the same batch`);
    // Same kernels, same thread count, same inputs: the values agree to rounding at most.
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-6 * b.loss, `step ${b.step}: loss ${a.loss} vs ${b.loss}`);
    assert.ok(Math.abs(a.grad_norm! - b.grad_norm!) <= 1e-5 * b.grad_norm!, `step ${b.step}: grad_norm ${a.grad_norm} vs ${b.grad_norm}`);
  }
});
