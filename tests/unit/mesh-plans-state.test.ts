// Around the step: a sharded plan's parameter ranges for checkpoints (covering every tensor
// once, loadable under another mesh) and evaluation under FSDP x SP.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DeviceMesh, startInProcessCollectives, type MeshShape } from "../../mesh/index.ts";
import { createParallelPlan, type ParallelPlan, type ParamPiece } from "../../mesh/plans/index.ts";
import type { CausalLM } from "../../models/index.ts";
import { tensor } from "../../native/index.ts";
import { batchOf, countTokens, makeModel, tinyConfigs } from "./mesh-plans-kit.ts";

const cfg = tinyConfigs.qwen2!;
const heads = { numHeads: 4, numKvHeads: 2 };

async function withPlans<T>(shape: MeshShape, body: (plans: ParallelPlan[], models: CausalLM[], mesh: DeviceMesh) => Promise<T>): Promise<T> {
  const n = shape.dp * shape.fsdp * shape.sp;
  const mesh = new DeviceMesh(shape, n);
  const coll = await startInProcessCollectives(n, { timeoutMs: 20_000 });
  const models = mesh.layouts().map(() => makeModel(cfg, "float64"));
  const plans = mesh.layouts().map((layout, r) => createParallelPlan(models[r]!, { layout, comm: coll.ranks[r]!, ...heads }));
  try {
    return await body(plans, models, mesh);
  } finally {
    for (const p of plans) p.dispose();
    for (const m of models) m.dispose();
    await coll.close();
  }
}

test("FSDP=2 pieces cover every parameter once; FSDP=4 ranks load their ranges from them and gather the same model", async () => {
  const whole = makeModel(cfg, "float64");
  // Moved away from the init, so that loading is seen.
  for (const p of whole.params()) {
    const a = p.value.toFloat64Array().map((v, i) => v * 0.5 + i * 1e-3);
    p.set(tensor(a, p.shape, { dtype: "float64" }));
  }
  const source = await withPlans({ dp: 1, fsdp: 2, sp: 1 }, async (plans, models) => {
    // Load the moved weights into the FSDP=2 shards from whole arrays, then read the pieces back.
    const byName = new Map(whole.params().map((p) => [p.name, p.value.toArray() as Float64Array]));
    await Promise.all(plans.map((pl) => pl.loadParams((name, r) => byName.get(name)!.slice(r.start, r.end))));
    assert.ok(models.every((m) => m.params().every((p) => !p.held)));
    return plans.map((pl) => pl.paramPieces().map((x): ParamPiece & { copy: Float64Array } => ({ ...x, copy: Float64Array.from(x.data()) })));
  });
  const pieces = source.flat();
  for (const p of whole.params()) {
    const mine = pieces.filter((x) => x.name === p.name).sort((a, b) => a.range.start - b.range.start);
    let at = 0;
    for (const x of mine) {
      assert.equal(x.range.start, at, `${p.name}: ranges tile the tensor`);
      assert.deepEqual(x.shape, p.shape);
      at = x.range.end;
    }
    assert.equal(at, p.value.numel, `${p.name}: ranges cover the tensor`);
  }
  const read = (name: string, r: { start: number; end: number }) => {
    const out = new Float64Array(r.end - r.start);
    for (const x of pieces.filter((y) => y.name === name)) {
      const lo = Math.max(r.start, x.range.start);
      const hi = Math.min(r.end, x.range.end);
      if (lo < hi) out.set(x.copy.subarray(lo - x.range.start, hi - x.range.start), lo - r.start);
    }
    return out;
  };
  await withPlans({ dp: 1, fsdp: 4, sp: 1 }, async (plans, models) => {
    await Promise.all(plans.map((pl) => pl.loadParams(read)));
    await Promise.all(plans.map((pl) => pl.gatherAll()));
    for (const m of models) {
      m.params().forEach((p, i) => assert.deepEqual(p.value.toFloat64Array(), whole.params()[i]!.value.toFloat64Array(), p.name));
    }
    for (const pl of plans) pl.releaseAll();
  });
  whole.dispose();
});

test("evalLossAsync under fsdp=2 x sp=2 gives one rank's evalLoss; the plan then releases what it gathered", async () => {
  const batches = [batchOf([5, 9, 2], 1), batchOf([7, 3, 6], 2)];
  const ref = makeModel(cfg, "float64");
  const want = batches.reduce((a, b) => a + ref.evalLoss(b).lossSum, 0) / countTokens(batches);
  ref.dispose();
  await withPlans({ dp: 1, fsdp: 2, sp: 2 }, async (plans, models, mesh) => {
    const sums = await Promise.all(
      mesh.layouts().map(async (l, r) => {
        const plan = plans[r]!;
        const local = plan.shardBatch(batches[l.batchIndex]!);
        const res = await models[r]!.evalLossAsync(local, { hooks: plan, ...(plan.attention ? { attention: plan.attention } : {}) });
        plan.releaseAll();
        return res.lossSum;
      }),
    );
    const got = sums.reduce((a, b) => a + b, 0) / countTokens(batches);
    assert.ok(Math.abs(got - want) < 1e-12, `${got} vs ${want}`);
    assert.ok(models.every((m) => m.params().every((p) => !p.held)), "released after evaluation");
  });
});
