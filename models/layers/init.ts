// How new parameters get their first values: normal(0, initializer_range) for matrices and
// embeddings, ones for norm weights, zeros for biases (what transformers' _init_weights does).
// Each tensor's seed comes from the model seed and the parameter's name, so a parameter's
// initial value does not depend on how many others were made before it.
import { ops, type DType, type Tensor } from "../ops.ts";
import { Param } from "./param.ts";

export class Init {
  constructor(
    readonly seed: number,
    readonly std: number,
    readonly dtype: DType = "float32",
    /** False when the values are about to be overwritten (loading): zeros, no sampling. */
    readonly random = true,
  ) {}

  normal(name: string, shape: readonly number[]): Param {
    if (!this.random) return new Param(name, ops.zeros(shape, this.dtype), true);
    return new Param(name, ops.randn(shape, { seed: seedFor(this.seed, name), std: this.std, dtype: this.dtype }), true);
  }

  ones(name: string, shape: readonly number[]): Param {
    return new Param(name, this.fill(shape, 1), false);
  }

  zeros(name: string, shape: readonly number[]): Param {
    return new Param(name, this.fill(shape, 0), false);
  }

  private fill(shape: readonly number[], v: number): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return ops.tensor(new Float32Array(n).fill(v), shape, { dtype: this.dtype });
  }
}

/** FNV-1a of the name, mixed with the model seed. */
export function seedFor(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
