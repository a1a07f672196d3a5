// Float64 references of the optimizers, written from the papers' and PyTorch's code (not
// from native/): torch.optim.AdamW's single-tensor path, and Muon as in Moonlight's
// reference implementation (Keller Jordan's quintic Newton-Schulz). Shared by optim-*.test.ts.
import { Param } from "../../models/index.ts";
import { tensor, type DType } from "../../native/index.ts";

/** Deterministic uniform(-1, 1) values (mulberry32), so tests need no fixtures. */
export function rand(n: number, seed: number, scale = 1): Float64Array {
  let a = seed >>> 0;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** A real model parameter holding `values` in `dtype`. */
export function param(name: string, values: Float64Array, shape: number[], dtype: DType = "float32"): Param {
  return new Param(name, tensor(values, shape, { dtype }), shape.length >= 2);
}

/** Sets p's gradient to exactly `g` (in p's dtype). */
export function setGrad(p: Param, g: Float64Array): void {
  p.zeroGrad();
  p.accumulate(tensor(g, [...p.shape], { dtype: p.dtype }));
}

export const values = (t: { toArray(): ArrayLike<unknown> }): Float64Array => Float64Array.from(t.toArray() as ArrayLike<number>);

/** Rounds each value to float32, as storing a float64 reference in an fp32 tensor would. */
export const toF32 = (a: Float64Array): Float64Array => Float64Array.from(Float32Array.from(a));

export interface AdamWRefState {
  step: number;
  m: Float64Array;
  v: Float64Array;
}

/** torch.optim.AdamW (_single_tensor_adamw, amsgrad off), in place on p. */
export function adamwRef(
  p: Float64Array,
  g: Float64Array,
  s: AdamWRefState,
  h: { lr: number; betas: readonly [number, number]; eps: number; weightDecay: number },
): void {
  const [b1, b2] = h.betas;
  s.step += 1;
  const bc1 = 1 - b1 ** s.step;
  const bc2Sqrt = Math.sqrt(1 - b2 ** s.step);
  const stepSize = h.lr / bc1;
  for (let i = 0; i < p.length; i++) {
    p[i] = p[i]! * (1 - h.lr * h.weightDecay);
    s.m[i] = s.m[i]! + (1 - b1) * (g[i]! - s.m[i]!); // exp_avg.lerp_(grad, 1 - beta1)
    s.v[i] = s.v[i]! * b2 + (1 - b2) * g[i]! * g[i]!;
    const denom = Math.sqrt(s.v[i]!) / bc2Sqrt + h.eps;
    p[i] = p[i]! - stepSize * (s.m[i]! / denom);
  }
}

/** C[m,n] = A[m,k] B[k,n], row-major. */
function mm(A: Float64Array, B: Float64Array, m: number, k: number, n: number): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let l = 0; l < k; l++) {
      const a = A[i * k + l]!;
      for (let j = 0; j < n; j++) C[i * n + j] = C[i * n + j]! + a * B[l * n + j]!;
    }
  return C;
}

function transpose(A: Float64Array, m: number, n: number): Float64Array {
  const T = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) T[j * m + i] = A[i * n + j]!;
  return T;
}

/** Moonlight's zeropower_via_newtonschulz5 (in float64 here; bf16 on their GPUs). */
export function newtonSchulz5Ref(G: Float64Array, rows: number, cols: number, steps = 5): Float64Array {
  const [a, b, c] = [3.4445, -4.775, 2.0315];
  const tall = rows > cols;
  let X = tall ? transpose(G, rows, cols) : Float64Array.from(G);
  const [m, n] = tall ? [cols, rows] : [rows, cols];
  let norm = 0;
  for (const x of X) norm += x * x;
  norm = Math.sqrt(norm) + 1e-7;
  X = X.map((x) => x / norm);
  for (let s = 0; s < steps; s++) {
    const A = mm(X, transpose(X, m, n), m, n, m);
    const AA = mm(A, A, m, m, m);
    const B = A.map((x, i) => b * x + c * AA[i]!);
    const BX = mm(B, X, m, m, n);
    X = X.map((x, i) => a * x + BX[i]!);
  }
  return tall ? transpose(X, m, n) : X;
}

/** Moonlight's Muon step for one matrix, in place on p and buf. */
export function muonRef(
  p: Float64Array,
  g: Float64Array,
  buf: Float64Array,
  rows: number,
  cols: number,
  h: { lr: number; momentum: number; nesterov: boolean; weightDecay: number; nsSteps?: number },
): void {
  for (let i = 0; i < buf.length; i++) buf[i] = buf[i]! * h.momentum + g[i]!;
  const u0 = h.nesterov ? g.map((x, i) => x + h.momentum * buf[i]!) : Float64Array.from(buf);
  const u = newtonSchulz5Ref(u0, rows, cols, h.nsSteps ?? 5);
  const adjustedLr = h.lr * 0.2 * Math.sqrt(Math.max(rows, cols));
  for (let i = 0; i < p.length; i++) p[i] = p[i]! * (1 - h.lr * h.weightDecay) - adjustedLr * u[i]!;
}

/** max |got - want| / (atol + rtol |want|) must be <= 1. */
export function assertNear(got: ArrayLike<number>, want: ArrayLike<number>, tol: { rtol: number; atol: number }, label: string): void {
  if (got.length !== want.length) throw new Error(`${label}: length ${got.length} != ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= tol.atol + tol.rtol * Math.abs(want[i]!))) {
      throw new Error(`${label}: element ${i}: got ${got[i]}, want ${want[i]} (|diff| ${d} > atol ${tol.atol} + rtol ${tol.rtol} * |want|)`);
    }
  }
}
