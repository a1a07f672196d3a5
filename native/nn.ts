// Row-wise layers: embedding, RMSNorm, LayerNorm, SwiGLU, GELU (tanh), softmax.
import { loadAddon } from "./addon.ts";
import { Tensor } from "./tensor.ts";
import { backendFor, cudaFn, deviceOfInputs } from "./cuda.ts";
import { add, addInto, catColumns, splitColumns } from "./ops.ts";
import { fail, fmt, needCpu, needDtype, needFinite, needFloat, needRank, needSameDtype, needSameShape, needShape } from "./check.ts";

/** How the embedding ops may treat their ids. */
export interface EmbeddingIds {
  /**
   * The caller has checked every id against V on the host (a model's batch, by checkBatch), so
   * cuda does not read back its out-of-range flag: that read waits for the device, and the host
   * could not queue ahead of it. A wrong claim leaves such rows unwritten (never read out of bounds).
   */
  idsChecked?: boolean;
}

/** weight[V,D] rows picked by ids[T] (int32) -> [T,D]. An id outside [0,V) throws (see EmbeddingIds). */
export function embedding(weight: Tensor, ids: Tensor, o: EmbeddingIds = {}): Tensor {
  const op = "embedding";
  needFloat(op, "weight", weight);
  needRank(op, "weight", weight, [2]);
  needDtype(op, "ids", ids, "int32");
  needRank(op, "ids", ids, [1]);
  const raw = backendFor(op, "embedding", ["weight", weight], ["ids", ids]);
  return new Tensor(raw(weight.handle(op, "weight"), ids.handle(op, "ids"), o.idsChecked ?? false), weight.dtype, [
    ids.shape[0]!,
    weight.shape[1]!,
  ]);
}

/** dW[V,D] = scatter-add of dy[T,D] rows at ids (on cuda: float32 whatever dy is, as parameter gradients are). */
export function embeddingBackward(dy: Tensor, ids: Tensor, vocabSize: number, o: EmbeddingIds = {}): Tensor {
  const op = "embeddingBackward";
  needFloat(op, "dy", dy);
  needRank(op, "dy", dy, [2]);
  needDtype(op, "ids", ids, "int32");
  needShape(op, "ids", ids, [dy.shape[0]!]);
  if (!Number.isInteger(vocabSize) || vocabSize <= 0) fail(op, `vocabSize must be a positive integer, got ${vocabSize}`);
  const raw = backendFor(op, "embeddingBackward", ["dy", dy], ["ids", ids]);
  return new Tensor(raw(dy.handle(op, "dy"), ids.handle(op, "ids"), vocabSize, o.idsChecked ?? false), dy.device === "cuda" ? "float32" : dy.dtype, [
    vocabSize,
    dy.shape[1]!,
  ]);
}

/**
 * dW[V,D] += embeddingBackward(dy, ids): into an existing gradient (a tied head's), with no
 * [V,D] zero fill on cuda (dW float32 there; the CPU adds a fresh embeddingBackward).
 */
export function embeddingBackwardInto(dW: Tensor, dy: Tensor, ids: Tensor, o: EmbeddingIds = {}): void {
  const op = "embeddingBackwardInto";
  needFloat(op, "dy", dy);
  needRank(op, "dy", dy, [2]);
  needRank(op, "dW", dW, [2]);
  needDtype(op, "ids", ids, "int32");
  needShape(op, "ids", ids, [dy.shape[0]!]);
  needShape(op, "dW", dW, [-1, dy.shape[1]!]);
  if (deviceOfInputs(op, ["dW", dW], ["dy", dy], ["ids", ids]) === "cuda") {
    needDtype(op, "dW", dW, "float32");
    cudaFn(op, "embeddingBackwardInto")(dW.handle(op, "dW"), dy.handle(op, "dy"), ids.handle(op, "ids"), o.idsChecked ?? false);
    return;
  }
  const g = embeddingBackward(dy, ids, dW.shape[0]!);
  addInto(dW, g);
  g.dispose();
}

