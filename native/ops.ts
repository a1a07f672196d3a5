// Matmul and elementwise / reduction helpers.
import { loadAddon } from "./addon.ts";
import { Tensor } from "./tensor.ts";
import { backendFor, cudaAddon, deviceOfInputs } from "./cuda.ts";
import { fail, fmt, needCpu, needFinite, needFloat, needRank, needSameDtype, needSameShape } from "./check.ts";

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** On cuda: run the tiled reference GEMM even where cuBLASLt is built in (tests, benchmarks). */
  reference?: boolean;
}

/**
 * op(a) @ op(b): 2-D [M,K]x[K,N], or batched when both are 3-D [B,M,K]x[B,K,N]. On cuda,
 * cuBLASLt with fp32 accumulation (fp32 inputs: exact fp32, no TF32) where the addon was built
 * with it (`buildInfo().cublasLt`); else, or with `reference`, a plain tiled GEMM.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const op = "matmul";
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
  const shape = r === 3 ? [a.shape[0]!, M, N] : [M, N];
  const raw = backendFor(op, "matmul", ["a", a], ["b", b]);
  return new Tensor(raw(a.handle(op, "a"), b.handle(op, "b"), ta, tb, opts.reference ?? false), a.dtype, shape);
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
  const raw = cuda ? cudaAddon(op).addInto : loadAddon().addInto;
  raw(dst.handle(op, "dst"), src.handle(op, "src"), alpha);
}

/** x[..., N] + b[N]. */
export function addBias(x: Tensor, b: Tensor): Tensor {
  const op = "addBias";
  needCpu(op, ["x", x], ["b", b]);
  needFloat(op, "x", x);
  needSameDtype(op, ["x", x], ["b", b]);
  if (b.shape.length !== 1 || x.shape.length < 1 || x.shape.at(-1) !== b.shape[0]) {
    fail(op, `b must be [N] for x [..., N]; got x ${fmt(x.shape)}, b ${fmt(b.shape)}`);
  }
  return new Tensor(loadAddon().addBias(x.handle(op, "x"), b.handle(op, "b")), x.dtype, x.shape);
}

/** Sum over every leading dimension: dy[..., N] -> [N] (a bias gradient). */
export function sumRows(dy: Tensor): Tensor {
  needCpu("sumRows", ["dy", dy]);
  needFloat("sumRows", "dy", dy);
  if (dy.shape.length < 1) fail("sumRows", "dy must have at least one dimension");
  return new Tensor(loadAddon().sumRows(dy.handle("sumRows", "dy")), dy.dtype, [dy.shape.at(-1)!]);
}

/** Sum of squares, accumulated in float64 (on cuda: waits for the device to read it). */
export function sumSquares(t: Tensor): number {
  needFloat("sumSquares", "t", t);
  return backendFor("sumSquares", "sumSquares", ["t", t])(t.handle("sumSquares", "t"));
}

/**
 * sqrt of the sum of squares over all tensors (the global gradient norm), in float64. The
 * tensors share a device; on cuda the host waits once, for the whole sum.
 */
export function globalNorm(ts: readonly Tensor[]): number {
  const op = "globalNorm";
  ts.forEach((t, i) => needFloat(op, `ts[${i}]`, t));
  if (deviceOfInputs(op, ...ts.map((t, i): [string, Tensor] => [`ts[${i}]`, t])) === "cuda") {
    return Math.sqrt(cudaAddon(op).sumSquaresMany(ts.map((t, i) => t.handle(op, `ts[${i}]`))));
  }
  let s = 0;
  for (const t of ts) s += sumSquares(t);
  return Math.sqrt(s);
}
