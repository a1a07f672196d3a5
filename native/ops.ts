// Matmul and elementwise / reduction helpers.
import { loadAddon } from "./addon.ts";
import { Tensor, cast, copyInto, empty } from "./tensor.ts";
import { backendFor, cudaFn, deviceOfInputs } from "./cuda.ts";
import { fail, fmt, needFinite, needFloat, needRank, needSameDtype, needSameShape, needShape, sameShape } from "./check.ts";

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** On cuda: run the tiled reference GEMM even where cuBLASLt is built in (tests, benchmarks). */
  reference?: boolean;
  /** [N] of the inputs' dtype, added to every row of the product (y = x W^T + b); on cuda cuBLASLt's bias epilogue. */
  bias?: Tensor;
}

export interface MatmulIntoOptions {
  transA?: boolean;
  transB?: boolean;
  /** Add the product to out instead of overwriting it (weight gradients summed in float32). */
  accumulate?: boolean;
  /** On cuda: the tiled reference GEMM, as MatmulOptions.reference. */
  reference?: boolean;
}

interface MatmulShape {
  ta: boolean;
  tb: boolean;
  shape: number[];
}

function matmulShape(op: string, a: Tensor, b: Tensor, opts: { transA?: boolean; transB?: boolean }): MatmulShape {
  needFloat(op, "a", a);
  needSameDtype(op, ["a", a], ["b", b]);
  needRank(op, "a", a, [2, 3]);
  if (b.shape.length !== a.shape.length) fail(op, `a ${fmt(a.shape)} and b ${fmt(b.shape)} must both be 2-D or both 3-D`);
  const r = a.shape.length;
  const ta = opts.transA ?? false;
  const tb = opts.transB ?? false;
  const M = a.shape[ta ? r - 1 : r - 2]!;
  const K = a.shape[ta ? r - 2 : r - 1]!;
  const K2 = b.shape[tb ? r - 1 : r - 2]!;
  const N = b.shape[tb ? r - 2 : r - 1]!;
  if (K !== K2) fail(op, `inner dimensions differ: a ${fmt(a.shape)}${ta ? "^T" : ""} x b ${fmt(b.shape)}${tb ? "^T" : ""}`);
  if (r === 3 && a.shape[0] !== b.shape[0]) fail(op, `batch sizes differ: ${a.shape[0]} and ${b.shape[0]}`);
  return { ta, tb, shape: r === 3 ? [a.shape[0]!, M, N] : [M, N] };
}

/**
 * op(a) @ op(b): 2-D [M,K]x[K,N], or batched when both are 3-D [B,M,K]x[B,K,N], plus `bias`
 * [N] on every row when given. On cuda, cuBLASLt with fp32 accumulation (fp32 inputs: exact
 * fp32, no TF32) where the addon was built with it (`buildInfo().cublasLt`); else, or with
 * `reference`, a plain tiled GEMM.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const op = "matmul";
  const { ta, tb, shape } = matmulShape(op, a, b, opts);
  const bias = opts.bias;
  if (bias === undefined) {
    const raw = backendFor(op, "matmul", ["a", a], ["b", b]);
    return new Tensor(raw(a.handle(op, "a"), b.handle(op, "b"), ta, tb, opts.reference ?? false), a.dtype, shape);
  }
  needSameDtype(op, ["a", a], ["bias", bias]);
  needShape(op, "bias", bias, [shape.at(-1)!]);
  if (deviceOfInputs(op, ["a", a], ["b", b], ["bias", bias]) === "cuda") {
    const raw = cudaFn(op, "matmul");
    return new Tensor(raw(a.handle(op, "a"), b.handle(op, "b"), ta, tb, opts.reference ?? false, bias.handle(op, "bias")), a.dtype, shape);
  }
  const y = new Tensor(loadAddon().matmul(a.handle(op, "a"), b.handle(op, "b"), ta, tb), a.dtype, shape);
  try {
    return addBias(y, bias);
  } finally {
    y.dispose();
  }
}

/**
 * out = op(a) @ op(b), or out += op(a) @ op(b) with `accumulate`; out has the product's shape
 * and is float32 or the inputs' dtype (a bfloat16 product into a float32 gradient: on cuda
 * cuBLASLt accumulates in fp32 straight into out, beta 1). On the CPU the product is formed,
 * then cast and copied or added.
 */
export function matmulInto(out: Tensor, a: Tensor, b: Tensor, opts: MatmulIntoOptions = {}): void {
  const op = "matmulInto";
  const { ta, tb, shape } = matmulShape(op, a, b, opts);
  needFloat(op, "out", out);
  needShape(op, "out", out, shape);
  if (out.dtype !== "float32" && out.dtype !== a.dtype) fail(op, `out must be float32 or ${a.dtype}, got ${out.dtype}`);
  const accumulate = opts.accumulate ?? false;
  if (deviceOfInputs(op, ["out", out], ["a", a], ["b", b]) === "cuda") {
    cudaFn(op, "matmulInto")(out.handle(op, "out"), a.handle(op, "a"), b.handle(op, "b"), ta, tb, accumulate, opts.reference ?? false);
    return;
  }
  const product = new Tensor(loadAddon().matmul(a.handle(op, "a"), b.handle(op, "b"), ta, tb), a.dtype, shape);
  const same = product.dtype === out.dtype ? product : cast(product, out.dtype);
  try {
    if (accumulate) addInto(out, same);
    else copyInto(out, same);
  } finally {
    if (same !== product) same.dispose();
    product.dispose();
  }
}

