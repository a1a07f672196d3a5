// The public face of mesh/plans: DP, FSDP and Ulysses SP around a model's step. See plan.ts
// for a step's sequence and types.ts for what a plan needs of a model.
export { createParallelPlan, type ParallelPlan, type ParallelPlanOptions } from "./plan.ts";
export { UlyssesAttention, sequenceShard, queryHeads, kvHeads } from "./ulysses.ts";
export { ShardedMuon, type ShardedMuonOptions, type ShardedMuonParamState } from "./sharded-muon.ts";
export { ShardedUnit, flatShardRange } from "./sharded-unit.ts";
export { unitsOf, type UnitId, type Units } from "./units.ts";
export type {
  AttentionExchange,
  FloatBuffer,
  GroupSource,
  ParamPiece,
  PlanBatch,
  PlanModel,
  PlanParam,
  RankParam,
  SaveSlot,
  ShardRange,
  ShardReader,
} from "./types.ts";
