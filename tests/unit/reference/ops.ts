// Plain float64 reference implementations of the native ops: straightforward loops written
// from the definitions, used to check the kernels. Arrays are row-major.
export type F = Float64Array;

/** Deterministic test data: the same small generator generation samples with. */
import { mulberry32 as rng } from "../../../models/index.ts";

export { rng };

export function randArray(n: number, seed: number, scale = 1): F {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

/** op(A)[M,K] @ op(B)[K,N]. */
export function matmul(a: F, b: F, M: number, K: number, N: number, transA = false, transB = false): F {
  const c = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += (transA ? a[k * M + i]! : a[i * K + k]!) * (transB ? b[j * K + k]! : b[k * N + j]!);
      c[i * N + j] = s;
    }
  return c;
}

export function rmsnorm(x: F, w: F, eps: number): F {
  const D = w.length;
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / D; r++) {
    let ss = 0;
    for (let j = 0; j < D; j++) ss += x[r * D + j]! ** 2;
    const rs = 1 / Math.sqrt(ss / D + eps);
    for (let j = 0; j < D; j++) y[r * D + j] = x[r * D + j]! * rs * w[j]!;
  }
  return y;
}

export function layernorm(x: F, w: F, b: F, eps: number): F {
  const D = w.length;
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / D; r++) {
    let mu = 0;
    for (let j = 0; j < D; j++) mu += x[r * D + j]!;
    mu /= D;
    let v = 0;
    for (let j = 0; j < D; j++) v += (x[r * D + j]! - mu) ** 2;
    const rs = 1 / Math.sqrt(v / D + eps);
    for (let j = 0; j < D; j++) y[r * D + j] = (x[r * D + j]! - mu) * rs * w[j]! + b[j]!;
  }
  return y;
}

export function embedding(w: F, ids: Int32Array, D: number): F {
  const y = new Float64Array(ids.length * D);
  ids.forEach((id, t) => {
    for (let j = 0; j < D; j++) y[t * D + j] = w[id * D + j]!;
  });
  return y;
}

export const silu = (g: number) => g / (1 + Math.exp(-g));
export const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

export function softmax(x: F, N: number): F {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / N; r++) {
    let m = -Infinity;
    for (let j = 0; j < N; j++) m = Math.max(m, x[r * N + j]!);
    let s = 0;
    for (let j = 0; j < N; j++) s += Math.exp(x[r * N + j]! - m);
    for (let j = 0; j < N; j++) y[r * N + j] = Math.exp(x[r * N + j]! - m) / s;
  }
  return y;
}

/** HF apply_rotary_pos_emb with rotate_half: x*cos + rotate_half(x)*sin, cos/sin times scaling. */
export function rope(x: F, positions: Int32Array, H: number, Dh: number, invFreq: ArrayLike<number>, scaling = 1): F {
  const y = new Float64Array(x.length);
  const half = Dh / 2;
  for (let t = 0; t < positions.length; t++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Dh; i++) {
        const f = invFreq[i % half]!;
        const ang = positions[t]! * f;
        const base = (t * H + h) * Dh;
        const rot = i < half ? -x[base + i + half]! : x[base + i - half]!;
        y[base + i] = x[base + i]! * Math.cos(ang) * scaling + rot * Math.sin(ang) * scaling;
      }
  return y;
}

/** transformers' _compute_llama3_parameters, transcribed. */
export function llama3InvFreq(dim: number, base: number, factor: number, low: number, high: number, oldCtx: number): F {
  const out = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const invFreq = 1 / base ** ((2 * i) / dim);
    const wavelen = (2 * Math.PI) / invFreq;
    let v = wavelen > oldCtx / low ? invFreq / factor : invFreq;
    const smooth = (oldCtx / wavelen - low) / (high - low);
    const smoothed = ((1 - smooth) * v) / factor + smooth * v;
    const isMedium = !(wavelen < oldCtx / high) && !(wavelen > oldCtx / low);
    if (isMedium) v = smoothed;
    out[i] = v;
  }
  return out;
}

