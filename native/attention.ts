// Causal attention over packed variable-length sequences (flash-style, grouped-query heads,
// optional sliding window). Layouts: q[T,Hq,Dh], k/v[T,Hkv,Dh], cuSeqlens int32[B+1] with
// cuSeqlens[0] = 0 and cuSeqlens[B] = T; lse[Hq,T].
// On cuda q/k/v are bfloat16 (head dim 64 or 128) and lse is float32. The offsets are validated
// on the host: given as `cuSeqlensHost` (a packed batch has them) nothing waits; otherwise the
// binding copies the B+1 offsets back, and the host waits for the device there.
import { backendFor } from "./cuda.ts";
import type { DType } from "./dtype.ts";
import { Tensor } from "./tensor.ts";
import { fail, fmt, needDtype, needFloat, needRank, needSameDtype, needSameShape } from "./check.ts";

export interface AttentionOptions {
  causal: boolean;
  /** Sliding window w: key j is visible to query i iff i - w < j <= i (HF/Mistral semantics). */
  window?: number;
  /** Softmax scale; 1/sqrt(Dh) when absent. */
  scale?: number;
  /**
   * The same offsets as cuSeqlens, on the host: on cuda they are validated and used for the
   * grid instead of reading cuSeqlens back (no wait for the device). The caller vouches that
   * they equal cuSeqlens; the CPU backend reads cuSeqlens itself.
   */
  cuSeqlensHost?: Int32Array;
}

function geometry(op: string, q: Tensor, k: Tensor, v: Tensor, cu: Tensor, opts: AttentionOptions): { window: number; scale: number } {
  needFloat(op, "q", q);
  needSameDtype(op, ["q", q], ["k", k], ["v", v]);
  needRank(op, "q", q, [3]);
  needRank(op, "k", k, [3]);
  needSameShape(op, ["k", k], ["v", v]);
  const [T, Hq, Dh] = q.shape as [number, number, number];
  const [Tk, Hkv, Dk] = k.shape as [number, number, number];
  if (Tk !== T || Dk !== Dh) fail(op, `k ${fmt(k.shape)} must be [T=${T}, Hkv, Dh=${Dh}] for q ${fmt(q.shape)}`);
  if (Hkv === 0 || Hq % Hkv !== 0) fail(op, `query heads (${Hq}) must be a multiple of kv heads (${Hkv})`);
  needDtype(op, "cuSeqlens", cu, "int32");
  needRank(op, "cuSeqlens", cu, [1]);
  if (cu.shape[0]! < 2) fail(op, "cuSeqlens must hold B+1 >= 2 offsets");
  const window = opts.window ?? 0;
  if (!Number.isInteger(window) || window < 0) fail(op, `window must be a positive integer, got ${window}`);
  if (window > 0 && !opts.causal) fail(op, "a sliding window needs causal attention");
  const scale = opts.scale ?? 1 / Math.sqrt(Dh);
  if (opts.cuSeqlensHost && opts.cuSeqlensHost.length !== cu.shape[0]) {
    fail(op, `cuSeqlensHost holds ${opts.cuSeqlensHost.length} offsets, cuSeqlens ${cu.shape[0]}`);
  }
  if (!Number.isFinite(scale)) fail(op, `scale must be finite, got ${scale}`);
  if (q.device === "cuda") {
    if (q.dtype !== "bfloat16") fail(op, `q, k, v are ${q.dtype}, but attention on cuda takes bfloat16 (cast them first)`);
    if (Dh !== 64 && Dh !== 128) fail(op, `head dim ${Dh} is not supported on cuda (64 or 128)`);
  }
  return { window, scale };
}

/** The log-sum-exp's dtype: float32 on cuda (bf16 would cost the backward its precision), else q's. */
function lseDtype(q: Tensor): DType {
  return q.device === "cuda" ? "float32" : q.dtype;
}

export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  cuSeqlens: Tensor,
  opts: AttentionOptions,
): { o: Tensor; lse: Tensor } {
  const op = "attention";
  const raw = backendFor(op, "attention", ["q", q], ["k", k], ["v", v], ["cuSeqlens", cuSeqlens]);
  const { window, scale } = geometry(op, q, k, v, cuSeqlens, opts);
  const [o, lse] = raw(
    q.handle(op, "q"),
    k.handle(op, "k"),
    v.handle(op, "v"),
    cuSeqlens.handle(op, "cuSeqlens"),
    opts.causal,
    window,
    scale,
    opts.cuSeqlensHost,
  );
  return { o: new Tensor(o, q.dtype, q.shape), lse: new Tensor(lse, lseDtype(q), [q.shape[1]!, q.shape[0]!]) };
}

/**
 * dq, dk, dv in q's dtype; with `float32Grads` on cuda, float32: the kernels' fp32 sums themselves
 * (views of one buffer; the cast pass to bfloat16 is skipped), for a caller that reads them once
 * (ropeQKVBackwardCat). The CPU's are in q's dtype (float32 or float64) either way.
 */
export function attentionBackward(
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  cuSeqlens: Tensor,
  opts: AttentionOptions,
  float32Grads = false,
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const op = "attentionBackward";
  const raw = backendFor(op, "attentionBackward", ["dout", dout], ["q", q], ["k", k], ["v", v], ["o", o], ["lse", lse], ["cuSeqlens", cuSeqlens]);
  const { window, scale } = geometry(op, q, k, v, cuSeqlens, opts);
  needSameShape(op, ["dout", dout], ["q", q]);
  needSameShape(op, ["o", o], ["q", q]);
  needSameDtype(op, ["q", q], ["dout", dout], ["o", o]);
  needDtype(op, "lse", lse, lseDtype(q));
  if (lse.shape.length !== 2 || lse.shape[0] !== q.shape[1] || lse.shape[1] !== q.shape[0]) {
    fail(op, `lse must be [Hq, T] = [${q.shape[1]}, ${q.shape[0]}], got ${fmt(lse.shape)}`);
  }
  const [dq, dk, dv] = raw(
    dout.handle(op, "dout"),
    q.handle(op, "q"),
    k.handle(op, "k"),
    v.handle(op, "v"),
    o.handle(op, "o"),
    lse.handle(op, "lse"),
    cuSeqlens.handle(op, "cuSeqlens"),
    opts.causal,
    window,
    scale,
    opts.cuSeqlensHost,
    q.device === "cuda" && float32Grads,
  );
  // The CPU computes in float32 / float64 only: its gradients are in q's dtype either way.
  const gradDtype = q.device === "cuda" && float32Grads ? "float32" : q.dtype;
  return { dq: new Tensor(dq, gradDtype, q.shape), dk: new Tensor(dk, gradDtype, k.shape), dv: new Tensor(dv, gradDtype, v.shape) };
}
