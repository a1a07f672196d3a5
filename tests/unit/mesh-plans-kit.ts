// Shared by the mesh-plans-*.test.ts files: run one training step (forward, backward, grad
// sync, grad norm, AdamW) on every rank of a mesh in one process (host collectives over an
// InProcTransport), and the same step on one rank over the whole global batch as the
// reference.
import assert from "node:assert/strict";
import { DeviceMesh, startInProcessCollectives, type MeshShape } from "../../mesh/index.ts";
import { createParallelPlan, type ParallelPlan, type ParallelPlanOptions } from "../../mesh/plans/index.ts";
import {
  AdamW,
  createModel,
  gradNorm,
  MuonWithAdamW,
  noDecay,
  usesMuon,
  type CausalLM,
  type ModelConfig,
  type OptimParam,
  type PackedBatch,
} from "../../models/index.ts";
import { randomizeParams, tinyConfigs, VOCAB } from "./models-testkit.ts";

export { tinyConfigs };

export type FloatDType = "float32" | "float64";

export function makeModel(cfg: ModelConfig, dtype: FloatDType, recompute = false): CausalLM {
  const m = createModel(cfg, { seed: 5, dtype, recompute });
  randomizeParams(m.params(), 17, 0.2);
  return m;
}

/** A packed batch of sequences with the given lengths (deterministic tokens, one masked label). */
export function batchOf(lengths: readonly number[], salt: number): PackedBatch {
  const T = lengths.reduce((a, b) => a + b, 0);
  const tokens = new Int32Array(T);
  const positions = new Int32Array(T);
  const labels = new Int32Array(T);
  const cuSeqlens = new Int32Array(lengths.length + 1);
  let o = 0;
  lengths.forEach((len, b) => {
    for (let i = 0; i < len; i++) {
      tokens[o + i] = (7 * (o + i) + 13 * salt + 3 * b) % VOCAB;
      positions[o + i] = i;
    }
    for (let i = 0; i < len; i++) labels[o + i] = i + 1 < len ? tokens[o + i + 1]! : -100;
    o += len;
    cuSeqlens[b + 1] = o;
  });
  labels[1] = -100;
  return { tokens, positions, cuSeqlens, labels };
}

export function countTokens(batches: readonly PackedBatch[]): number {
  let n = 0;
  for (const b of batches) for (const l of b.labels!) if (l !== -100) n++;
  return n;
}

export interface StepResult {
  /** Global mean loss. */
  loss: number;
  norm: number;
  /** Every parameter after the AdamW step, by name. */
  params: Map<string, Float64Array>;
}

const LR = 1e-2;
export type OptimizerName = "adamw" | "muon";

/** The optimizer of one rank: AdamW, or Muon (Moonlight's: betas 0.9/0.95, wd 0.1) on the 2-D hidden matrices with AdamW on the rest. */
function optimizer(name: OptimizerName, params: readonly OptimParam[], shapeOf: (n: string) => readonly number[]) {
  const decayRule = { noDecay: (n: string) => noDecay(n, shapeOf(n)) };
  if (name === "adamw") return new AdamW(params, { weightDecay: 0.1, ...decayRule });
  return new MuonWithAdamW(params, { weightDecay: 0.1, ...decayRule });
}

function snapshot(model: CausalLM): Map<string, Float64Array> {
  return new Map(model.params().map((p) => [p.name, Float64Array.from(p.value.toArray() as Float64Array)]));
}

/** One rank, the whole global batch (each batch stream's batches in turn, accumulated), `steps` times. */
export function referenceStep(cfg: ModelConfig, dtype: FloatDType, batches: readonly PackedBatch[], opt_: OptimizerName = "adamw", steps = 1): StepResult {
  const model = makeModel(cfg, dtype);
  const count = countTokens(batches);
  const opt = optimizer(opt_, model.params(), (n) => model.params().find((p) => p.name === n)!.shape);
  let lossSum = 0;
  let norm = 0;
  for (let s = 0; s < steps; s++) {
    lossSum = 0;
    for (const b of batches) lossSum += model.loss(b, { gradScale: 1 / count }).lossSum;
    norm = gradNorm(model.params());
    opt.step(LR);
    model.zeroGrad();
  }
  const params = snapshot(model);
  opt.dispose();
  model.dispose();
  return { loss: lossSum / count, norm, params };
}

export interface MeshRun {
  ranks: StepResult[];
  /** Per rank: parameter elements held after the step (before gathering for the comparison). */
  heldAfterStep: number[];
  /** Per rank: whether every model Param had released its whole value after the step. */
  releasedAfterStep: boolean[];
  totalParamElements: number;
}

