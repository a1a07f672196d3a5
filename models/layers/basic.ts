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
    this.accumulateGrads(dy, ctx);
    return ops.matmul(dy, this.weight.value);
  }

  /** As backward, but adds dx into `dx` (one accumulating GEMM where a layer's input feeds several projections). */
  backwardInto(dy: Tensor, ctx: Ctx, dx: Tensor): void {
    this.accumulateGrads(dy, ctx);
    ops.matmulInto(dx, dy, this.weight.value, { accumulate: true });
  }

  private accumulateGrads(dy: Tensor, ctx: Ctx): void {
    this.weight.accumulateProduct(dy, ctx.get("x"), { transA: true });
    if (this.bias) this.bias.accumulate(ops.sumRows(dy));
  }

  params(): Param[] {
    return this.bias ? [this.weight, this.bias] : [this.weight];
  }
}

/**
 * Linears that read one input, run as one: each pass is one GEMM over their weights' rows (and
 * biases) stacked, with output [T, out_0 + out_1 + ...]. For q, k and v: at the 0.5B shape the k
 * and v projections alone are N = 128 GEMMs, which no cuBLASLt algorithm runs above ~150 TFLOP/s
 * (native/NOTES.md). The stacked weights are made per pass (a copy of the compute weights, small
 * beside the activations, so nothing stacked outlives the pass), and each part keeps its own
 * parameters: HF names, checkpoints, the optimizer's rules and a plan's sharding are unchanged.
 */
export class LinearGroup {
  readonly widths: readonly number[];

  constructor(readonly parts: readonly Linear[]) {
    if (parts.length === 0) throw new Error("LinearGroup: no parts");
    const inF = parts[0]!.weight.shape[1];
    if (parts.some((p) => p.weight.shape[1] !== inF)) throw new Error("LinearGroup: the parts read inputs of different widths");
    if (parts.some((p) => (p.bias === undefined) !== (parts[0]!.bias === undefined))) throw new Error("LinearGroup: some parts have a bias and some not");
    this.widths = parts.map((p) => p.weight.shape[0]!);
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    ctx.save("x", x);
    const w = ops.catRows(this.parts.map((p) => p.weight.value));
    const b = this.parts[0]!.bias ? ops.catRows(this.parts.map((p) => p.bias!.value)) : undefined;
    try {
      return applyLinear(x, w, b);
    } finally {
      w.dispose();
      b?.dispose();
    }
  }

  /** dx of the group's input; each part's weight and bias gradients accumulated from its columns of dy. */
  backward(dy: Tensor, ctx: Ctx): Tensor {
    const w = ops.catRows(this.parts.map((p) => p.weight.value));
    const dx = ops.matmul(dy, w);
    w.dispose();
    const first = this.parts[0]!.weight;
    // One GEMM into the master dtype (float32 under bf16 compute), then each part's rows.
    const dw = ops.empty([w.shape[0]!, first.shape[1]!], first.dtype, dy.device);
    ops.matmulInto(dw, dy, ctx.get("x"), { transA: true });
    this.accumulateSplit(dw, (p) => p.weight);
    if (this.parts[0]!.bias) this.accumulateSplit(ops.sumRows(dy), (p) => p.bias!);
    return dx;
  }

  /** Each part's rows of g added to that part's parameter; g is disposed. */
  private accumulateSplit(g: Tensor, param: (p: Linear) => Param): void {
    const pieces = ops.splitRows(g, this.widths);
    g.dispose();
    this.parts.forEach((p, i) => param(p).accumulate(pieces[i]!));
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
