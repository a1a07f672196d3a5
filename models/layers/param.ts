// A trainable parameter: its value and its gradient, accumulated across backward calls
// (and micro-batches) until zeroGrad. Both are kept out of every scope: they live as long
// as the model.
//
// Mixed precision: `dtype` is the master dtype (float32, float64 in gradient checks): what the
// optimizer updates, checkpoints save and loaders set. After `place(device, compute)` with a
// narrower compute dtype (bfloat16 on cuda), `value` is a compute copy that the layers read and
// the optimizer rewrites after each update (AdamW writes it in the same pass); the gradient
// stays in the master dtype, so micro-batches accumulate in fp32.
//
// The name, logical shape and dtype are fixed at construction, so a parallelism plan may
// release the value while it holds only a shard of it (FSDP between uses) and set the whole
// value again before the next use; rules that look at the shape (weight decay, Muon
// routing, checkpoints) see the logical one throughout.
import { ops, type Device, type DType, type Tensor } from "../ops.ts";
import type { OptimParam } from "../optim/types.ts";

export class Param {
  private m: Tensor | undefined;
  /** The compute copy when it differs from the master; undefined when the master is computed with. */
  private c: Tensor | undefined;
  private g: Tensor | undefined;
  readonly shape: readonly number[];
  /** The master dtype. */
  readonly dtype: DType;
  private dev: Device;
  private computeDtype: DType;

  constructor(
    /** Our name: the HF name where the tensor exists in HF files as is. */
    readonly name: string,
    value: Tensor,
    /** Weight decay applies (matrices and embeddings; not norms and biases). */
    readonly decay: boolean,
  ) {
    this.m = ops.keep(value);
    this.shape = value.shape;
    this.dtype = value.dtype;
    this.dev = value.device;
    this.computeDtype = value.dtype;
  }

  /**
   * Moves the master to device and keeps a compute copy in `compute` when it differs from the
   * master dtype. The gradient, if any, is dropped (call between steps).
   */
  place(device: Device, compute: DType): void {
    this.zeroGrad();
    this.dev = device;
    this.computeDtype = compute;
    if (this.m) this.set(this.m.device === device ? this.m : this.m.to(device));
  }

  /** The tensor the layers compute with; an error while a plan has released it (it holds a shard elsewhere). */
  get value(): Tensor {
    const v = this.c ?? this.m;
    if (!v) throw new Error(`param ${this.name}: its value is released (sharded by a parallel plan, which gathers it before use)`);
    return v;
  }

  /** The master weights (the value itself unless mixed precision keeps a compute copy). */
  get master(): Tensor {
    if (!this.m) throw new Error(`param ${this.name}: its value is released (sharded by a parallel plan, which gathers it before use)`);
    return this.m;
  }

  /** Whether the whole value is held here (false after release()). */
  get held(): boolean {
    return this.m !== undefined;
  }

  /** The accumulated gradient (master dtype), or undefined before the first backward. */
  get grad(): Tensor | undefined {
    return this.g;
  }

  /** Adds `g` to the gradient and disposes `g` (callers pass fresh gradient tensors). */
  accumulate(g: Tensor): void {
    if (!this.g && g.dtype === this.dtype && g.device === this.dev && ops.sameShape(g.shape, this.shape)) {
      this.g = ops.keep(g);
      return;
    }
    if (!this.g) this.g = ops.keep(ops.zeros(this.shape, this.dtype, this.dev));
    ops.addInto(this.g, g);
    g.dispose();
  }

  /**
   * Adds op(a) op(b) to the gradient with one GEMM (accumulating into the master-dtype
   * gradient, so no product tensor is made): a weight's gradient dy^T x.
   */
  accumulateProduct(a: Tensor, b: Tensor, o: { transA?: boolean; transB?: boolean }): void {
    if (!this.g) {
      // Written whole by the GEMM: no zero fill.
      this.g = ops.keep(ops.empty(this.shape, this.dtype, this.dev));
      ops.matmulInto(this.g, a, b, { ...o, accumulate: false });
      return;
    }
    ops.matmulInto(this.g, a, b, { ...o, accumulate: true });
  }

  zeroGrad(): void {
    this.g?.dispose();
    this.g = undefined;
  }

  /**
   * Replaces the value (loading weights, or a plan's gather) with a tensor in the master dtype
   * on any device; it moves to this parameter's device and the compute copy follows. The old
   * value, if held, is disposed.
   */
  set(value: Tensor): void {
    if (!ops.sameShape(value.shape, this.shape)) {
      throw new Error(`param ${this.name}: shape [${value.shape.join(", ")}] given for [${this.shape.join(", ")}]`);
    }
    if (value.dtype !== this.dtype) throw new Error(`param ${this.name}: ${value.dtype} given for ${this.dtype}`);
    const placed = value.device === this.dev ? value : value.to(this.dev);
    // A tensor handed over from another device: the caller's tensor is ours to free.
    if (placed !== value) value.dispose();
    if (this.m !== placed) this.m?.dispose();
    this.c?.dispose();
    this.m = ops.keep(placed);
    this.c = this.computeDtype === this.dtype ? undefined : ops.keep(ops.cast(placed, this.computeDtype));
  }

  /**
   * Makes `view` the compute copy: rows of a buffer that a LinearGroup's one GEMM reads for
   * several parameters; it must hold this compute copy's values (the optimizer then writes the
   * buffer). Only where mixed precision keeps a compute copy.
   */
  adoptComputeView(view: Tensor): void {
    const c = this.c;
    if (!c) throw new Error(`param ${this.name}: no compute copy to replace with a view`);
    if (!ops.sameShape(view.shape, this.shape) || view.dtype !== c.dtype || view.device !== c.device) {
      throw new Error(`param ${this.name}: a compute view must be ${c.dtype} [${this.shape.join(", ")}] on ${c.device}`);
    }
    c.dispose();
    this.c = ops.keep(view);
  }

  /** What the optimizer updates: the master, with the compute copy to rewrite after each update. */
  optimParam(): OptimParam {
    const self = this;
    return {
      name: this.name,
      get value() {
        return self.master;
      },
      get grad() {
        return self.g;
      },
      get computeCopy() {
        return self.c;
      },
      zeroGrad: () => this.zeroGrad(),
    };
  }

  /** Frees the value, keeping name, shape and dtype: for a plan that holds a shard of it elsewhere. */
  release(): void {
    this.m?.dispose();
    this.c?.dispose();
    this.m = undefined;
    this.c = undefined;
  }

  dispose(): void {
    this.release();
    this.zeroGrad();
  }
}
