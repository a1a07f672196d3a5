// Self-attention over a packed batch: q/k/v projections (optional bias), optional per-head
// RMSNorm of q and k (Qwen3), optional RoPE, varlen causal GQA attention (optional sliding
// window), output projection. q, k and v are three parameters each but one GEMM a pass
// (LinearGroup). GPT-2's fused c_attn is three projections here; the HF mapping fuses them on
// save and splits them on load.
import { ops, type AttentionOptions, type RopeOptions, type Tensor } from "../ops.ts";
import { Linear, LinearGroup, RMSNorm, type Layer } from "./basic.ts";
import type { BatchTensors, Ctx } from "./ctx.ts";
import type { Init } from "./init.ts";
import type { Param } from "./param.ts";
import { runSync, type AttentionGrads, type Steps } from "./steps.ts";

export interface AttentionSpec {
  hidden: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  qkvBias: boolean;
  oBias: boolean;
  /** eps of the per-head q/k RMSNorm; absent: no q/k norm. */
  qkNormEps?: number;
  rope?: RopeOptions;
  /** Sliding window (key j visible to query i iff i - window < j <= i). */
  window?: number;
  /** Parameter names of the four projections and the two norms. */
  names: { q: string; k: string; v: string; o: string; qNorm?: string; kNorm?: string };
}

export class Attention implements Layer {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear;
  /** q, k and v as one GEMM a pass. */
  private readonly qkv: LinearGroup;
  readonly qNorm: RMSNorm | undefined;
  readonly kNorm: RMSNorm | undefined;
  readonly opts: AttentionOptions;

  constructor(
    init: Init,
    readonly spec: AttentionSpec,
  ) {
    const { hidden, numHeads: hq, numKvHeads: hkv, headDim: dh, names } = spec;
    this.q = new Linear(init, names.q, hidden, hq * dh, spec.qkvBias);
    this.k = new Linear(init, names.k, hidden, hkv * dh, spec.qkvBias);
    this.v = new Linear(init, names.v, hidden, hkv * dh, spec.qkvBias);
    this.o = new Linear(init, names.o, hq * dh, hidden, spec.oBias);
    this.qkv = new LinearGroup([this.q, this.k, this.v]);
    if (spec.qkNormEps !== undefined) {
      this.qNorm = new RMSNorm(init, names.qNorm ?? `${names.q}_norm`, dh, spec.qkNormEps);
      this.kNorm = new RMSNorm(init, names.kNorm ?? `${names.k}_norm`, dh, spec.qkNormEps);
    }
    this.opts = { causal: true, scale: 1 / Math.sqrt(dh) };
    if (spec.window !== undefined) this.opts.window = spec.window;
  }

  /** q, k, v as [T, H, Dh] after norm and RoPE (at ctx.batch's positions): what attention (and a KV cache) consumes. */
  project(x: Tensor, ctx: Ctx): { q: Tensor; k: Tensor; v: Tensor } {
    const T = x.shape[0]!;
    const { numHeads: hq, numKvHeads: hkv, headDim: dh } = this.spec;
    const qkv = this.qkv.forward(x, ctx.child("qkv"));
    const table = this.fusedRopeTable(ctx.batch);
    if (table) {
      const out = ops.ropeQKVSplit(qkv, table, hq, hkv);
      qkv.dispose();
      return out;
    }
    const [q2, k2, v2] = ops.splitColumns(qkv, this.qkv.widths);
    qkv.dispose();
    const qh = this.headsOf(q2!, hq, this.qNorm, ctx.child("q_norm"), T);
    const kh = this.headsOf(k2!, hkv, this.kNorm, ctx.child("k_norm"), T);
    const { q, k } = this.rotate(qh, kh, ctx.batch, false);
    const v = v2!.reshape([T, hkv, dh]);
    v2!.dispose();
    return { q, k, v };
  }

  /**
   * The batch's RoPE table when the split of the fused projection can rotate q and k as it moves
   * them (one pass over q, k and v on cuda): RoPE through a table and no q/k norm between.
   */
  private fusedRopeTable(batch: BatchTensors): Tensor | undefined {
    return this.spec.rope && !this.qNorm ? batch.rope : undefined;
  }

