// A rank's parallel plan: what it does around its model's step (model.lossAsync) and what
// its optimizer updates.
//
// - Replicated (DP): every rank holds whole parameters; finishGrads() all-reduces (sums) the
//   gradients over the ranks that hold replicas (all of them when nothing is sharded). The
//   loss's gradScale already divides by the global token count, so a sum is the mean.
// - Sharded (FSDP): each unit's parameters, gradients and optimizer state are split over the
//   shard group (fsdp x sp) as flat ranges; a unit is all-gathered before its forward (and
//   freed after it unless reshardAfterForward is false), again before its backward, and its
//   gradients are reduce-scattered after its backward; finishGrads() all-reduces the shard
//   gradients over dp. The host backend has no separate stream, so gathers are not
//   prefetched: each waits where it is needed.
// - Ulysses SP (sp > 1): shardBatch() gives this rank its slice of the group's batch, and
//   `attention` is the exchange model.lossAsync runs attention through.
//
// A step: plan.shardBatch(batch) -> model.lossAsync(local, { gradScale: 1 / global count,
// hooks: plan, attention: plan.attention }) (per micro-batch) -> plan.finishGrads() ->
// plan.gradNorm() / clip -> optimizer (over plan.rankParams(); Muon on sharded matrices
// through plan.createShardedMuon) -> plan.zeroGrad().
import { sumSquaresOfQueued } from "../../native/index.ts";
import type { RankLayout } from "../device-mesh.ts";
import type { Collectives, HostBuffer } from "../collectives/index.ts";
import { floatArray, hostOf, tensorOf } from "./host-tensors.ts";
import { ShardedMuon, type ShardedMuonOptions } from "./sharded-muon.ts";
import { ShardedUnit } from "./sharded-unit.ts";
import type { AttentionExchange, FloatBuffer, GroupSource, ParamPiece, PlanBatch, PlanModel, RankParam, ShardReader } from "./types.ts";
import { UlyssesAttention } from "./ulysses.ts";
import { numel, unitsOf, type UnitId } from "./units.ts";

export interface ParallelPlanOptions {
  layout: RankLayout;
  /** This rank's collectives endpoint (HostCollectives). */
  comm: GroupSource;
  /** Shard parameters, gradients and optimizer state over the shard group (FSDP). Default: when that group has more than one rank. */
  shard?: boolean;
  /** Free a block's gathered parameters after its forward (default true; false keeps them until its backward). */
  reshardAfterForward?: boolean;
  /** Attention heads, needed when sp > 1 (Ulysses shards heads). */
  numHeads?: number;
  numKvHeads?: number;
}

export interface ParallelPlan {
  /** Whether parameters are sharded (FSDP) or whole on every rank. */
  readonly sharded: boolean;
  /** The attention exchange to pass to model.lossAsync (undefined without sp). */
  readonly attention: AttentionExchange | undefined;
  /** This rank's part of its sp group's batch (the batch itself without sp). */
  shardBatch(batch: PlanBatch): PlanBatch;
  preForward(unit: UnitId): Promise<void>;
  preBackward(unit: UnitId): Promise<void>;
  postBackward(unit: UnitId): Promise<void>;
  /** After the last micro-batch's backward: sums gradients across the ranks that share parameters. */
  finishGrads(): Promise<void>;
  /** The global gradient norm (after finishGrads): every element of every parameter counted once. */
  gradNorm(): Promise<number>;
  /**
   * Its square, the sum of squares over every rank (what clipping takes). `whileSumming` (the
   * optimizer's preparation) runs on the host before the host waits for this rank's share: in the
   * replicated plan while the device sums it; the sharded plan runs it first, then sums its shards
   * tensor by tensor (a wait each), so nothing overlaps there.
   */
  gradSumSquares(whileSumming?: () => void): Promise<number>;
  /** What this rank's optimizer updates: whole parameters, or its shards (flat, 1-D, named by their parameter). */
  rankParams(): RankParam[];
  /** The logical shape of a parameter by name: shards are flat, so decay and routing rules must ask here. */
  logicalShape(name: string): readonly number[];
  /**
   * Muon for sharded matrices (Moonlight: each orthogonalised whole on an owner rank); the
   * other rank params go to AdamW. Undefined when parameters are whole: then models/optim's
   * MuonWithAdamW runs on rankParams() as on one rank.
   */
  createShardedMuon(o: ShardedMuonOptions): ShardedMuon | undefined;
  /** This rank's parameter ranges for a checkpoint: its shards, or whole tensors when replicated. */
  paramPieces(): ParamPiece[];
  /** Sets this rank's ranges (or whole tensors) from a reader; all are read before any changes. */
  loadParams(read: ShardReader): Promise<void>;
  /** Gathers every parameter (evaluation, export); releaseAll() returns to shards. After model.evalLossAsync(batch, { hooks: plan }), call releaseAll(). */
  gatherAll(): Promise<void>;
  releaseAll(): void;
  /** Parameter elements held on this rank now. */
  heldParamElements(): number;
  zeroGrad(): void;
  dispose(): void;
}

