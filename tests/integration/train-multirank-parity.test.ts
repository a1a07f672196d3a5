// Multi-rank training gives the single-rank run: dp=2, fsdp=2, sp=2 (Ulysses) and dp=2 x
// fsdp=2 as rank processes over NATS, against one rank in this process, for 20 steps of the
// same job on the same global batches (four 64-token packs a step: one rank reads them as one
// micro-batch, two batch groups two each, four one each; an sp group shares all four). The
// loss curve (loss and grad norm per step), the eval loss and every tensor of the final
// checkpoint (weights and optimizer state, read whole whatever mesh sharded them) agree.
// Float32 everywhere; the plans change only summation orders, so the curves agree to 1e-5
// relative (measured: 4e-8 at most over 20 steps), and each final tensor to 1e-4 of its
// largest magnitude. Measured: at most 4.4e-7 absolute (weights of magnitude up to 1); 2.1e-5
// of the largest magnitude for k_proj.bias (zero at init, so its largest value is only what
// training moved it: 4e-3 after 4 steps, 1e-2 after 20), 6e-6 or less for every other
// tensor. A wrong gradient or a lost update moves weights by the order of lr = 1e-3.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { launch } from "../../actors/index.ts";
import type { EvalRecord, TrainRecord } from "../../actors/index.ts";
import { assertSameCurve, assertSameWeights, config, records, referenceRun, trainRecords } from "./train-multirank-kit.ts";
import { tempDir } from "./train-testkit.ts";

const STEPS = ["trainer.max_steps=20", "checkpoint.every=0", "trainer.eval_every=20", "data.eval.max_batches=2"];
const GLOBAL_TOKENS = 256;
const RTOL = 1e-5;
const WEIGHTS_RTOL = 1e-4;

interface Run {
  readonly out: string;
  readonly records: TrainRecord[];
  readonly evals: EvalRecord[];
  readonly err: string;
}

async function ranks(n: number, overrides: readonly string[], out = tempDir("tessera-mr-")): Promise<Run> {
  let err = "";
  const job = await launch(config(out, overrides), {
    nnodes: 1,
    nodeRank: 0,
    nprocPerNode: n,
    stderr: { write: (t: string) => void (err += t), isTTY: false },
  });
  const s = await job.done;
  assert.equal(s.state, "done", `${s.reason}\n${err}`);
  assert.doesNotMatch(err, /failure/);
  return { out, records: trainRecords(out), evals: evalRecords(out), err };
}

function evalRecords(out: string): EvalRecord[] {
  return records(out).filter((r): r is EvalRecord => r.kind === "eval");
}

/** Evaluation runs on every rank: the same eval batches give the same loss under any plan. */
function assertSameEval(got: readonly EvalRecord[], want: readonly EvalRecord[]): void {
  assert.deepEqual(got.map((r) => [r.step, r.eval_tokens, r.eval_batches]), want.map((r) => [r.step, r.eval_tokens, r.eval_batches]));
  got.forEach((r, i) => assert.ok(Math.abs(r.eval_loss - want[i]!.eval_loss) <= RTOL * want[i]!.eval_loss, `eval at ${r.step}: ${r.eval_loss} vs ${want[i]!.eval_loss}`));
}

/** Leak check in the rank processes: rank 0's live tensors after each step (the first made the optimizer state) stay put. */
function assertNoLeak(rs: readonly TrainRecord[]): void {
  const live = rs.map((r) => r.live_tensors);
  assert.ok(live.every((n) => n === live[0]), `rank 0's live tensors per step: ${live.join(", ")}`);
}

// One 20-step single-rank run is the reference of every mesh.
let reference: Promise<Run> | undefined;
function singleRank(): Promise<Run> {
  reference ??= (async () => {
    const out = tempDir("tessera-mr-ref-");
    const rs = await referenceRun(out, [...STEPS, `trainer.micro_batch_tokens=${GLOBAL_TOKENS}`]);
    return { out, records: rs, evals: evalRecords(out), err: "" };
  })();
  return reference;
}