function needLastDim(op: string, x: Tensor, w: Tensor, wName: string): number {
  needFloat(op, "x", x);
  needSameDtype(op, ["x", x], [wName, w]);
  if (x.shape.length < 1) fail(op, "x must have at least one dimension");
  const D = x.shape.at(-1)!;
  needShape(op, wName, w, [D]);
  return D;
}

/**
 * y = x * rstd * w over the last dim, rstd = 1/sqrt(mean(x^2) + eps) per row ([rows]). On cuda
 * rstd is float32 whatever x is.
 */
export function rmsnorm(x: Tensor, w: Tensor, eps: number): { y: Tensor; rstd: Tensor } {
  const op = "rmsnorm";
  const D = needLastDim(op, x, w, "w");
  needFinite(op, "eps", eps);
  const raw = backendFor(op, "rmsnorm", ["x", x], ["w", w]);
  const [y, rstd] = raw(x.handle(op, "x"), w.handle(op, "w"), eps);
  const statDtype = x.device === "cuda" ? "float32" : x.dtype;
  return { y: new Tensor(y, x.dtype, x.shape), rstd: new Tensor(rstd, statDtype, [D ? x.numel / D : 0]) };
}

/**
 * The pre-norm block's seam: sum = x + residual (the residual stream carried on), y =
 * rmsnorm(sum). One pass on cuda; on the CPU, add then rmsnorm.
 */
export function rmsnormResidual(x: Tensor, residual: Tensor, w: Tensor, eps: number): { y: Tensor; sum: Tensor; rstd: Tensor } {
  const op = "rmsnormResidual";
  const D = needLastDim(op, x, w, "w");
  needSameDtype(op, ["x", x], ["residual", residual]);
  needSameShape(op, ["x", x], ["residual", residual]);
  needFinite(op, "eps", eps);
  if (deviceOfInputs(op, ["x", x], ["residual", residual], ["w", w]) === "cuda") {
    const [y, sum, rstd] = cudaFn(op, "rmsnormResidual")(x.handle(op, "x"), residual.handle(op, "residual"), w.handle(op, "w"), eps);
    return { y: new Tensor(y, x.dtype, x.shape), sum: new Tensor(sum, x.dtype, x.shape), rstd: new Tensor(rstd, "float32", [D ? x.numel / D : 0]) };
  }
  const sum = add(x, residual);
  return { ...rmsnorm(sum, w, eps), sum };
}

/**
 * RMSNorm's backward. With `residualGrad` (x's shape and dtype), dx comes back plus it: where a
 * pre-norm block's residual stream meets the norm, one pass instead of a backward and an add.
 * On cuda, rstd is float32 (as rmsnorm made it) and dw comes back float32 (a parameter gradient).
 */
export function rmsnormBackward(dy: Tensor, x: Tensor, w: Tensor, rstd: Tensor, residualGrad?: Tensor): { dx: Tensor; dw: Tensor } {
  const op = "rmsnormBackward";
  const D = needLastDim(op, x, w, "w");
  needSameShape(op, ["dy", dy], ["x", x]);
  const inputs: [string, Tensor][] = [["dy", dy], ["x", x], ["w", w], ["rstd", rstd]];
  if (residualGrad) inputs.push(["residualGrad", residualGrad]);
  const device = deviceOfInputs(op, ...inputs);
  needSameDtype(op, ["x", x], ["dy", dy]);
  if (residualGrad) {
    needSameDtype(op, ["x", x], ["residualGrad", residualGrad]);
    needSameShape(op, ["x", x], ["residualGrad", residualGrad]);
  }
  if (device === "cuda") needDtype(op, "rstd", rstd, "float32");
  else needSameDtype(op, ["x", x], ["rstd", rstd]);
  needShape(op, "rstd", rstd, [D ? x.numel / D : 0]);
  const h = [dy.handle(op, "dy"), x.handle(op, "x"), w.handle(op, "w"), rstd.handle(op, "rstd")] as const;
  if (device === "cuda") {
    const [dx, dw] = cudaFn(op, "rmsnormBackward")(...h, residualGrad?.handle(op, "residualGrad"));
    return { dx: new Tensor(dx, x.dtype, x.shape), dw: new Tensor(dw, "float32", [D]) };
  }
  const [dxRaw, dwRaw] = loadAddon().rmsnormBackward(...h);
  const dx = new Tensor(dxRaw, x.dtype, x.shape);
  if (residualGrad) addInto(dx, residualGrad);
  return { dx, dw: new Tensor(dwRaw, x.dtype, [D]) };
}

