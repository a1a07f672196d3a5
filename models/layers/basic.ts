// The small layers: Linear (HF nn.Linear layout, weight [out, in]), RMSNorm, LayerNorm,
// Embedding. Each saves its inputs in ctx on forward and accumulates its parameters'
// gradients on backward.
import { ops, type Tensor } from "../ops.ts";
import type { Ctx } from "./ctx.ts";
import type { Init } from "./init.ts";
import type { Param } from "./param.ts";

export interface Layer {
  forward(x: Tensor, ctx: Ctx): Tensor;
  backward(dy: Tensor, ctx: Ctx): Tensor;
  params(): Param[];
}

/**
 * A norm at a pre-norm block's seam: forward can take its input as x + residual (returning the
 * sum too), and backward can add the residual stream's gradient into its dx.
 */
export interface NormLayer extends Layer {
  forwardResidual(x: Tensor, residual: Tensor, ctx: Ctx): { y: Tensor; sum: Tensor };
  /** backward(dy) + residualGrad. */
  backwardResidual(dy: Tensor, residualGrad: Tensor, ctx: Ctx): Tensor;
}

/**
 * The norm of x + delta, and that sum: formed in the norm's kernel where a block left its output
 * unsummed (delta, disposed here), else the norm of x (the sum is x).
 */
export function normOfSum(norm: NormLayer, x: Tensor, delta: Tensor | undefined, ctx: Ctx): { y: Tensor; sum: Tensor } {
  if (!delta) return { y: norm.forward(x, ctx), sum: x };
  const r = norm.forwardResidual(x, delta, ctx);
  delta.dispose();
  return r;
}

export class Linear implements Layer {
  readonly weight: Param;
  readonly bias: Param | undefined;

  constructor(init: Init, name: string, inFeatures: number, outFeatures: number, bias: boolean) {
    this.weight = init.normal(`${name}.weight`, [outFeatures, inFeatures]);
    this.bias = bias ? init.zeros(`${name}.bias`, [outFeatures]) : undefined;
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    ctx.save("x", x);
    return applyLinear(x, this.weight.value, this.bias?.value);
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    this.weight.accumulateProduct(dy, ctx.get("x"), { transA: true });
    if (this.bias) this.bias.accumulate(ops.sumRows(dy));
    return ops.matmul(dy, this.weight.value);
  }

  params(): Param[] {
    return this.bias ? [this.weight, this.bias] : [this.weight];
  }
}

/**
 * Linears that read one input, run as one: each pass is one GEMM over their weights' rows (and
 * biases) stacked, with output [T, out_0 + out_1 + ...]. For q, k and v: at the 0.5B shape the k
 * and v projections alone are N = 128 GEMMs, which no cuBLASLt algorithm runs above ~150 TFLOP/s
 * (native/NOTES.md). Each part keeps its own parameters (HF names, checkpoints, the optimizer's
 * rules, a plan's sharding); where it can, the group makes their compute copies and gradients
 * adjacent row views of one buffer (RowStack), so the GEMMs read and write the parts in place.
 */
export class LinearGroup {
  readonly widths: readonly number[];
  private readonly weights: RowStack;
  private readonly biases: RowStack | undefined;

  constructor(readonly parts: readonly Linear[]) {
    if (parts.length === 0) throw new Error("LinearGroup: no parts");
    const inF = parts[0]!.weight.shape[1];
    if (parts.some((p) => p.weight.shape[1] !== inF)) throw new Error("LinearGroup: the parts read inputs of different widths");
    if (parts.some((p) => (p.bias === undefined) !== (parts[0]!.bias === undefined))) throw new Error("LinearGroup: some parts have a bias and some not");
    this.widths = parts.map((p) => p.weight.shape[0]!);
    this.weights = new RowStack(parts.map((p) => p.weight));
    this.biases = parts[0]!.bias ? new RowStack(parts.map((p) => p.bias!)) : undefined;
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    ctx.save("x", x);
    const w = this.weights.values();
    const b = this.biases?.values();
    try {
      return applyLinear(x, w, b);
    } finally {
      w.dispose();
      b?.dispose();
    }
  }

  /** Whether the parts have biases (whose gradient is dy's column sums). */
  get hasBias(): boolean {
    return this.biases !== undefined;
  }

