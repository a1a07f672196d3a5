// Multi-rank training gives the single-rank loss curve: two rank processes over NATS under
// FSDP, DP and Ulysses SP, against one rank in this process trained on the same global
// batches (two 64-token packs per step: one per batch group, or both as one rank's
// micro-batch). Float32 everywhere; the reductions differ only in summation order, so the
// curves (loss and grad norm per step, and the eval loss) agree to 1e-5 relative (measured:
// about 1e-9).
import { test } from "node:test";
import assert from "node:assert/strict";
import { launch } from "../../actors/index.ts";
import type { EvalRecord } from "../../actors/index.ts";
import { assertSameCurve, config, records, referenceRun, trainRecords } from "./train-multirank-kit.ts";
import { tempDir } from "./train-testkit.ts";

const STEPS = ["trainer.max_steps=3", "checkpoint.every=0", "trainer.eval_every=3", "data.eval.max_batches=2"];
const RTOL = 1e-5;

async function twoRanks(mesh: string, o: { out?: string; steps?: readonly string[] } = {}) {
  const out = o.out ?? tempDir("tessera-mr-");
  let err = "";
  const job = await launch(config(out, [...(o.steps ?? STEPS), mesh]), {
    nnodes: 1,
    nodeRank: 0,
    nprocPerNode: 2,
    stderr: { write: (t: string) => void (err += t), isTTY: false },
  });
  const s = await job.done;
  assert.equal(s.state, "done", `${s.reason}\n${err}`);
  assert.doesNotMatch(err, /failure/);
  return { records: trainRecords(out), evals: evalRecords(out), err };
}

function evalRecords(out: string): EvalRecord[] {
  return records(out).filter((r): r is EvalRecord => r.kind === "eval");
}

/** Evaluation runs on every rank: the same eval batches give the same loss under any plan. */
function assertSameEval(got: readonly EvalRecord[], want: readonly EvalRecord[]): void {
  assert.deepEqual(got.map((r) => [r.step, r.eval_tokens, r.eval_batches]), want.map((r) => [r.step, r.eval_tokens, r.eval_batches]));
  got.forEach((r, i) => assert.ok(Math.abs(r.eval_loss - want[i]!.eval_loss) <= RTOL * want[i]!.eval_loss, `eval at ${r.step}: ${r.eval_loss} vs ${want[i]!.eval_loss}`));
}

test("fsdp=2 and dp=2 over two rank processes follow the single-rank loss curve on the same global batches", async () => {
  const want = await referenceRun(tempDir("tessera-mr-ref-"), [...STEPS, "trainer.micro_batch_tokens=128"]);
  const fsdp = await twoRanks("mesh.fsdp=2");
  assert.match(fsdp.err, /2 ranks on 1 node: mesh dp=1 fsdp=2 sp=1/);
  assertSameCurve(fsdp.records, want, RTOL);
  const dp = await twoRanks("mesh.dp=2");
  assertSameCurve(dp.records, want, RTOL);
  // Two batch groups read two eval packs per batch index, one rank alone one: compare the plans.
  assert.equal(fsdp.evals.length, 1);
  assertSameEval(fsdp.evals, dp.evals);
});

test("sp=2 (Ulysses) over two rank processes follows the single-rank curve on the same batches", async () => {
  // An sp group shares one batch stream: the reference reads one pack per step.
  const refOut = tempDir("tessera-mr-ref-");
  const want = await referenceRun(refOut, STEPS);
  const sp = await twoRanks("mesh.sp=2");
  assertSameCurve(sp.records, want, RTOL);
  assertSameEval(sp.evals, evalRecords(refOut));
});

test("a checkpoint saved under fsdp=2 resumes under dp=2 (sharded ranges read back as whole tensors) and continues the same curve", async () => {
  // A constant LR, so that a run of 2 steps and one of 4 have the same schedule.
  const steps = (n: number) => [`trainer.max_steps=${n}`, "checkpoint.every=2", "optimizer.schedule.name=constant"];
  const want = await referenceRun(tempDir("tessera-mr-ref-"), [...steps(4), "trainer.micro_batch_tokens=128"]);
  const out = tempDir("tessera-mr-reshard-");
  await twoRanks("mesh.fsdp=2", { out, steps: steps(2) });
  const resumed = await twoRanks("mesh.dp=2", { out, steps: steps(4) });
  assert.match(resumed.err, /resumed from .*step-000002 at step 2/);
  assertSameCurve(resumed.records, want, RTOL);
});
