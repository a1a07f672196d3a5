// What the optimizers need of a parameter, and the plain form of their state.
import type { Tensor } from "../ops.ts";

/**
 * A trainable parameter as the optimizers see it; models' `Param` satisfies it. `value` and
 * `grad` are read at every step, so a value replaced between steps (loading weights) is
 * followed. The shape that the routing and decay rules look at is `value.shape`: the
 * whole matrix, so a sharded parameter must be presented with its logical shape.
 */
export interface OptimParam {
  readonly name: string;
  /** Updated in place: fp32 master weights (fp64 in gradient checks). */
  readonly value: Tensor;
  /** The accumulated gradient; undefined means none this step and the parameter is left alone, as torch leaves `grad is None`. */
  readonly grad: Tensor | undefined;
  /** A narrower copy the model computes with (bf16 on cuda), rewritten from value after each update. */
  readonly computeCopy?: Tensor | undefined;
  zeroGrad(): void;
}

/** Which update a parameter gets. */
export type Algorithm = "adamw" | "muon";

/** One parameter's state as plain typed arrays (a checkpoint holds this, msgpack-encodable). */
export interface ParamState {
  algorithm: Algorithm;
  /** Updates applied to this parameter: AdamW's bias correction counts per parameter, as torch's does. */
  step: number;
  shape: number[];
  /** By torch's names: `exp_avg`, `exp_avg_sq` (AdamW); `momentum_buffer` (Muon). */
  buffers: Record<string, Float32Array | Float64Array>;
}

/** A state buffer's values, or a function that reads them when called (a device buffer reaches the host only then). */
export type BufferSource = Float32Array | Float64Array | (() => Float32Array | Float64Array);

/**
 * The state as a checkpoint writer takes it: each buffer read only when the writer reaches it,
 * so a model's state is never on the host all at once and its copies overlap the disk writes.
 * Read it before the next step changes the state.
 */
export interface OptimizerStateSource {
  step: number;
  params: Record<string, Omit<ParamState, "buffers"> & { buffers: Record<string, BufferSource> }>;
}

export interface OptimizerStateDict {
  /** Optimizer steps taken: what the LR schedule is indexed by on resume. */
  step: number;
  /** Keyed by parameter name; a parameter that never had a gradient has no entry. */
  params: Record<string, ParamState>;
}

/**
 * An optimizer step ready to run: `apply` (once) updates with every gradient times gradScale;
 * `drop` lets go of a step that will not run (a skipped update) and of what it holds (on cuda,
 * the tensors' storage), and does nothing after `apply`.
 */
export interface PreparedStep {
  apply(gradScale?: number): void;
  drop(): void;
}

export interface Optimizer {
  /** Optimizer steps taken so far. */
  readonly stepCount: number;
  /**
   * Applies one update with learning rate `lr` to every parameter that has a gradient, each
   * gradient multiplied by gradScale first (clipping's factor; the gradients may be scaled in place).
   */
  step(lr: number, gradScale?: number): void;
  /**
   * step in two halves: the checks and the updates' layout now (nothing changes), the update at
   * `apply`, once the clipping scale is known. A trainer prepares while the device sums the
   * gradients' squares. Dropping a prepared step (a skipped update) leaves everything as it was.
   */
  prepareStep(lr: number): PreparedStep;
  /** Which update each parameter gets, by name (the split rule, made visible). */
  algorithms(): ReadonlyMap<string, Algorithm>;
  /** The parameters that get weight decay (the decay rule, made visible). */
  decayed(): string[];
  /** A copy of the state, for checkpoints. */
  stateDict(): OptimizerStateDict;
  /** stateDict's content, each buffer read when asked (see OptimizerStateSource). */
  stateSource(): OptimizerStateSource;
  /** Replaces the state with a checkpoint's; validates everything before changing anything. */
  loadStateDict(state: OptimizerStateDict): void;
  /** Frees the state tensors. */
  dispose(): void;
}

/** A rule over a parameter's name and shape (decay and routing rules). */
export type ParamPredicate = (name: string, shape: readonly number[]) => boolean;