function binary(op: "add" | "mul", a: Tensor, b: Tensor): Tensor {
  needFloat(op, "a", a);
  needSameDtype(op, ["a", a], ["b", b]);
  needSameShape(op, ["a", a], ["b", b]);
  const raw = backendFor(op, op, ["a", a], ["b", b]);
  return new Tensor(raw(a.handle(op, "a"), b.handle(op, "b")), a.dtype, a.shape);
}

export function add(a: Tensor, b: Tensor): Tensor {
  return binary("add", a, b);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  return binary("mul", a, b);
}

export function scale(a: Tensor, s: number): Tensor {
  needFloat("scale", "a", a);
  needFinite("scale", "s", s);
  return new Tensor(backendFor("scale", "scale", ["a", a])(a.handle("scale", "a"), s), a.dtype, a.shape);
}

/** t *= s, in place. */
export function scaleInPlace(t: Tensor, s: number): void {
  needFloat("scaleInPlace", "t", t);
  needFinite("scaleInPlace", "s", s);
  backendFor("scaleInPlace", "scaleInPlace", ["t", t])(t.handle("scaleInPlace", "t"), s);
}

/**
 * dst += alpha * src, in place (how callers accumulate parameter gradients). On cuda the two
 * may differ in float dtype (a bfloat16 gradient into a float32 accumulator).
 */
export function addInto(dst: Tensor, src: Tensor, alpha = 1): void {
  const op = "addInto";
  needFloat(op, "dst", dst);
  needFloat(op, "src", src);
  const cuda = deviceOfInputs(op, ["dst", dst], ["src", src]) === "cuda";
  if (!cuda) needSameDtype(op, ["dst", dst], ["src", src]);
  needSameShape(op, ["dst", dst], ["src", src]);
  needFinite(op, "alpha", alpha);
  const raw = cuda ? cudaFn(op, "addInto") : loadAddon().addInto;
  raw(dst.handle(op, "dst"), src.handle(op, "src"), alpha);
}

/** x[..., N] + b[N]. */
export function addBias(x: Tensor, b: Tensor): Tensor {
  const op = "addBias";
  needFloat(op, "x", x);
  needSameDtype(op, ["x", x], ["b", b]);
  if (b.shape.length !== 1 || x.shape.length < 1 || x.shape.at(-1) !== b.shape[0]) {
    fail(op, `b must be [N] for x [..., N]; got x ${fmt(x.shape)}, b ${fmt(b.shape)}`);
  }
  const raw = backendFor(op, "addBias", ["x", x], ["b", b]);
  return new Tensor(raw(x.handle(op, "x"), b.handle(op, "b")), x.dtype, x.shape);
}

/**
 * Sum over every leading dimension: dy[..., N] -> [N] (a bias gradient). On cuda the result is
 * float32 whatever dy is (a parameter gradient), summed in fp64 in a fixed order.
 */
export function sumRows(dy: Tensor): Tensor {
  needFloat("sumRows", "dy", dy);
  if (dy.shape.length < 1) fail("sumRows", "dy must have at least one dimension");
  const raw = backendFor("sumRows", "sumRows", ["dy", dy]);
  return new Tensor(raw(dy.handle("sumRows", "dy")), dy.device === "cuda" ? "float32" : dy.dtype, [dy.shape.at(-1)!]);
}

function copyColumns(op: string, one: Tensor, parts: readonly Tensor[], split: boolean): void {
  const named = parts.map((p, i): [string, Tensor] => [`parts[${i}]`, p]);
  const raw = backendFor(op, "copyColumns", [split ? "x" : "out", one], ...named);
  raw(one.handle(op, split ? "x" : "out"), named.map(([n, p]) => p.handle(op, n)), split, op);
}

function needColumnParts(op: string, widths: readonly number[]): void {
  const most = loadAddon().maxColumnParts;
  if (widths.length < 1 || widths.length > most) fail(op, `1 to ${most} parts, got ${widths.length}`);
  for (const w of widths) if (!Number.isInteger(w) || w < 0) fail(op, `widths must be integers >= 0, got [${widths.join(", ")}]`);
}

/**
 * x [R, w_0 + w_1 + ...] split by columns into fresh tensors [R, w_i] (copies): a fused
 * projection's output into q, k and v. One launch on cuda.
 */
export function splitColumns(x: Tensor, widths: readonly number[]): Tensor[] {
  return splitColumnsAs("splitColumns", x, widths);
}

function splitColumnsAs(op: string, x: Tensor, widths: readonly number[]): Tensor[] {
  needRank(op, "x", x, [2]);
  needColumnParts(op, widths);
  const total = widths.reduce((a, w) => a + w, 0);
  if (total !== x.shape[1]) fail(op, `widths [${widths.join(", ")}] add up to ${total}, not x's ${x.shape[1]} columns`);
  const parts = widths.map((w) => empty([x.shape[0]!, w], x.dtype, x.device));
  copyColumns(op, x, parts, true);
  return parts;
}