/** transformers' _compute_yarn_parameters (defaults: beta_fast 32, beta_slow 1, truncate), transcribed. */
export function yarnInvFreq(dim: number, base: number, factor: number, origMax: number): { invFreq: F; attentionFactor: number } {
  const attentionFactor = factor <= 1 ? 1 : 0.1 * Math.log(factor) + 1;
  const findCorrectionDim = (rot: number) => (dim * Math.log(origMax / (rot * 2 * Math.PI))) / (2 * Math.log(base));
  const low = Math.max(Math.floor(findCorrectionDim(32)), 0);
  let high = Math.min(Math.ceil(findCorrectionDim(1)), dim - 1);
  if (low === high) high += 0.001;
  const invFreq = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const posFreq = base ** ((2 * i) / dim);
    const extra = 1 / posFreq;
    const inter = 1 / (factor * posFreq);
    const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
    const extraFactor = 1 - ramp;
    invFreq[i] = inter * (1 - extraFactor) + extra * extraFactor;
  }
  return { invFreq, attentionFactor };
}

/** Naive attention: softmax(q k^T * scale + mask) v per sequence and head; returns o and lse[Hq,T]. */
export function attention(
  q: F, k: F, v: F, cu: Int32Array, T: number, Hq: number, Hkv: number, Dh: number,
  causal: boolean, window: number, scale: number,
): { o: F; lse: F } {
  const o = new Float64Array(T * Hq * Dh);
  const lse = new Float64Array(Hq * T);
  for (let b = 0; b + 1 < cu.length; b++) {
    const s0 = cu[b]!, len = cu[b + 1]! - s0;
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / (Hq / Hkv));
      for (let i = 0; i < len; i++) {
        const scores: number[] = [];
        for (let j = 0; j < len; j++) {
          const visible = (!causal || j <= i) && (window <= 0 || j > i - window);
          if (!visible) {
            scores.push(-Infinity);
            continue;
          }
          let s = 0;
          for (let d = 0; d < Dh; d++) s += q[((s0 + i) * Hq + h) * Dh + d]! * k[((s0 + j) * Hkv + g) * Dh + d]!;
          scores.push(s * scale);
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, c) => a + c, 0);
        lse[h * T + s0 + i] = m + Math.log(z);
        for (let d = 0; d < Dh; d++) {
          let acc = 0;
          for (let j = 0; j < len; j++) acc += (e[j]! / z) * v[((s0 + j) * Hkv + g) * Dh + d]!;
          o[((s0 + i) * Hq + h) * Dh + d] = acc;
        }
      }
    }
  }
  return { o, lse };
}

/** Cross-entropy of full logits x w^T: summed loss, count, and gradients of gradScale * loss. */
export function linearCrossEntropy(
  x: F, w: F, labels: Int32Array, T: number, D: number, V: number, ignore: number, gradScale: number,
): { loss: number; count: number; dx: F; dw: F } {
  const logits = matmul(x, w, T, D, V, false, true);
  const dlog = new Float64Array(T * V);
  let loss = 0, count = 0;
  for (let t = 0; t < T; t++) {
    if (labels[t] === ignore) continue;
    count++;
    const row = logits.subarray(t * V, (t + 1) * V);
    const m = Math.max(...row);
    const z = row.reduce((a, c) => a + Math.exp(c - m), 0);
    loss += m + Math.log(z) - row[labels[t]!]!;
    for (let j = 0; j < V; j++) dlog[t * V + j] = (Math.exp(row[j]! - m) / z - (j === labels[t] ? 1 : 0)) * gradScale;
  }
  return { loss, count, dx: matmul(dlog, w, T, V, D), dw: matmul(dlog, x, V, T, D, true) };
}