/**
 * One step on every rank of `shape`: batch stream i (dp x fsdp of them) reads micro-batches
 * batches[i*m .. i*m+m) (m = batches / streams), accumulating; its sp group shares them. The
 * losses are summed over all ranks (each counts its own tokens).
 */
export async function meshStep(
  cfg: ModelConfig,
  dtype: FloatDType,
  shape: MeshShape,
  batches: readonly PackedBatch[],
  opts: Partial<Pick<ParallelPlanOptions, "shard" | "reshardAfterForward">> & { recompute?: boolean; optimizer?: OptimizerName; steps?: number } = {},
): Promise<MeshRun> {
  const world = shape.dp * shape.fsdp * shape.sp;
  const mesh = new DeviceMesh(shape, world);
  const streams = mesh.layout(0).batchCount;
  assert.equal(batches.length % streams, 0, "the same number of micro-batches per batch stream");
  const micro = batches.length / streams;
  const coll = await startInProcessCollectives(world, { timeoutMs: 20_000 });
  const count = countTokens(batches);
  const heads = "numHeads" in cfg ? { numHeads: cfg.numHeads, numKvHeads: cfg.numKvHeads } : { numHeads: cfg.nHead, numKvHeads: cfg.nHead };
  try {
    const runs = await Promise.all(
      mesh.layouts().map(async (layout) => {
        const model = makeModel(cfg, dtype, opts.recompute);
        const total = model.params().reduce((a, p) => a + p.value.numel, 0);
        const { recompute: _, optimizer: optName = "adamw", steps = 1, ...planOpts } = opts;
        const plan: ParallelPlan = createParallelPlan(model, { layout, comm: coll.ranks[layout.rank]!, ...heads, ...planOpts });
        const shapeOf = (n: string) => plan.logicalShape(n);
        const muon = optName === "muon" ? plan.createShardedMuon({ usesMuon, noDecay, weightDecay: 0.1 }) : undefined;
        const opt = muon
          ? new AdamW(
              plan.rankParams().filter((p) => !muon.has(p.name)),
              { betas: [0.9, 0.95], weightDecay: 0.1, noDecay: (n) => noDecay(n, shapeOf(n)) },
            )
          : optimizer(optName, plan.rankParams(), shapeOf);
        let lossSum = 0;
        let norm = 0;
        for (let s = 0; s < steps; s++) {
          lossSum = 0;
          for (let m = 0; m < micro; m++) {
            const local = plan.shardBatch(batches[layout.batchIndex * micro + m]!);
            const r = await model.lossAsync(local, { gradScale: 1 / count, hooks: plan, ...(plan.attention ? { attention: plan.attention } : {}) });
            lossSum += r.lossSum;
          }
          await plan.finishGrads();
          norm = await plan.gradNorm();
          await muon?.step(LR);
          opt.step(LR);
          plan.zeroGrad();
        }
        const held = plan.heldParamElements();
        const released = model.params().every((p) => !p.held);
        await plan.gatherAll();
        const params = snapshot(model);
        plan.releaseAll();
        opt.dispose();
        plan.dispose();
        model.dispose();
        return { lossSum, norm, params, held, released, total };
      }),
    );
    const lossSum = runs.reduce((a, r) => a + r.lossSum, 0);
    return {
      ranks: runs.map((r) => ({ loss: lossSum / count, norm: r.norm, params: r.params })),
      heldAfterStep: runs.map((r) => r.held),
      releasedAfterStep: runs.map((r) => r.released),
      totalParamElements: runs[0]!.total,
    };
  } finally {
    await coll.close();
  }
}

/** Every rank's loss, grad norm and updated parameters equal the reference's within tol (relative to max(1, |x|)). */
export function assertMatches(run: MeshRun, ref: StepResult, tol: number): void {
  const close = (a: number, b: number, what: string) => {
    assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b} (tol ${tol})`);
  };
  run.ranks.forEach((r, rank) => {
    close(r.loss, ref.loss, `rank ${rank} loss`);
    close(r.norm, ref.norm, `rank ${rank} grad norm`);
    assert.equal(r.params.size, ref.params.size);
    for (const [name, want] of ref.params) {
      const got = r.params.get(name)!;
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
      assert.ok(worst <= tol, `rank ${rank} ${name}: max |diff| ${worst.toExponential(2)} > ${tol}`);
    }
  });
}
