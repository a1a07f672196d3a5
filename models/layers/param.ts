// A trainable parameter: its value and its gradient, accumulated across backward calls
// (and micro-batches) until zeroGrad. Both are kept out of every scope: they live as long
// as the model.
import { ops, type DType, type Tensor } from "../ops.ts";

export class Param {
  private g: Tensor | undefined;

  constructor(
    /** Our name: the HF name where the tensor exists in HF files as is. */
    readonly name: string,
    public value: Tensor,
    /** Weight decay applies (matrices and embeddings; not norms and biases). */
    readonly decay: boolean,
  ) {
    ops.keep(value);
  }

  get shape(): readonly number[] {
    return this.value.shape;
  }

  get dtype(): DType {
    return this.value.dtype;
  }

  /** The accumulated gradient, or undefined before the first backward. */
  get grad(): Tensor | undefined {
    return this.g;
  }

  /** Adds `g` to the gradient and disposes `g` (callers pass fresh gradient tensors). */
  accumulate(g: Tensor): void {
    if (!this.g) this.g = ops.keep(ops.zeros(this.value.shape, this.value.dtype));
    ops.addInto(this.g, g);
    g.dispose();
  }

  zeroGrad(): void {
    this.g?.dispose();
    this.g = undefined;
  }

  /** Replaces the value (loading weights); the old one is disposed. */
  set(value: Tensor): void {
    if (value.shape.length !== this.value.shape.length || value.shape.some((d, i) => d !== this.value.shape[i])) {
      throw new Error(`param ${this.name}: shape [${value.shape.join(", ")}] given for [${this.value.shape.join(", ")}]`);
    }
    this.value.dispose();
    this.value = ops.keep(value);
  }

  dispose(): void {
    this.value.dispose();
    this.zeroGrad();
  }
}
