// What a RankActor asks of its parallelism: it never touches collectives itself. One plan
// wraps the model for the whole job: the identity plan for one rank; FSDP / DP / Ulysses SP
// plans (mesh/) slot in here, each doing its gathers, reduce-scatters and all-to-alls
// inside these calls, so the rank's step logic stays the same for every layout.
//
// The calls are async because host collectives (NATS) are; a plan over NCCL may resolve
// at once.
import type { CausalLM, LossResult, PackedBatch } from "../models/index.ts";
import { gradSumSquares, type OptimParam, type Optimizer } from "../models/optim/index.ts";
import { loadWholeModel, wholeModelShard, type Checkpoint, type RankShardInput } from "../models/checkpoint/index.ts";

export interface ParallelPlan {
  readonly name: string;
  /** The parameters this rank's optimizer owns (FSDP: its shards, shown with their logical shapes). */
  optimParams(): readonly OptimParam[];
  /** Forward and backward of one micro-batch; gradients of gradScale * loss sum are accumulated. */
  microStep(batch: PackedBatch, gradScale: number): Promise<LossResult>;
  /** After a step's last micro-batch, before clipping: reduce gradients over the data-parallel group. */
  finishGradients(): Promise<void>;
  /** Sum of squares of the gradients over every rank (each gradient element counted once). */
  gradSumSquares(): Promise<number>;
  /** The loss of a batch without gradients (this rank's share of it). */
  evalLoss(batch: PackedBatch): Promise<LossResult>;
  /** What this rank writes into a checkpoint: its parameters' ranges and its optimizer state. */
  checkpointShard(optimizer: Optimizer): RankShardInput;
  /** Takes this rank's ranges of parameters and optimizer state from a checkpoint (saved under any mesh). */
  loadCheckpoint(ckpt: Checkpoint, optimizer: Optimizer): Promise<void>;
}

/** One rank, whole model: nothing to gather or reduce. */
export function identityPlan(model: CausalLM): ParallelPlan {
  const params = model.params();
  return {
    name: "identity",
    optimParams: () => params,
    microStep: async (batch, gradScale) => model.loss(batch, { gradScale }),
    finishGradients: async () => {},
    gradSumSquares: async () => gradSumSquares(params),
    evalLoss: async (batch) => model.evalLoss(batch),
    checkpointShard: (optimizer) => wholeModelShard(params, optimizer),
    loadCheckpoint: async (ckpt, optimizer) => {
      await loadWholeModel(ckpt, params, optimizer);
    },
  };
}