  /**
   * dx of the group's input; each part's weight and bias gradients accumulated from its columns of
   * dy. `columnSums`: dy's column sums where the caller formed them with dy (taken and disposed).
   */
  backward(dy: Tensor, ctx: Ctx, columnSums?: Tensor): Tensor {
    const w = this.weights.values();
    const dx = ops.matmul(dy, w);
    w.dispose();
    const x = ctx.get("x");
    // dW = dy^T x in the master dtype (float32 under bf16 compute): straight into the stacked
    // gradients where the parts hold them, else one fresh buffer that becomes them.
    const held = this.weights.grads();
    if (held) {
      ops.matmulInto(held, dy, x, { transA: true, accumulate: true });
      held.dispose();
    } else {
      const first = this.parts[0]!.weight;
      const dw = ops.empty([this.weights.rows, first.shape[1]!], first.dtype, dy.device);
      ops.matmulInto(dw, dy, x, { transA: true });
      this.weights.accumulate(dw);
    }
    if (this.biases) this.biases.accumulate(columnSums ?? ops.sumRows(dy));
    else columnSums?.dispose();
    return dx;
  }
}

/**
 * Parameters of one trailing shape whose compute copies and gradients a group keeps as adjacent
 * rows of one buffer each, so that one GEMM reads all the values and writes all the gradients.
 * The parameters own the row views (the optimizer writes them in place); the stack is remade
 * when a parameter's value was replaced (loading, a plan's gather). Where a part would start off
 * a 256-byte boundary (cuBLASLt's alignment), nothing is stacked: each pass stacks the values into
 * a fresh buffer and the gradients are split. Without a compute copy (compute in the master dtype:
 * the CPU's fp32 / fp64 runs, or float32 on cuda) the values are stacked each pass (masters are
 * not made views, as loaders and optimizers hold them); the gradients are still one buffer's rows.
 */
class RowStack {
  readonly rows: number;
  /** Each part's first row in the stack. */
  private readonly starts: number[];
  private valueViews: Tensor[] | undefined;
  private gradViews: Tensor[] | undefined;

  constructor(private readonly params: readonly Param[]) {
    this.starts = [];
    let r = 0;
    for (const p of params) {
      this.starts.push(r);
      r += p.shape[0]!;
    }
    this.rows = r;
  }

  /** Whether every part starts 256-byte aligned in a stack of elements of `bytes`. */
  private aligned(bytes: number): boolean {
    const rowBytes = bytes * this.params[0]!.shape.slice(1).reduce((a, b) => a * b, 1);
    return this.starts.every((r) => (r * rowBytes) % 256 === 0);
  }

  /** The values stacked along dim 0, for one pass (dispose it): a view of the stack, or a fresh copy. */
  values(): Tensor {
    const current = this.valueViews && this.params.every((p, i) => p.value === this.valueViews![i]);
    if (!current) this.restack();
    if (this.valueViews) return this.valueViews[0]!.rows(0, this.rows);
    return ops.catRows(this.params.map((p) => p.value));
  }

  private restack(): void {
    this.valueViews = undefined;
    const values = this.params.map((p) => p.value);
    if (this.params.some((p, i) => values[i] === p.master) || !this.aligned(ops.dtypeBytes[values[0]!.dtype])) return;
    const stack = ops.catRows(values);
    this.valueViews = this.params.map((p, i) => {
      const view = stack.rows(this.starts[i]!, p.shape[0]!);
      p.adoptComputeView(view);
      return view;
    });
    stack.dispose();
  }

  /** The parts' gradients as one view (dispose it) when they are still this stack's rows, else undefined. */
  grads(): Tensor | undefined {
    const views = this.gradViews;
    if (!views || !this.params.every((p, i) => p.grad === views[i])) return undefined;
    return views[0]!.rows(0, this.rows);
  }

  /** Adds g (fresh, [rows, ...], disposed here) to the parts' gradients: as their gradients' stack where none has one yet. */
  accumulate(g: Tensor): void {
    const held = this.grads();
    if (held) {
      ops.addInto(held, g);
      held.dispose();
      g.dispose();
      return;
    }
    if (this.params.every((p) => p.grad === undefined) && g.dtype === this.params[0]!.dtype && this.aligned(ops.dtypeBytes[g.dtype])) {
      this.gradViews = this.params.map((p, i) => g.rows(this.starts[i]!, p.shape[0]!));
      g.dispose();
      this.params.forEach((p, i) => p.accumulate(this.gradViews![i]!));
      return;
    }
    this.gradViews = undefined;
    const pieces = ops.splitRows(g, this.params.map((p) => p.shape[0]!));
    g.dispose();
    this.params.forEach((p, i) => p.accumulate(pieces[i]!));
  }
}