export function createParallelPlan(model: PlanModel, o: ParallelPlanOptions): ParallelPlan {
  const { layout, comm } = o;
  const sharded = o.shard ?? layout.shardGroup.length > 1;
  let attention: UlyssesAttention | undefined;
  if (layout.spGroup.length > 1) {
    if (o.numHeads === undefined || o.numKvHeads === undefined) throw new Error("parallel plan: sp > 1 needs numHeads and numKvHeads");
    attention = new UlyssesAttention(comm.group(layout.spGroup, "sp"), o.numHeads, o.numKvHeads);
  }
  const disposeAttention = () => attention?.dispose();
  const shapes = new Map(model.params().map((p) => [p.name, p.shape]));
  const base = {
    sharded,
    attention,
    shardBatch: (b: PlanBatch) => (attention ? attention.shard(b) : b),
    logicalShape(name: string) {
      const s = shapes.get(name);
      if (!s) throw new Error(`parallel plan: no parameter "${name}"`);
      return s;
    },
  };
  return sharded
    ? shardedPlan(model, o, base, comm.group(layout.shardGroup, "shard"), layout.dpGroup.length > 1 ? comm.group(layout.dpGroup, "dp") : undefined, disposeAttention)
    : replicatedPlan(model, base, layout.lossGroup.length > 1 ? comm.group(layout.lossGroup, "replicas") : undefined, disposeAttention);
}

type Base = Pick<ParallelPlan, "sharded" | "attention" | "shardBatch" | "logicalShape">;

function replicatedPlan(model: PlanModel, base: Base, replicas: Collectives<HostBuffer> | undefined, disposeAttention: () => void): ParallelPlan {
  const params = model.params();
  const noop = async () => {};
  // Replicas hold the same summed gradients: this rank's sum of squares is the global one.
  const gradSumSquares = async (whileSumming?: () => void) => {
    const pending = sumSquaresOfQueued(params.flatMap((p) => (p.grad ? [p.grad] : [])));
    whileSumming?.();
    return pending.read();
  };
  return {
    ...base,
    preForward: noop,
    preBackward: noop,
    postBackward: noop,
    async finishGrads() {
      if (!replicas || params.length === 0) return;
      const dtype = params[0]!.dtype;
      const flat = floatArray(dtype, params.reduce((a, p) => a + numel(p.shape), 0));
      let at = 0;
      for (const p of params) {
        if (p.grad) flat.set(hostOf(p.grad), at);
        at += numel(p.shape);
      }
      const sum = (await replicas.allReduce(flat, "sum")) as FloatBuffer;
      at = 0;
      for (const p of params) {
        const n = numel(p.shape);
        p.zeroGrad();
        p.accumulate(tensorOf(sum.slice(at, at + n), p.shape, dtype));
        at += n;
      }
    },
    gradSumSquares,
    gradNorm: async () => Math.sqrt(await gradSumSquares()),
    paramPieces: () => params.map((p) => ({ name: p.name, shape: p.shape, range: { start: 0, end: numel(p.shape) }, data: () => hostOf(p.master) })),
    async loadParams(read) {
      const data: FloatBuffer[] = [];
      for (const p of params) data.push(await read(p.name, { start: 0, end: numel(p.shape) }));
      params.forEach((p, i) => p.set(tensorOf(data[i]!, p.shape, p.dtype)));
    },
    rankParams: () => params.map((p) => p.optimParam()),
    createShardedMuon: () => undefined,
    gatherAll: noop,
    releaseAll() {},
    heldParamElements: () => params.reduce((a, p) => a + (p.held ? numel(p.shape) : 0), 0),
    zeroGrad() {
      for (const p of params) p.zeroGrad();
    },
    dispose: disposeAttention,
  };
}