  /**
   * RoPE of q and k at the batch's positions (its transpose with `inverse`), disposing them:
   * through the batch's table in one op (one launch on cuda), else per tensor.
   */
  private rotate(q: Tensor, k: Tensor, batch: BatchTensors, inverse: boolean): { q: Tensor; k: Tensor } {
    const rope = this.spec.rope;
    if (!rope) return { q, k };
    const { rope: table, positions } = batch;
    let out: { q: Tensor; k: Tensor };
    if (table) out = inverse ? ops.ropeQKBackwardWithTable(q, k, table) : ops.ropeQKWithTable(q, k, table);
    else if (inverse) out = { q: ops.ropeBackward(q, positions, rope), k: ops.ropeBackward(k, positions, rope) };
    else out = { q: ops.rope(q, positions, rope), k: ops.rope(k, positions, rope) };
    q.dispose();
    k.dispose();
    return out;
  }

  private headsOf(lin: Tensor, heads: number, norm: RMSNorm | undefined, ctx: Ctx, T: number): Tensor {
    const dh = this.spec.headDim;
    let h: Tensor;
    if (norm) {
      const flat = lin.reshape([T * heads, dh]);
      const n = norm.forward(flat, ctx);
      h = n.reshape([T, heads, dh]);
      n.dispose();
    } else {
      h = lin.reshape([T, heads, dh]);
    }
    lin.dispose();
    return h;
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    return runSync(this.forwardSteps(x, ctx));
  }

  /** Forward with the attention op as an effect (a plan may run it across ranks). */
  *forwardSteps(x: Tensor, ctx: Ctx): Steps<Tensor> {
    const T = x.shape[0]!;
    const { q, k, v } = this.project(x, ctx);
    const o = (yield { op: "attention", q, k, v, ctx, opts: this.opts }) as Tensor;
    const o2 = o.reshape([T, this.spec.numHeads * this.spec.headDim]);
    // Local attention saved o; an exchange returns a fresh o, which the view now holds.
    if (!ctx.has("o")) o.dispose();
    return this.o.forward(o2, ctx.child("o"));
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    return runSync(this.backwardSteps(dy, ctx));
  }

  *backwardSteps(dy: Tensor, ctx: Ctx): Steps<Tensor> {
    const T = dy.shape[0]!;
    const { numHeads: hq, numKvHeads: hkv, headDim: dh } = this.spec;
    const do2 = this.o.backward(dy, ctx.child("o"));
    const dout = do2.reshape([T, hq, dh]);
    do2.dispose();
    const table = this.fusedRopeTable(ctx.batch);
    // Through the fused RoPE backward, the gradients are read once: the local op may hand over its
    // float32 sums (no cast pass), and the bias gradient comes from the same pass.
    const g = (yield { op: "attentionBackward", dout, ctx, opts: this.opts, float32Grads: table !== undefined }) as AttentionGrads;
    const dtype = dout.dtype;
    dout.dispose();
    if (table) {
      const { dqkv, columnSums } = ops.ropeQKVBackwardCat(g.dq, g.dk, g.dv, table, { dtype, columnSums: this.qkv.hasBias });
      for (const d of [g.dq, g.dk, g.dv]) d.dispose();
      return this.backQKV(dqkv, ctx, columnSums);
    }
    const r = this.rotate(g.dq, g.dk, ctx.batch, true);
    const dq = this.linGradOf(r.q, hq, this.qNorm, ctx.child("q_norm"), T);
    const dk = this.linGradOf(r.k, hkv, this.kNorm, ctx.child("k_norm"), T);
    const dv = g.dv.reshape([T, hkv * dh]);
    g.dv.dispose();
    const dqkv = ops.catColumns([dq, dk, dv]);
    for (const d of [dq, dk, dv]) d.dispose();
    return this.backQKV(dqkv, ctx);
  }

  /** dx of the layer's input from the fused projection's output gradient (disposed) and, where formed with it, its column sums (disposed). */
  private backQKV(dqkv: Tensor, ctx: Ctx, columnSums?: Tensor): Tensor {
    const dx = this.qkv.backward(dqkv, ctx.child("qkv"), columnSums);
    dqkv.dispose();
    return dx;
  }

  /** Gradient w.r.t. a projection's output from the gradient w.r.t. its heads before RoPE (disposed). */
  private linGradOf(dHeads: Tensor, heads: number, norm: RMSNorm | undefined, ctx: Ctx, T: number): Tensor {
    const dh = this.spec.headDim;
    let d = dHeads;
    if (norm) {
      const flat = d.reshape([T * heads, dh]);
      d.dispose();
      d = norm.backward(flat, ctx);
      flat.dispose();
    }
    const out = d.reshape([T, heads * dh]);
    d.dispose();
    return out;
  }

  params(): Param[] {
    return [
      ...this.q.params(),
      ...this.k.params(),
      ...this.v.params(),
      ...this.o.params(),
      ...(this.qNorm?.params() ?? []),
      ...(this.kNorm?.params() ?? []),
    ];
  }
}