async function assertMatchesSingleRank(t: TestContext, got: Run): Promise<void> {
  const want = await singleRank();
  assert.deepEqual(got.records.map((r) => r.step), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.ok(got.records.every((r) => r.tokens === want.records[r.step - 1]!.tokens), "the same global batches");
  assertSameCurve(got.records, want.records, RTOL);
  assertNoLeak(got.records);
  const worst = await assertSameWeights(config(got.out, []).checkpoint.dir, config(want.out, []).checkpoint.dir, WEIGHTS_RTOL);
  const curve = Math.max(...got.records.flatMap((r, i) => (["loss", "grad_norm"] as const).map((k) => Math.abs(r[k]! - want.records[i]![k]!) / want.records[i]![k]!)));
  t.diagnostic(`loss and grad norm vs one rank: at most ${curve.toExponential(2)} relative`);
  t.diagnostic(`final checkpoint vs one rank: worst ${worst.name}, max abs ${worst.maxAbs.toExponential(2)}, ${worst.maxRel.toExponential(2)} of its largest magnitude`);
}

// The dp and fsdp runs have two batch groups each (two eval packs per batch index): their evals agree with each other.
let twoGroupEvals: EvalRecord[] | undefined;

test("dp=2 over two rank processes: the single-rank loss curve and final weights over 20 steps", async (t) => {
  const dp = await ranks(2, [...STEPS, "mesh.dp=2", `trainer.micro_batch_tokens=${GLOBAL_TOKENS / 2}`]);
  await assertMatchesSingleRank(t, dp);
  twoGroupEvals = dp.evals;
});

test("fsdp=2 over two rank processes: the single-rank loss curve and final weights over 20 steps", async (t) => {
  const fsdp = await ranks(2, [...STEPS, "mesh.fsdp=2", `trainer.micro_batch_tokens=${GLOBAL_TOKENS / 2}`]);
  assert.match(fsdp.err, /2 ranks on 1 node: mesh dp=1 fsdp=2 sp=1/);
  await assertMatchesSingleRank(t, fsdp);
  assert.equal(fsdp.evals.length, 1);
  if (twoGroupEvals) assertSameEval(fsdp.evals, twoGroupEvals);
});

test("sp=2 (Ulysses) over two rank processes: the single-rank loss curve, eval loss and final weights over 20 steps", async (t) => {
  // An sp group shares one batch stream, as the single rank does: the same eval batches too.
  const sp = await ranks(2, [...STEPS, "mesh.sp=2", `trainer.micro_batch_tokens=${GLOBAL_TOKENS}`]);
  await assertMatchesSingleRank(t, sp);
  assertSameEval(sp.evals, (await singleRank()).evals);
});

test("dp=2 x fsdp=2 over four rank processes: the single-rank loss curve and final weights over 20 steps", async (t) => {
  const both = await ranks(4, [...STEPS, "mesh.dp=2", "mesh.fsdp=2", `trainer.micro_batch_tokens=${GLOBAL_TOKENS / 4}`]);
  assert.match(both.err, /4 ranks on 1 node: mesh dp=2 fsdp=2 sp=1/);
  await assertMatchesSingleRank(t, both);
});

test("a checkpoint saved under fsdp=2 resumes under dp=2 (sharded ranges read back as whole tensors) and continues the same curve to the same weights", async (t) => {
  // A constant LR, so that a run of 2 steps and one of 4 have the same schedule.
  const steps = (n: number) => [`trainer.max_steps=${n}`, "checkpoint.every=2", "optimizer.schedule.name=constant"];
  const refOut = tempDir("tessera-mr-ref-");
  const want = await referenceRun(refOut, [...steps(4), "trainer.micro_batch_tokens=128"]);
  const out = tempDir("tessera-mr-reshard-");
  await ranks(2, [...steps(2), "mesh.fsdp=2"], out);
  const resumed = await ranks(2, [...steps(4), "mesh.dp=2"], out);
  assert.match(resumed.err, /resumed from .*step-000002 at step 2/);
  assertSameCurve(resumed.records, want, RTOL);
  const worst = await assertSameWeights(config(out, []).checkpoint.dir, config(refOut, []).checkpoint.dir, WEIGHTS_RTOL);
  t.diagnostic(`final checkpoint vs one rank: worst ${worst.name}, max abs ${worst.maxAbs.toExponential(2)}, ${worst.maxRel.toExponential(2)} of its largest magnitude`);
});
