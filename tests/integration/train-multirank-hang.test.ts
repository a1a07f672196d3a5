// A rank process that hangs mid-run (SIGSTOP): either its heartbeats stop for
// trainer.dead_after_ms, or, while they are still trusted, the step overruns
// trainer.step_deadline_s (its peer waits in a collective). Either way every rank restarts
// from the last checkpoint and the run finishes with every step once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ALL_STEPS, rankPid, resumedStep, trainFsdp2, trainRecords } from "./train-multirank-kit.ts";
import { tempDir } from "./train-testkit.ts";

test("a frozen rank (SIGSTOP) misses its heartbeats: it is killed and every rank restarts", async () => {
  const out = tempDir("tessera-mr-hang-");
  const run = trainFsdp2(out, ["trainer.heartbeat_ms=200", "trainer.dead_after_ms=2000"]);
  await run.waitFor(/checkpoint at step 2:/);
  process.kill(rankPid(run.pid, 0), "SIGSTOP");
  const { code, stderr } = await run.exit;
  assert.equal(code, 0, stderr);
  assert.match(stderr, /rank 0 \(pid \d+, node 0\) sent no heartbeat for \d+ ms/);
  resumedStep(stderr);
  assert.deepEqual(trainRecords(out).map((r) => r.step), ALL_STEPS);
});

test("a rank stuck while its heartbeats are still trusted fails the step at trainer.step_deadline_s (the collectives' timeout); every rank restarts", async () => {
  const out = tempDir("tessera-mr-deadline-");
  // Frozen, rank 1 stays alive for a minute as far as heartbeats go: rank 0 waits for it in a collective.
  const run = trainFsdp2(out, ["trainer.step_deadline_s=5", "trainer.dead_after_ms=60000"]);
  await run.waitFor(/checkpoint at step 2:/);
  process.kill(rankPid(run.pid, 1), "SIGSTOP");
  const { code, stderr } = await run.exit;
  assert.equal(code, 0, stderr);
  assert.match(stderr, /failure: .*timed out after \d+ ms waiting for rank\(s\) 1.*; restarting every rank from the last checkpoint \(restart 1 of 3\)/);
  assert.doesNotMatch(stderr, /sent no heartbeat/);
  resumedStep(stderr);
  assert.deepEqual(trainRecords(out).map((r) => r.step), ALL_STEPS);
});
