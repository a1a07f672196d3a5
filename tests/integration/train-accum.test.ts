// The coordinator's step arithmetic: gradient accumulation normalises by the step's loss
// tokens (two micro-batches of one pack each give the step that one micro-batch of both
// packs gives), a non-finite gradient norm skips the update and is reported, and
// trainer.max_tokens ends the run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../runtime/index.ts";
import { startTraining, type RunSummary, type TrainRecord } from "../../actors/index.ts";
import { SMALL, tempDir } from "./train-testkit.ts";

const root = join(import.meta.dirname, "..", "..");

async function train(overrides: string[]): Promise<{ summary: RunSummary; records: TrainRecord[]; err: string }> {
  const out = tempDir("tessera-accum-");
  const cfg = loadConfig(join(root, "configs/tiny.yaml"), {
    overrides: [
      `output_dir=${JSON.stringify(out)}`,
      ...SMALL,
      "trainer.eval_every=0",
      "optimizer.schedule.name=constant",
      "optimizer.schedule.warmup_steps=0",
      ...overrides,
    ],
  });
  let err = "";
  const run = await startTraining(cfg, { stderr: { write: (t: string) => void (err += t), isTTY: false } });
  const summary = await run.done;
  const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as TrainRecord);
  return { summary, records, err };
}

test("grad_accum=2 over one-pack micro-batches trains as one micro-batch of two packs", async () => {
  const accum = await train(["trainer.max_steps=2", "trainer.grad_accum=2"]);
  const whole = await train(["trainer.max_steps=2", "trainer.micro_batch_tokens=128"]);
  assert.equal(accum.summary.state, "done", accum.summary.reason);
  assert.equal(whole.summary.state, "done", whole.summary.reason);
  for (let i = 0; i < 2; i++) {
    const a = accum.records[i]!;
    const b = whole.records[i]!;
    assert.equal(a.tokens, b.tokens, "the same packs");
    assert.equal(a.loss_tokens, b.loss_tokens);
    // Step 2 starts from the weights step 1 made: it agrees only if step 1's update did.
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * b.loss, `step ${i + 1}: loss ${a.loss} vs ${b.loss}`);
    assert.ok(Math.abs(a.grad_norm! - b.grad_norm!) <= 1e-4 * b.grad_norm!, `step ${i + 1}: grad_norm ${a.grad_norm} vs ${b.grad_norm}`);
  }
});

test("a non-finite gradient norm skips the update and is reported; max_tokens ends the run", async () => {
  // An lr of 1e30 makes the weights overflow in the next forward: the norm is NaN from then on.
  const r = await train(["trainer.max_steps=40", "trainer.max_tokens=150", "trainer.log_every=1", "optimizer.lr=1e30", "trainer.clip_grad_norm=0"]);
  assert.equal(r.summary.state, "done", r.summary.reason);
  assert.match(r.summary.reason, /max_tokens \(150\) reached/);
  assert.equal(r.records.length, 3, "three steps of at most 64 tokens pass 150 tokens");
  assert.equal(r.records[0]!.skipped, false);
  const skipped = r.records.filter((x) => x.skipped);
  assert.ok(skipped.length >= 1, JSON.stringify(r.records.map((x) => [x.loss, x.grad_norm])));
  for (const x of skipped) assert.equal(x.grad_norm, null);
  assert.match(r.err, /step \d+: the gradient norm is not finite; the update was skipped/);
  assert.match(r.err, /grad_norm non-finite \(skipped\)/);
});