/**
 * y = (x - mean) * rstd * w + b over the last dim; mean and rstd per row. On cuda mean and rstd
 * are float32 whatever x is.
 */
export function layernorm(x: Tensor, w: Tensor, b: Tensor, eps: number): { y: Tensor; mean: Tensor; rstd: Tensor } {
  const op = "layernorm";
  const D = needLastDim(op, x, w, "w");
  needSameDtype(op, ["x", x], ["b", b]);
  needShape(op, "b", b, [D]);
  needFinite(op, "eps", eps);
  const raw = backendFor(op, "layernorm", ["x", x], ["w", w], ["b", b]);
  const rows = [D ? x.numel / D : 0];
  const statDtype = x.device === "cuda" ? "float32" : x.dtype;
  const [y, mean, rstd] = raw(x.handle(op, "x"), w.handle(op, "w"), b.handle(op, "b"), eps);
  return { y: new Tensor(y, x.dtype, x.shape), mean: new Tensor(mean, statDtype, rows), rstd: new Tensor(rstd, statDtype, rows) };
}

/** On cuda, mean and rstd are float32 (as layernorm made them) and dw, db come back float32 (parameter gradients). */
export function layernormBackward(
  dy: Tensor,
  x: Tensor,
  w: Tensor,
  mean: Tensor,
  rstd: Tensor,
): { dx: Tensor; dw: Tensor; db: Tensor } {
  const op = "layernormBackward";
  const D = needLastDim(op, x, w, "w");
  needSameShape(op, ["dy", dy], ["x", x]);
  const raw = backendFor(op, "layernormBackward", ["dy", dy], ["x", x], ["w", w], ["mean", mean], ["rstd", rstd]);
  const cuda = x.device === "cuda";
  needSameDtype(op, ["x", x], ["dy", dy]);
  if (cuda) {
    needDtype(op, "mean", mean, "float32");
    needDtype(op, "rstd", rstd, "float32");
  } else {
    needSameDtype(op, ["x", x], ["mean", mean], ["rstd", rstd]);
  }
  const rows = [D ? x.numel / D : 0];
  needShape(op, "mean", mean, rows);
  needShape(op, "rstd", rstd, rows);
  const [dx, dw, db] = raw(dy.handle(op, "dy"), x.handle(op, "x"), w.handle(op, "w"), mean.handle(op, "mean"), rstd.handle(op, "rstd"));
  const gradDtype = cuda ? "float32" : x.dtype;
  return { dx: new Tensor(dx, x.dtype, x.shape), dw: new Tensor(dw, gradDtype, [D]), db: new Tensor(db, gradDtype, [D]) };
}

function pair(op: string, a: [string, Tensor], b: [string, Tensor]): void {
  needFloat(op, a[0], a[1]);
  needSameDtype(op, a, b);
  needSameShape(op, a, b);
}

/** h = silu(gate) * up. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  pair("swiglu", ["gate", gate], ["up", up]);
  const raw = backendFor("swiglu", "swiglu", ["gate", gate], ["up", up]);
  return new Tensor(raw(gate.handle("swiglu", "gate"), up.handle("swiglu", "up")), gate.dtype, gate.shape);
}

export function swigluBackward(dh: Tensor, gate: Tensor, up: Tensor): { dgate: Tensor; dup: Tensor } {
  const op = "swigluBackward";
  pair(op, ["gate", gate], ["up", up]);
  pair(op, ["gate", gate], ["dh", dh]);
  const [dg, du] = backendFor(op, "swigluBackward", ["dh", dh], ["gate", gate], ["up", up])(dh.handle(op, "dh"), gate.handle(op, "gate"), up.handle(op, "up"));
  return { dgate: new Tensor(dg, gate.dtype, gate.shape), dup: new Tensor(du, gate.dtype, gate.shape) };
}

/** A packed gate|up [R, 2F] (a fused gate/up projection's output): F. */
function packedWidth(op: string, gu: Tensor): number {
  needFloat(op, "gu", gu);
  needRank(op, "gu", gu, [2]);
  if (gu.shape[1]! % 2 !== 0) fail(op, `gu ${fmt(gu.shape)} must be [R, 2F]: gate, then up, in each row`);
  return gu.shape[1]! / 2;
}

