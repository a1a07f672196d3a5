// Muon with sharded parameters in the trainer: fsdp=2, and sp=2 (Ulysses, whose sp group
// shards the parameters too), over two rank processes (each matrix orthogonalised whole on
// an owner rank, its momentum kept as each rank's flat ranges) give the single-rank run
// (MuonWithAdamW on whole parameters), and an fsdp=2 run stopped at step 5 and
// resumed from its checkpoint gives the uninterrupted run bit for bit, momentum included.
// Tolerances are the parity tests' (train-multirank-parity.test.ts): float32, the plans
// change only summation orders, so the curves agree to 1e-5 relative and each final tensor
// (weights and optimizer state) to 1e-4 of its largest magnitude.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { launch } from "../../actors/index.ts";
import { openCheckpoint } from "../../models/index.ts";
import type { TrainRecord } from "../../actors/index.ts";
import { assertSameCheckpointBits, assertSameCurve, assertSameWeights, config, referenceRun, trainRecords } from "./train-multirank-kit.ts";
import { tempDir } from "./train-testkit.ts";

const MUON = ["optimizer.name=muon", "optimizer.schedule.name=constant"];
const GLOBAL_TOKENS = 256;
const FSDP2 = ["mesh.fsdp=2", `trainer.micro_batch_tokens=${GLOBAL_TOKENS / 2}`];
const steps = (n: number) => [`trainer.max_steps=${n}`, "checkpoint.every=5"];

async function fsdp2(out: string, overrides: readonly string[]): Promise<{ records: TrainRecord[]; err: string }> {
  const run = await twoRanks(out, [...FSDP2, ...overrides]);
  assert.match(run.err, /2 ranks on 1 node: mesh dp=1 fsdp=2 sp=1/);
  return run;
}

async function twoRanks(out: string, overrides: readonly string[]): Promise<{ records: TrainRecord[]; err: string }> {
  let err = "";
  const job = await launch(config(out, [...MUON, ...overrides]), {
    nnodes: 1,
    nodeRank: 0,
    nprocPerNode: 2,
    stderr: { write: (t: string) => void (err += t), isTTY: false },
  });
  const s = await job.done;
  assert.equal(s.state, "done", `${s.reason}\n${err}`);
  return { records: trainRecords(out), err };
}

// The uninterrupted fsdp=2 run is compared with one rank and with the resumed run.
let uninterrupted: Promise<string> | undefined;
function tenSteps(): Promise<string> {
  uninterrupted ??= (async () => {
    const out = tempDir("tessera-muon-fsdp-");
    await fsdp2(out, steps(10));
    return out;
  })();
  return uninterrupted;
}

// One 10-step single-rank run is the reference of both meshes.
let reference: Promise<{ out: string; records: TrainRecord[] }> | undefined;
function singleRank(): Promise<{ out: string; records: TrainRecord[] }> {
  reference ??= (async () => {
    const out = tempDir("tessera-muon-ref-");
    return { out, records: await referenceRun(out, [...MUON, ...steps(10), `trainer.micro_batch_tokens=${GLOBAL_TOKENS}`]) };
  })();
  return reference;
}

async function assertMatchesSingleRank(t: TestContext, out: string): Promise<void> {
  const { out: refOut, records: want } = await singleRank();
  const got = trainRecords(out);
  assert.deepEqual(got.map((r) => r.step), Array.from({ length: 10 }, (_, i) => i + 1));
  assertSameCurve(got, want, 1e-5);
  const worst = await assertSameWeights(config(out, []).checkpoint.dir, config(refOut, []).checkpoint.dir, 1e-4);
  const curve = Math.max(...got.flatMap((r, i) => (["loss", "grad_norm"] as const).map((k) => Math.abs(r[k]! - want[i]![k]!) / want[i]![k]!)));
  t.diagnostic(`loss and grad norm vs one rank: at most ${curve.toExponential(2)} relative`);
  t.diagnostic(`final checkpoint vs one rank: worst ${worst.name}, max abs ${worst.maxAbs.toExponential(2)}, ${worst.maxRel.toExponential(2)} of its largest magnitude`);
}

test("Muon with fsdp=2 over two rank processes: the single-rank loss curve and final weights over 10 steps", async (t) => {
  await assertMatchesSingleRank(t, await tenSteps());
});

test("Muon with sp=2 (Ulysses) over two rank processes: the single-rank loss curve and final weights over 10 steps", async (t) => {
  const out = tempDir("tessera-muon-sp-");
  const run = await twoRanks(out, [...steps(10), "mesh.sp=2", `trainer.micro_batch_tokens=${GLOBAL_TOKENS}`]);
  assert.match(run.err, /2 ranks on 1 node: mesh dp=1 fsdp=1 sp=2/);
  await assertMatchesSingleRank(t, out);
});

test("Muon with fsdp=2 stopped at step 5 and resumed from its checkpoint equals the uninterrupted run bit for bit", async () => {
  const out = tempDir("tessera-muon-resume-");
  await fsdp2(out, steps(5));
  const resumed = await fsdp2(out, steps(10));
  assert.match(resumed.err, /resumed from .*step-000005 at step 5/);
  // Muon's momentum is what a resume could lose: it is there, a range from each rank.
  const ckpt = await openCheckpoint(config(out, []).checkpoint.dir);
  try {
    const muon = Object.entries(ckpt.manifest.optimizer!.params).filter(([, p]) => p.algorithm === "muon");
    assert.ok(muon.length >= 4, "Muon updates the hidden matrices");
    for (const [name] of muon) assert.deepEqual(ckpt.entry(`optim.${name}.momentum_buffer`).shards.map((p) => p.rank), [0, 1], name);
  } finally {
    await ckpt.close();
  }
  const whole = await tenSteps();
  const want = trainRecords(whole).filter((r) => r.step > 5);
  assert.deepEqual(
    resumed.records.filter((r) => r.step > 5).map((r) => [r.step, r.loss, r.grad_norm]),
    want.map((r) => [r.step, r.loss, r.grad_norm]),
  );
  await assertSameCheckpointBits(config(out, []).checkpoint.dir, config(whole, []).checkpoint.dir);
});
