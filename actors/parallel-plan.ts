// What a RankActor asks of its parallelism: mesh/'s plan (DP, FSDP, Ulysses SP) around the
// model's step, its optimizer over the rank's parameters, and the rank's part of a
// checkpoint. The rank's step logic is the same for every layout; a one-rank layout makes
// every group a single rank, so the plan does nothing and the step is the model's own.
//
// Checkpoints: each tensor range is written by one rank. Sharded plans split every
// parameter over the shard group (fsdp x sp) and replicate the shards over dp, so the dp=0
// replica writes them; replicated plans (DP only) hold whole parameters everywhere, so rank
// 0 writes them. Optimizer state covers exactly the ranges a rank holds (its shards, or
// whole tensors), so it is written and read with the same ranges, under any mesh; sharded
// Muon's momentum too (rank-optimizer.ts).
import type { CausalLM, LossResult, PackedBatch } from "../models/index.ts";
import { clipGradNorm, type ClipResult } from "../models/optim/index.ts";
import type { Checkpoint, RankShardInput } from "../models/checkpoint/index.ts";
import { createParallelPlan, type GroupSource, type ParallelPlan, type RankLayout } from "../mesh/index.ts";
import type { JobConfig } from "../runtime/index.ts";
import { createRankOptimizer, type PreparedRankStep, type RankOptimizer } from "./rank-optimizer.ts";

export interface RankPlan {
  /** "replicated" or "sharded", for notes. */
  readonly name: string;
  readonly optimizer: RankOptimizer;
  /** Forward and backward of this rank's part of a micro-batch; gradients of gradScale * loss sum are accumulated. */
  microStep(batch: PackedBatch, gradScale: number): Promise<LossResult>;
  /** After a step's last micro-batch: sums gradients over the ranks that share parameters. */
  finishGradients(): Promise<void>;
  /**
   * Takes the global gradient norm (over every rank, each element counted once), clips this
   * rank's gradients by it to `maxNorm` (0: off), steps the optimizer unless the norm is not
   * finite, and zeroes the gradients. The optimizer's step is prepared while the device sums
   * the squares, so the device does not wait on the host between the norm and the update.
   */
  optimStep(lr: number, maxNorm: number): Promise<{ norm: number; clip: ClipResult }>;
  /** This rank's part of a batch's loss without gradients (every rank of the group must call it). */
  evalLoss(batch: PackedBatch): Promise<LossResult>;
  /**
   * What this rank writes into a checkpoint. Its tensors and optimizer buffers are read from the
   * live state when the writer reaches them: write it before the next step, load or dispose.
   */
  checkpointShard(): RankShardInput;
  /** Takes this rank's ranges of parameters and optimizer state from a checkpoint saved under any mesh. */
  loadCheckpoint(ckpt: Checkpoint): Promise<void>;
  zeroGrad(): void;
  /** Parameter elements of the whole model. */
  readonly modelElements: number;
  dispose(): void;
}

/** A GroupSource for a one-rank layout: it never has a group of more than one rank. */
export const noCollectives: GroupSource = {
  group(ranks, name) {
    throw new Error(`one-rank plan: asked for collectives of group ${name}[${ranks.join(",")}]`);
  },
};

export function createRankPlan(
  model: CausalLM,
  layout: RankLayout,
  comm: GroupSource,
  cfg: Pick<JobConfig, "optimizer">,
): RankPlan {
  const modelElements = model.params().reduce((a, p) => a + numel(p.shape), 0);
  const heads = headsOf(model);
  const plan: ParallelPlan = createParallelPlan(model, { layout, comm, ...heads });
  const rankParams = plan.rankParams();
  const optimizer = ((): RankOptimizer => {
    try {
      return createRankOptimizer(cfg, plan);
    } catch (err) {
      plan.dispose();
      throw err;
    }
  })();
  const writes = plan.sharded ? layout.coord.dp === 0 : layout.rank === 0;
  const attention = plan.attention ? { attention: plan.attention } : {};

  return {
    name: plan.sharded ? "sharded" : "replicated",
    optimizer,
    modelElements,
    microStep: (batch, gradScale) => model.lossAsync(plan.shardBatch(batch), { gradScale, hooks: plan, ...attention }),
    finishGradients: () => plan.finishGrads(),
    async optimStep(lr, maxNorm) {
      let prepared: PreparedRankStep | undefined;
      try {
        const norm = Math.sqrt(
          await plan.gradSumSquares(() => {
            prepared = optimizer.prepareStep(lr);
          }),
        );
        // The clipping factor goes to the optimizer, which folds it into the update.
        const clip = clipGradNorm(rankParams, maxNorm, { norm, scaleGrads: false });
        // The norm is global, so every rank of a shard group skips or steps together.
        if (clip.finite) await prepared!.apply(clip.scale);
        plan.zeroGrad();
        return { norm, clip };
      } finally {
        // A skipped (or failed) step lets go of the gradients' storage it holds; after apply, nothing.
        prepared?.drop();
      }
    },
    zeroGrad: () => plan.zeroGrad(),
    async evalLoss(batch) {
      try {
        return await model.evalLossAsync(plan.shardBatch(batch), { hooks: plan, ...attention });
      } finally {
        plan.releaseAll();
      }
    },
    checkpointShard: () => {
      if (!writes) return { tensors: [] };
      return {
        tensors: plan.paramPieces().map((p) => ({ name: p.name, shape: p.shape, range: p.range, data: p.data })),
        optimizer: optimizer.stateSource(),
      };
    },
    async loadCheckpoint(ckpt) {
      const pieces = plan.paramPieces();
      const state = await ckpt.loadOptimizerState(
        Object.fromEntries(pieces.map((p) => [p.name, plan.sharded ? { range: p.range, shape: [p.range.end - p.range.start] } : {}])),
      );
      await plan.loadParams((name, range) => ckpt.loadShard(name, range));
      optimizer.loadStateDict(state);
    },
    dispose() {
      optimizer.dispose();
      plan.dispose();
    },
  };
}

function headsOf(model: CausalLM): { numHeads: number; numKvHeads: number } {
  const c = model.config;
  return "numHeads" in c ? { numHeads: c.numHeads, numKvHeads: c.numKvHeads } : { numHeads: c.nHead, numKvHeads: c.nHead };
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