/** y = x W^T (+ b), x [T, in], W [out, in]; the bias is the GEMM's epilogue. */
export function applyLinear(x: Tensor, w: Tensor, b: Tensor | undefined): Tensor {
  return b ? ops.matmul(x, w, { transB: true, bias: b }) : ops.matmul(x, w, { transB: true });
}

/** RMSNorm over the last dimension; x may be [T, D] or [T*H, D] (per-head q/k norm). */
export class RMSNorm implements NormLayer {
  readonly weight: Param;

  constructor(
    init: Init,
    name: string,
    dim: number,
    readonly eps: number,
  ) {
    this.weight = init.ones(`${name}.weight`, [dim]);
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    const { y, rstd } = ops.rmsnorm(x, this.weight.value, this.eps);
    ctx.save("x", x);
    ctx.save("rstd", rstd);
    return y;
  }

  /** rmsnorm(x + residual) in one pass (one kernel on cuda), returning the sum too. */
  forwardResidual(x: Tensor, residual: Tensor, ctx: Ctx): { y: Tensor; sum: Tensor } {
    const { y, sum, rstd } = ops.rmsnormResidual(x, residual, this.weight.value, this.eps);
    ctx.save("x", sum);
    ctx.save("rstd", rstd);
    return { y, sum };
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    return this.backwardResidual(dy, undefined, ctx);
  }

  /** The residual gradient, when given, is added by the backward kernel itself. */
  backwardResidual(dy: Tensor, residualGrad: Tensor | undefined, ctx: Ctx): Tensor {
    const { dx, dw } = ops.rmsnormBackward(dy, ctx.get("x"), this.weight.value, ctx.get("rstd"), residualGrad);
    this.weight.accumulate(dw);
    return dx;
  }

  params(): Param[] {
    return [this.weight];
  }
}

export class LayerNorm implements NormLayer {
  readonly weight: Param;
  readonly bias: Param;

  constructor(
    init: Init,
    name: string,
    dim: number,
    readonly eps: number,
  ) {
    this.weight = init.ones(`${name}.weight`, [dim]);
    this.bias = init.zeros(`${name}.bias`, [dim]);
  }

  forwardResidual(x: Tensor, residual: Tensor, ctx: Ctx): { y: Tensor; sum: Tensor } {
    const sum = ops.add(x, residual);
    return { y: this.forward(sum, ctx), sum };
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    const { y, mean, rstd } = ops.layernorm(x, this.weight.value, this.bias.value, this.eps);
    ctx.save("x", x);
    ctx.save("mean", mean);
    ctx.save("rstd", rstd);
    return y;
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    const { dx, dw, db } = ops.layernormBackward(dy, ctx.get("x"), this.weight.value, ctx.get("mean"), ctx.get("rstd"));
    this.weight.accumulate(dw);
    this.bias.accumulate(db);
    return dx;
  }

  backwardResidual(dy: Tensor, residualGrad: Tensor, ctx: Ctx): Tensor {
    const dx = this.backward(dy, ctx);
    ops.addInto(dx, residualGrad);
    return dx;
  }

  params(): Param[] {
    return [this.weight, this.bias];
  }
}

/** Rows of a [V, D] table picked by int32 ids (batch tensors, owned by the batch, not saved). */
export class Embedding {
  readonly weight: Param;

  constructor(
    init: Init,
    name: string,
    readonly numRows: number,
    dim: number,
  ) {
    this.weight = init.normal(`${name}.weight`, [numRows, dim]);
  }

  /** idsChecked: the ids were checked against numRows on the host (a checked batch's), see ops.embedding. */
  forward(ids: Tensor, o: { idsChecked?: boolean } = {}): Tensor {
    return ops.embedding(this.weight.value, ids, o);
  }

  backward(dy: Tensor, ids: Tensor, o: { idsChecked?: boolean } = {}): void {
    // A tied head's gradient is already there: scatter into it (no [V, D] temporary).
    const g = this.weight.grad;
    if (g) ops.embeddingBackwardInto(g, dy, ids, o);
    else this.weight.accumulate(ops.embeddingBackward(dy, ids, this.numRows, o));
  }

  params(): Param[] {
    return [this.weight];
  }
}