/** torch.optim.AdamW's single-tensor update, in float64. */
export function adamw(
  p: F, g: F, m: F, v: F, lr: number, b1: number, b2: number, eps: number, wd: number, step: number,
): void {
  const bc1 = 1 - b1 ** step, bc2 = 1 - b2 ** step;
  for (let i = 0; i < p.length; i++) {
    p[i] = p[i]! * (1 - lr * wd);
    m[i] = m[i]! * b1 + (1 - b1) * g[i]!;
    v[i] = v[i]! * b2 + (1 - b2) * g[i]! * g[i]!;
    const denom = Math.sqrt(v[i]!) / Math.sqrt(bc2) + eps;
    p[i] = p[i]! - (lr / bc1) * (m[i]! / denom);
  }
}

/** zeropower_via_newtonschulz5 from Keller Jordan's Muon, in float64. */
export function newtonSchulz5(G: F, M: number, N: number, steps = 5): F {
  const [a, b, c] = [3.4445, -4.775, 2.0315];
  const tr = M > N;
  const m = tr ? N : M, n = tr ? M : N;
  let X = new Float64Array(m * n);
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) X[tr ? j * n + i : i * n + j] = G[i * N + j]!;
  const norm = Math.sqrt(X.reduce((s, x) => s + x * x, 0)) + 1e-7;
  X = X.map((x) => x / norm);
  for (let s = 0; s < steps; s++) {
    const A = matmul(X, X, m, n, m, false, true);
    const AA = matmul(A, A, m, m, m);
    const B = A.map((x, i) => b * x + c * AA[i]!);
    const BX = matmul(B, X, m, m, n);
    X = X.map((x, i) => a * x + BX[i]!);
  }
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) out[i * N + j] = X[tr ? j * n + i : i * n + j]!;
  return out;
}

/** Naive attention backward: P = softmax(S), dV = P^T dO, dP = dO V^T, dS = P*(dP - rowsum(dP*P)), dQ = dS K * scale, dK = dS^T Q * scale. */
export function attentionBackward(
  dout: F, q: F, k: F, v: F, cu: Int32Array, T: number, Hq: number, Hkv: number, Dh: number,
  causal: boolean, window: number, scale: number,
): { dq: F; dk: F; dv: F } {
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  const qi = (t: number, h: number, d: number) => (t * Hq + h) * Dh + d;
  const ki = (t: number, h: number, d: number) => (t * Hkv + h) * Dh + d;
  for (let b = 0; b + 1 < cu.length; b++) {
    const s0 = cu[b]!, len = cu[b + 1]! - s0;
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / (Hq / Hkv));
      for (let i = 0; i < len; i++) {
        const p = new Float64Array(len);
        const vis = (j: number) => (!causal || j <= i) && (window <= 0 || j > i - window);
        let m = -Infinity;
        for (let j = 0; j < len; j++) {
          if (!vis(j)) continue;
          let s = 0;
          for (let d = 0; d < Dh; d++) s += q[qi(s0 + i, h, d)]! * k[ki(s0 + j, g, d)]!;
          p[j] = s * scale;
          m = Math.max(m, p[j]!);
        }
        let z = 0;
        for (let j = 0; j < len; j++) z += vis(j) ? Math.exp(p[j]! - m) : 0;
        for (let j = 0; j < len; j++) p[j] = vis(j) ? Math.exp(p[j]! - m) / z : 0;
        const dp = new Float64Array(len);
        let rowDot = 0;
        for (let j = 0; j < len; j++) {
          for (let d = 0; d < Dh; d++) dp[j] = dp[j]! + dout[qi(s0 + i, h, d)]! * v[ki(s0 + j, g, d)]!;
          rowDot += dp[j]! * p[j]!;
        }
        for (let j = 0; j < len; j++) {
          const ds = p[j]! * (dp[j]! - rowDot) * scale;
          for (let d = 0; d < Dh; d++) {
            dv[ki(s0 + j, g, d)] = dv[ki(s0 + j, g, d)]! + p[j]! * dout[qi(s0 + i, h, d)]!;
            dq[qi(s0 + i, h, d)] = dq[qi(s0 + i, h, d)]! + ds * k[ki(s0 + j, g, d)]!;
            dk[ki(s0 + j, g, d)] = dk[ki(s0 + j, g, d)]! + ds * q[qi(s0 + i, h, d)]!;
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}