/** Tensors [R, w_i] side by side -> [R, w_0 + w_1 + ...] (splitColumns' inverse). */
export function catColumns(parts: readonly Tensor[]): Tensor {
  return catColumnsAs("catColumns", parts);
}

function catColumnsAs(op: string, parts: readonly Tensor[]): Tensor {
  needColumnParts(op, parts.map((p) => p.shape[1] ?? 0));
  const first = parts[0]!;
  for (const [i, p] of parts.entries()) {
    needRank(op, `parts[${i}]`, p, [2]);
    needSameDtype(op, ["parts[0]", first], [`parts[${i}]`, p]);
    if (p.shape[0] !== first.shape[0]) fail(op, `parts[${i}] has ${p.shape[0]} rows, parts[0] ${first.shape[0]}`);
  }
  const out = empty([first.shape[0]!, parts.reduce((a, p) => a + p.shape[1]!, 0)], first.dtype, first.device);
  copyColumns(op, out, parts, false);
  return out;
}

/** Tensors of one trailing shape stacked along dim 0 (rows one after another): [Wq; Wk; Wv]. */
export function catRows(parts: readonly Tensor[]): Tensor {
  const op = "catRows";
  const first = parts[0];
  if (!first) fail(op, "no parts");
  for (const [i, p] of parts.entries()) {
    needSameDtype(op, ["parts[0]", first], [`parts[${i}]`, p]);
    if (p.shape.length < 1 || !sameShape(p.shape.slice(1), first.shape.slice(1))) {
      fail(op, `parts[${i}] ${fmt(p.shape)} does not match parts[0] ${fmt(first.shape)} past dim 0`);
    }
  }
  // Rows one after another are the parts' memory one after another: a column split of one row.
  const flat = parts.map((p) => p.reshape([1, p.numel]));
  try {
    const one = catColumnsAs(op, flat);
    const out = one.reshape([parts.reduce((a, p) => a + p.shape[0]!, 0), ...first.shape.slice(1)]);
    one.dispose();
    return out;
  } finally {
    for (const f of flat) f.dispose();
  }
}

/** x split along dim 0 into fresh tensors of rows[i] rows each (catRows' inverse). */
export function splitRows(x: Tensor, rows: readonly number[]): Tensor[] {
  const op = "splitRows";
  if (x.shape.length < 1) fail(op, "x must have at least one dimension");
  needColumnParts(op, rows);
  const total = rows.reduce((a, r) => a + r, 0);
  if (total !== x.shape[0]) fail(op, `rows [${rows.join(", ")}] add up to ${total}, not x's ${x.shape[0]}`);
  const inner = x.numel / Math.max(x.shape[0]!, 1);
  const flat = x.reshape([1, x.numel]);
  try {
    return splitColumnsAs(op, flat, rows.map((r) => r * inner)).map((p, i) => {
      const out = p.reshape([rows[i]!, ...x.shape.slice(1)]);
      p.dispose();
      return out;
    });
  } finally {
    flat.dispose();
  }
}

/** Sum of squares, accumulated in float64 (on cuda: waits for the device to read it). */
export function sumSquares(t: Tensor): number {
  needFloat("sumSquares", "t", t);
  return backendFor("sumSquares", "sumSquares", ["t", t])(t.handle("sumSquares", "t"));
}

/**
 * The sum of squares over all tensors (a global gradient norm's square), in float64. The
 * tensors share a device; on cuda the host waits once, for the whole sum; on the CPU it adds
 * sumSquares tensor by tensor, in order.
 */
export function sumSquaresOf(ts: readonly Tensor[]): number {
  return sumSquaresOfQueued(ts).read();
}

/** A sum of squares being computed; `read` waits for it (once). */
export interface PendingSum {
  read(): number;
}

/**
 * sumSquaresOf, queued: on cuda the sum stays on the device until `read`, so the host can do
 * other work (the optimizer's preparation) while the device computes it. Elsewhere it is
 * computed at once.
 */
export function sumSquaresOfQueued(ts: readonly Tensor[]): PendingSum {
  const op = "sumSquaresOf";
  ts.forEach((t, i) => needFloat(op, `ts[${i}]`, t));
  if (ts.length === 0 || deviceOfInputs(op, ...ts.map((t, i): [string, Tensor] => [`ts[${i}]`, t])) !== "cuda") {
    let s = 0;
    for (const t of ts) s += sumSquares(t);
    return { read: () => s };
  }
  const sum = new Tensor(cudaFn(op, "sumSquaresManyQueued")(ts.map((t, i) => t.handle(op, `ts[${i}]`))), "float64", [1]);
  return {
    read() {
      try {
        return (sum.toArray() as Float64Array)[0]!;
      } finally {
        sum.dispose();
      }
    },
  };
}

/** sqrt of sumSquaresOf: the global norm over all tensors. */
export function globalNorm(ts: readonly Tensor[]): number {
  return Math.sqrt(sumSquaresOf(ts));
}
