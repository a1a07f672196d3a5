// A rank process that dies mid-run: `tessera train` restarts every rank from the last
// checkpoint, finishes, exits 0, and metrics.jsonl holds every step once, with the loss
// curve of an uninterrupted run (the resumed data and weights are the checkpoint's) and its
// final weights. With
// trainer.max_failures=0 the job exits 1 naming the dead rank. Ctrl-C is not a failure.
// (Hung ranks: train-multirank-hang.test.ts.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { stepDirName } from "../../models/index.ts";
import {
  ALL_STEPS,
  assertSameCheckpointBits,
  assertSameCurve,
  assertSameWeights,
  config,
  FAILURE_STEPS,
  rankPid,
  referenceRun,
  resumedStep,
  trainFsdp2,
  trainRecords,
} from "./train-multirank-kit.ts";
import { tempDir } from "./train-testkit.ts";

test("kill -9 of a rank after the first checkpoint: every rank restarts from it, the run finishes with the uninterrupted curve and final weights", async (t) => {
  const out = tempDir("tessera-mr-kill-");
  const run = trainFsdp2(out, []);
  await run.waitFor(/checkpoint at step 2:/);
  process.kill(rankPid(run.pid, 1), "SIGKILL");
  const { code, stderr } = await run.exit;
  assert.equal(code, 0, stderr);
  assert.match(stderr, /rank 1 \(pid \d+, node 0\) exited \(SIGKILL\)/);
  assert.match(stderr, /restarting every rank from the last checkpoint \(restart 1 of 3\)/);
  resumedStep(stderr);
  const got = trainRecords(out);
  assert.deepEqual(got.map((r) => r.step), ALL_STEPS, "every step once");
  const refOut = tempDir("tessera-mr-ref-");
  const want = await referenceRun(refOut, [...FAILURE_STEPS, "trainer.micro_batch_tokens=128"]);
  assertSameCurve(got, want, 1e-5);

  // The final weights: those of the same job run without a kill, bit for bit (the same mesh
  // reduces in the same order), and those of one rank to float tolerance (the parity tests' bound).
  const whole = tempDir("tessera-mr-whole-");
  const uninterrupted = await trainFsdp2(whole, []).exit;
  assert.equal(uninterrupted.code, 0, uninterrupted.stderr);
  const final = (o: string) => join(config(o, []).checkpoint.dir, stepDirName(ALL_STEPS.length));
  await assertSameCheckpointBits(final(out), final(whole));
  const worst = await assertSameWeights(final(out), final(refOut), 1e-4);
  t.diagnostic(`final checkpoint vs one rank: worst ${worst.name}, max abs ${worst.maxAbs.toExponential(2)}, ${worst.maxRel.toExponential(2)} of its largest magnitude`);
});

test("Ctrl-C reaches the launcher and its ranks (one process group): the ranks stay, the launcher finishes the step, checkpoints and exits 0", async () => {
  const out = tempDir("tessera-mr-sigint-");
  const run = trainFsdp2(out, [], { group: true });
  await run.waitFor(/checkpoint at step 2:/);
  process.kill(-run.pid, "SIGINT");
  const { code, stderr } = await run.exit;
  assert.equal(code, 0, stderr);
  assert.match(stderr, /stopped: interrupted \(SIGINT\); (\d+) steps/);
  assert.doesNotMatch(stderr, /failure:/);
  const steps = trainRecords(out).map((r) => r.step);
  const last = steps.at(-1)!;
  assert.ok(last < ALL_STEPS.length, `stopped early (at ${last})`);
  assert.deepEqual(steps, ALL_STEPS.slice(0, last));
  assert.match(stderr, new RegExp(`checkpoint at step ${last}: `));
});

test("with trainer.max_failures=0 a dead rank ends the job: exit 1, naming the rank", async () => {
  const out = tempDir("tessera-mr-fail-");
  const run = trainFsdp2(out, ["trainer.max_failures=0"]);
  await run.waitFor(/checkpoint at step 2:/);
  process.kill(rankPid(run.pid, 1), "SIGKILL");
  const { code, stderr } = await run.exit;
  assert.equal(code, 1, stderr);
  assert.match(stderr, /tessera train: failed at step \d+: rank 1 \(pid \d+, node 0\) exited \(SIGKILL\) \(0 restarts used of trainer.max_failures=0; giving up\)/);
});
