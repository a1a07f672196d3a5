// Ulysses sequence parallelism. The ranks of an sp group share one packed batch, each holding
// a contiguous slice of its tokens (sequences may cross slices: cu_seqlens and positions stay
// global). Everything but attention is per token, so it runs on the slice as is. Attention
// needs whole sequences: an all-to-all turns q, k, v from [own tokens, all heads] into [all
// tokens, own heads], attention runs over the global cu_seqlens, and a second all-to-all
// brings o back to [own tokens, all heads]; backward mirrors it. With fewer KV heads than
// ranks, each rank gets the one KV head its query heads use (KV heads are replicated), and
// the gradients of a replicated head are summed on the way back.
import { attention, attentionBackward, keep, tensor, type AttentionOptions, type Tensor } from "../../native/index.ts";
import type { Collectives, HostBuffer } from "../collectives/index.ts";
import { floatArray, hostOf, tensorOf } from "./host-tensors.ts";
import type { AttentionExchange, FloatBuffer, PlanBatch, SaveSlot } from "./types.ts";

/** Which heads member j works on: [start, start + count). */
type HeadMap = (j: number) => { start: number; count: number };

export function queryHeads(numHeads: number, sp: number): HeadMap {
  if (numHeads % sp !== 0) throw new Error(`Ulysses: ${numHeads} attention heads do not split over sp=${sp}`);
  const c = numHeads / sp;
  return (j) => ({ start: j * c, count: c });
}

export function kvHeads(numKvHeads: number, sp: number): HeadMap {
  if (numKvHeads % sp === 0) return queryHeads(numKvHeads, sp);
  if (sp % numKvHeads !== 0) throw new Error(`Ulysses: ${numKvHeads} KV heads neither split over nor replicate evenly onto sp=${sp}`);
  // Member j's query heads start at j*Hq/sp, which GQA maps to KV head floor(j*Hkv/sp).
  return (j) => ({ start: Math.floor((j * numKvHeads) / sp), count: 1 });
}

/** [T, H, D] -> blocks j = [T, heads(j), D], in member order: the all-to-all's send layout. */
function scatterHeads(x: FloatBuffer, T: number, H: number, D: number, sp: number, heads: HeadMap): FloatBuffer {
  const c = heads(0).count;
  const out = floatArray(x instanceof Float64Array ? "float64" : "float32", sp * T * c * D);
  let at = 0;
  for (let j = 0; j < sp; j++) {
    const { start } = heads(j);
    for (let t = 0; t < T; t++) {
      const row = (t * H + start) * D;
      out.set(x.subarray(row, row + c * D), at);
      at += c * D;
    }
  }
  return out;
}

/** Inverse of scatterHeads, adding where members share a head (replicated KV heads). */
function gatherHeads(blocks: FloatBuffer, T: number, H: number, D: number, sp: number, heads: HeadMap): FloatBuffer {
  const c = heads(0).count;
  const out = floatArray(blocks instanceof Float64Array ? "float64" : "float32", T * H * D);
  let at = 0;
  for (let j = 0; j < sp; j++) {
    const { start } = heads(j);
    for (let t = 0; t < T; t++) {
      const row = (t * H + start) * D;
      for (let i = 0; i < c * D; i++) out[row + i]! += blocks[at + i]!;
      at += c * D;
    }
  }
  return out;
}

/** Member `index` of `sp`'s slice of a packed batch: its tokens, positions and labels, and cu_seqlens clipped to the slice. */
export function sequenceShard(batch: PlanBatch, index: number, sp: number): PlanBatch {
  const T = batch.tokens.length;
  if (T % sp !== 0) throw new Error(`Ulysses: a batch of ${T} tokens does not split evenly over sp=${sp}`);
  const lo = (index * T) / sp;
  const hi = lo + T / sp;
  const cu = [0];
  for (const c of batch.cuSeqlens) if (c > lo && c < hi) cu.push(c - lo);
  cu.push(hi - lo);
  const out: PlanBatch = {
    tokens: batch.tokens.slice(lo, hi),
    positions: batch.positions.slice(lo, hi),
    cuSeqlens: Int32Array.from(cu),
  };
  if (batch.labels) out.labels = batch.labels.slice(lo, hi);
  return out;
}

export class UlyssesAttention implements AttentionExchange {
  private readonly sp: number;
  private cu: Tensor | undefined;

