// A trainable parameter: its value and its gradient, accumulated across backward calls
// (and micro-batches) until zeroGrad. Both are kept out of every scope: they live as long
// as the model.
//
// The name, logical shape and dtype are fixed at construction, so a parallelism plan may
// release the value while it holds only a shard of it (FSDP between uses) and set the whole
// value again before the next use; rules that look at the shape (weight decay, Muon
// routing, checkpoints) see the logical one throughout.
import { ops, type DType, type Tensor } from "../ops.ts";

export class Param {
  private v: Tensor | undefined;
  private g: Tensor | undefined;
  readonly shape: readonly number[];
  readonly dtype: DType;

  constructor(
    /** Our name: the HF name where the tensor exists in HF files as is. */
    readonly name: string,
    value: Tensor,
    /** Weight decay applies (matrices and embeddings; not norms and biases). */
    readonly decay: boolean,
  ) {
    this.v = ops.keep(value);
    this.shape = value.shape;
    this.dtype = value.dtype;
  }

  /** The whole value; an error while a plan has released it (it holds a shard elsewhere). */
  get value(): Tensor {
    if (!this.v) throw new Error(`param ${this.name}: its value is released (sharded by a parallel plan, which gathers it before use)`);
    return this.v;
  }

  /** Whether the whole value is held here (false after release()). */
  get held(): boolean {
    return this.v !== undefined;
  }

  /** The accumulated gradient, or undefined before the first backward. */
  get grad(): Tensor | undefined {
    return this.g;
  }

  /** Adds `g` to the gradient and disposes `g` (callers pass fresh gradient tensors). */
  accumulate(g: Tensor): void {
    if (!this.g) this.g = ops.keep(ops.zeros(this.shape, this.dtype));
    ops.addInto(this.g, g);
    g.dispose();
  }

  zeroGrad(): void {
    this.g?.dispose();
    this.g = undefined;
  }

  /** Replaces the value (loading weights, or a plan's gather); the old one, if held, is disposed. */
  set(value: Tensor): void {
    if (value.shape.length !== this.shape.length || value.shape.some((d, i) => d !== this.shape[i])) {
      throw new Error(`param ${this.name}: shape [${value.shape.join(", ")}] given for [${this.shape.join(", ")}]`);
    }
    if (value.dtype !== this.dtype) throw new Error(`param ${this.name}: ${value.dtype} given for ${this.dtype}`);
    this.v?.dispose();
    this.v = ops.keep(value);
  }

  /** Frees the value, keeping name, shape and dtype: for a plan that holds a shard of it elsewhere. */
  release(): void {
    this.v?.dispose();
    this.v = undefined;
  }

  dispose(): void {
    this.release();
    this.zeroGrad();
  }
}
