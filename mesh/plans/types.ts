// What the parallelism plans need of a model and give back to it. mesh/ does not import
// models/ (DESIGN: models may use mesh only through these small interfaces), so each side
// states its half structurally: models' Param, CausalLM and its lossAsync options satisfy
// these, and a rank hands a plan's hooks and attention exchange to model.lossAsync.
import type { AttentionOptions, DType, Tensor } from "../../native/index.ts";
import type { Collectives, HostBuffer } from "../collectives/index.ts";

/** A parameter as a plan sees it (models' Param): a logical shape that outlives the value. */
export interface PlanParam {
  readonly name: string;
  /** The logical (whole) shape, also while the value is released. */
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** The whole value; only read while held. */
  readonly value: Tensor;
  /** The master weights (the value itself unless mixed precision keeps a compute copy). */
  readonly master: Tensor;
  readonly held: boolean;
  readonly grad: Tensor | undefined;
  /** Sets the whole value (a gather); takes ownership of the tensor. */
  set(value: Tensor): void;
  /** Frees the whole value, keeping name, shape and dtype. */
  release(): void;
  /** Adds to the gradient and disposes the argument. */
  accumulate(g: Tensor): void;
  /** What the optimizer updates when the parameter is whole (master weights and the compute copy to refresh). */
  optimParam(): RankParam;
  zeroGrad(): void;
}

/** A model as a plan sees it: its parameters, and those of each decoder block (a plan's unit). */
export interface PlanModel {
  readonly blocks: readonly { params(): PlanParam[] }[];
  /** Every parameter once; those not in a block are the "outer" unit (embeddings, final norm, head). */
  params(): PlanParam[];
}

/** A tensor the optimizer updates on this rank: a whole parameter, or this rank's flat shard of one (models/optim's OptimParam). */
export interface RankParam {
  readonly name: string;
  readonly value: Tensor;
  readonly grad: Tensor | undefined;
  /** A narrower copy the model computes with, rewritten after each update. */
  readonly computeCopy?: Tensor | undefined;
  zeroGrad(): void;
}

/** A packed batch (models' PackedBatch). */
export interface PlanBatch {
  tokens: Int32Array;
  positions: Int32Array;
  cuSeqlens: Int32Array;
  labels?: Int32Array;
}

/** Where an exchange saves what its backward needs (a layer's Ctx). */
export interface SaveSlot {
  save(key: string, t: Tensor): void;
  get(key: string): Tensor;
}

/** The attention op over ranks (models' AttentionExchange). */
export interface AttentionExchange {
  forward(q: Tensor, k: Tensor, v: Tensor, ctx: SaveSlot, opts: AttentionOptions): Promise<Tensor>;
  backward(dout: Tensor, ctx: SaveSlot, opts: AttentionOptions): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor }>;
}

/** Hands out the collectives of a process group (HostCollectives.group; an NCCL endpoint later). */
export interface GroupSource {
  group(ranks: readonly number[], name: string): Collectives<HostBuffer>;
}

/** A float buffer as the host collectives carry it. */
export type FloatBuffer = Float32Array | Float64Array;

/** Flat elements [start, end) of a row-major tensor (models/checkpoint's ShardRange). */
export interface ShardRange {
  start: number;
  end: number;
}

/** A parameter's range held by this rank, as models/checkpoint's TensorShard takes it. */
export interface ParamPiece {
  name: string;
  /** The logical shape. */
  shape: readonly number[];
  range: ShardRange;
  data: () => FloatBuffer;
}

/** Reads a parameter's flat range (a checkpoint's loadShard). */
export type ShardReader = (name: string, range: ShardRange) => Promise<FloatBuffer> | FloatBuffer;