  constructor(
    private readonly group: Collectives<HostBuffer>,
    private readonly numHeads: number,
    private readonly numKvHeads: number,
  ) {
    this.sp = group.ranks.length;
    queryHeads(numHeads, this.sp);
    kvHeads(numKvHeads, this.sp);
  }

  /** This member's slice of the group's batch; the global cu_seqlens are kept for attention. */
  shard(batch: PlanBatch): PlanBatch {
    this.cu?.dispose();
    this.cu = keep(tensor(batch.cuSeqlens, [batch.cuSeqlens.length], { dtype: "int32" }));
    return sequenceShard(batch, this.group.index, this.sp);
  }

  private cuSeqlens(): Tensor {
    if (!this.cu) throw new Error("Ulysses: attention ran before shard() gave the batch's global cu_seqlens");
    return this.cu;
  }

  async forward(q: Tensor, k: Tensor, v: Tensor, ctx: SaveSlot, opts: AttentionOptions): Promise<Tensor> {
    const [T, hq, dh] = q.shape as [number, number, number];
    const hkv = k.shape[1]!;
    const qm = queryHeads(hq, this.sp);
    const km = kvHeads(hkv, this.sp);
    const dtype = q.dtype;
    const [qa, ka, va] = await Promise.all([
      this.group.allToAll(scatterHeads(hostOf(q), T, hq, dh, this.sp, qm)),
      this.group.allToAll(scatterHeads(hostOf(k), T, hkv, dh, this.sp, km)),
      this.group.allToAll(scatterHeads(hostOf(v), T, hkv, dh, this.sp, km)),
    ]);
    q.dispose();
    k.dispose();
    v.dispose();
    // Block j of what arrived is member j's tokens for this member's heads: in token order, the whole batch.
    const Tg = T * this.sp;
    const qh = tensorOf(qa as FloatBuffer, [Tg, qm(0).count, dh], dtype);
    const kh = tensorOf(ka as FloatBuffer, [Tg, km(0).count, dh], dtype);
    const vh = tensorOf(va as FloatBuffer, [Tg, km(0).count, dh], dtype);
    const { o, lse } = attention(qh, kh, vh, this.cuSeqlens(), opts);
    ctx.save("sp.q", qh);
    ctx.save("sp.k", kh);
    ctx.save("sp.v", vh);
    ctx.save("sp.o", o);
    ctx.save("sp.lse", lse);
    // o is [member j's tokens, own heads] for j in order: the send layout of the way back.
    const back = (await this.group.allToAll(hostOf(o))) as FloatBuffer;
    return tensorOf(gatherHeads(back, T, hq, dh, this.sp, qm), [T, hq, dh], dtype);
  }

  async backward(dout: Tensor, ctx: SaveSlot, opts: AttentionOptions): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor }> {
    const [T, hq, dh] = dout.shape as [number, number, number];
    const qh = ctx.get("sp.q");
    const kh = ctx.get("sp.k");
    const hkv = this.numKvHeads;
    const qm = queryHeads(hq, this.sp);
    const km = kvHeads(hkv, this.sp);
    const dtype = dout.dtype;
    const da = (await this.group.allToAll(scatterHeads(hostOf(dout), T, hq, dh, this.sp, qm))) as FloatBuffer;
    const doh = tensorOf(da, qh.shape, dtype);
    const g = attentionBackward(doh, qh, kh, ctx.get("sp.v"), ctx.get("sp.o"), ctx.get("sp.lse"), this.cuSeqlens(), opts);
    doh.dispose();
    const parts = [hostOf(g.dq), hostOf(g.dk), hostOf(g.dv)];
    g.dq.dispose();
    g.dk.dispose();
    g.dv.dispose();
    const [dqa, dka, dva] = (await Promise.all(parts.map((p) => this.group.allToAll(p)))) as FloatBuffer[];
    return {
      dq: tensorOf(gatherHeads(dqa!, T, hq, dh, this.sp, qm), [T, hq, dh], dtype),
      dk: tensorOf(gatherHeads(dka!, T, hkv, dh, this.sp, km), [T, hkv, dh], dtype),
      dv: tensorOf(gatherHeads(dva!, T, hkv, dh, this.sp, km), [T, hkv, dh], dtype),
    };
  }

  dispose(): void {
    this.cu?.dispose();
    this.cu = undefined;
  }
}