function shardedPlan(
  model: PlanModel,
  o: ParallelPlanOptions,
  base: Base,
  shard: Collectives<HostBuffer>,
  dp: Collectives<HostBuffer> | undefined,
  disposeAttention: () => void,
): ParallelPlan {
  const units = unitsOf(model);
  const blocks = units.blocks.map((ps) => new ShardedUnit(ps, shard));
  const outer = new ShardedUnit(units.outer, shard);
  const all = [outer, ...blocks];
  const reshard = o.reshardAfterForward ?? true;
  const unit = (u: UnitId): ShardedUnit => {
    const s = u === "outer" ? outer : blocks[u];
    if (!s) throw new Error(`FSDP: no unit ${u}`);
    return s;
  };
  // Shards are disjoint over the shard group and equal over dp (after finishGrads). One queued sum
  // over every unit's shards: on cuda the host waits once, after whileSumming, not once a shard.
  const gradSumSquares = async (whileSumming?: () => void) => {
    const pending = sumSquaresOfQueued(all.flatMap((u) => u.gradShards()));
    whileSumming?.();
    return (await shard.allReduce(Float64Array.of(pending.read()), "sum"))[0]!;
  };
  const ensure = async (u: ShardedUnit) => {
    if (!u.held) await u.gather();
  };
  return {
    ...base,
    async preForward(u) {
      if (reshard && typeof u === "number" && u > 0) unit(u - 1).release();
      await ensure(unit(u));
    },
    async preBackward(u) {
      await ensure(unit(u));
    },
    async postBackward(u) {
      const s = unit(u);
      await s.reduceGrads();
      s.release();
    },
    async finishGrads() {
      if (!dp) return;
      const packed = all.map((u) => u.packGrads());
      const flat = floatArray(packed[0] instanceof Float64Array ? "float64" : "float32", packed.reduce((a, p) => a + p.length, 0));
      let at = 0;
      for (const p of packed) {
        flat.set(p, at);
        at += p.length;
      }
      const sum = (await dp.allReduce(flat, "sum")) as FloatBuffer;
      at = 0;
      all.forEach((u, i) => {
        const n = packed[i]!.length;
        u.unpackGrads(sum.subarray(at, at + n));
        at += n;
      });
    },
    gradSumSquares,
    gradNorm: async () => Math.sqrt(await gradSumSquares()),
    paramPieces: () => all.flatMap((u) => u.pieces()),
    async loadParams(read) {
      // Everything is read (and may fail) before any shard changes.
      const data: (FloatBuffer | undefined)[][] = [];
      for (const u of all) data.push(await u.readShards(read));
      all.forEach((u, i) => u.setShards(data[i]!));
    },
    rankParams: () => all.flatMap((u) => u.rankParams()),
    createShardedMuon: (mo) => new ShardedMuon(all, shard, mo),
    async gatherAll() {
      for (const u of all) await ensure(u);
    },
    releaseAll() {
      for (const u of all) u.release();
    },
    heldParamElements: () => all.reduce((a, u) => a + u.heldElements(), 0),
    zeroGrad() {
      for (const u of all) u.zeroGrad();
    },
    dispose() {
      for (const u of all) u.dispose();
      disposeAttention();
    },
  };
}