/** swiglu of each row's halves of gu [R, 2F] (gate, then up) -> h [R, F]: one pass over gu on cuda. */
export function swigluPacked(gu: Tensor): Tensor {
  const op = "swigluPacked";
  const F = packedWidth(op, gu);
  if (gu.device === "cpu") {
    const [g, u] = splitColumns(gu, [F, F]) as [Tensor, Tensor];
    try {
      return swiglu(g, u);
    } finally {
      g.dispose();
      u.dispose();
    }
  }
  return new Tensor(cudaFn(op, "swigluPacked")(gu.handle(op, "gu")), gu.dtype, [gu.shape[0]!, F]);
}

/** swigluPacked's backward: dgate and dup side by side [R, 2F], as gu holds gate and up. */
export function swigluPackedBackward(dh: Tensor, gu: Tensor): Tensor {
  const op = "swigluPackedBackward";
  const F = packedWidth(op, gu);
  needSameDtype(op, ["gu", gu], ["dh", dh]);
  needShape(op, "dh", dh, [gu.shape[0]!, F]);
  if (deviceOfInputs(op, ["dh", dh], ["gu", gu]) === "cpu") {
    const [g, u] = splitColumns(gu, [F, F]) as [Tensor, Tensor];
    const { dgate, dup } = swigluBackward(dh, g, u);
    try {
      return catColumns([dgate, dup]);
    } finally {
      for (const t of [g, u, dgate, dup]) t.dispose();
    }
  }
  return new Tensor(cudaFn(op, "swigluPackedBackward")(dh.handle(op, "dh"), gu.handle(op, "gu")), gu.dtype, gu.shape);
}

/** GELU, tanh approximation (HF "gelu_new" / "gelu_pytorch_tanh", GPT-2). */
export function gelu(x: Tensor): Tensor {
  needFloat("gelu", "x", x);
  const raw = backendFor("gelu", "gelu", ["x", x]);
  return new Tensor(raw(x.handle("gelu", "x")), x.dtype, x.shape);
}

export function geluBackward(dy: Tensor, x: Tensor): Tensor {
  const op = "geluBackward";
  pair(op, ["x", x], ["dy", dy]);
  const raw = backendFor(op, "geluBackward", ["dy", dy], ["x", x]);
  return new Tensor(raw(dy.handle(op, "dy"), x.handle(op, "x")), x.dtype, x.shape);
}

/** Softmax over the last dim. */
export function softmax(x: Tensor): Tensor {
  needCpu("softmax", ["x", x]);
  needFloat("softmax", "x", x);
  if (x.shape.length < 1 || x.shape.at(-1) === 0) fail("softmax", `x must have a non-empty last dim, got ${fmt(x.shape)}`);
  return new Tensor(loadAddon().softmax(x.handle("softmax", "x")), x.dtype, x.shape);
}

/** dx = y * (dy - sum(dy * y)) given the softmax output y. */
export function softmaxBackward(dy: Tensor, y: Tensor): Tensor {
  needCpu("softmaxBackward", ["dy", dy], ["y", y]);
  pair("softmaxBackward", ["y", y], ["dy", dy]);
  if (y.shape.length < 1) fail("softmaxBackward", "y must have at least one dimension");
  return new Tensor(loadAddon().softmaxBackward(dy.handle("softmaxBackward", "dy"), y.handle("softmaxBackward", "y")), y.dtype, y.shape);
}
