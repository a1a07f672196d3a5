// Rotary position embeddings (HF rotate_half convention: pairs (i, i + Dh/2)), with the
// frequency schedules of transformers' rope_init_fns: default, linear, llama3 and yarn.
import { Tensor, cast } from "./tensor.ts";
import { dtypeCode, type DType } from "./dtype.ts";
import { backendFor, cudaFn, deviceOfInputs } from "./cuda.ts";
import { fail, fmt, needDtype, needFinite, needFloat, needRank, needSameDtype, needShape } from "./check.ts";
import { catColumns, splitColumns, sumRows } from "./ops.ts";

export type RopeScaling =
  | { type: "linear"; factor: number }
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | {
      type: "yarn";
      /** As given; callers that follow HF's DeepSeek rule pass max_position_embeddings / original. */
      factor: number;
      originalMaxPositionEmbeddings: number;
      betaFast?: number;
      betaSlow?: number;
      attentionFactor?: number;
      mscale?: number;
      mscaleAllDim?: number;
      truncate?: boolean;
    };

export interface RopeOptions {
  theta: number;
  scaling?: RopeScaling;
}

export interface RopeFrequencies {
  invFreq: Float64Array;
  /** Multiplies cos and sin (YaRN's attention factor; 1 otherwise), as transformers does. */
  attentionScaling: number;
}

/** inv_freq[Dh/2] and the attention scaling for a head dim, as transformers computes them. */
export function ropeFrequencies(headDim: number, opts: RopeOptions): RopeFrequencies {
  const op = "rope";
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) fail(op, `head dim must be a positive even integer, got ${headDim}`);
  needFinite(op, "theta", opts.theta);
  const half = headDim / 2;
  const base = new Float64Array(half);
  for (let i = 0; i < half; i++) base[i] = 1 / opts.theta ** ((2 * i) / headDim);
  const s = opts.scaling;
  if (!s) return { invFreq: base, attentionScaling: 1 };
  needFinite(op, "scaling.factor", s.factor);
  switch (s.type) {
    case "linear":
      return { invFreq: base.map((f) => f / s.factor), attentionScaling: 1 };
    case "llama3": {
      const old = s.originalMaxPositionEmbeddings;
      const lowWavelen = old / s.lowFreqFactor;
      const highWavelen = old / s.highFreqFactor;
      const out = base.map((f) => {
        const wavelen = (2 * Math.PI) / f;
        if (wavelen < highWavelen) return f;
        if (wavelen > lowWavelen) return f / s.factor;
        const smooth = (old / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        return (1 - smooth) * (f / s.factor) + smooth * f;
      });
      return { invFreq: out, attentionScaling: 1 };
    }
    case "yarn": {
      const getMscale = (scale: number, m = 1) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
      let attentionScaling = s.attentionFactor;
      if (attentionScaling === undefined) {
        attentionScaling =
          s.mscale && s.mscaleAllDim ? getMscale(s.factor, s.mscale) / getMscale(s.factor, s.mscaleAllDim) : getMscale(s.factor);
      }
      const betaFast = s.betaFast ?? 32;
      const betaSlow = s.betaSlow ?? 1;
      const orig = s.originalMaxPositionEmbeddings;
      const correctionDim = (rot: number) => (headDim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(opts.theta));
      let low = correctionDim(betaFast);
      let high = correctionDim(betaSlow);
      if (s.truncate ?? true) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, headDim - 1);
      if (low === high) high += 0.001;
      const out = new Float64Array(half);
      for (let i = 0; i < half; i++) {
        const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
        const extrapolation = 1 - ramp;
        const f = base[i]!;
        out[i] = (f / s.factor) * (1 - extrapolation) + f * extrapolation;
      }
      return { invFreq: out, attentionScaling };
    }
  }
}

function ropeCall(op: string, x: Tensor, positions: Tensor, opts: RopeOptions, inverse: boolean): Tensor {
  needFloat(op, "x", x);
  needRank(op, "x", x, [3]);
  needDtype(op, "positions", positions, "int32");
  needShape(op, "positions", positions, [x.shape[0]!]);
  const { invFreq, attentionScaling } = ropeFrequencies(x.shape[2]!, opts);
  return new Tensor(
    backendFor(op, "rope", ["x", x], ["positions", positions])(x.handle(op, "x"), positions.handle(op, "positions"), invFreq, attentionScaling, inverse),
    x.dtype,
    x.shape,
  );
}

/** Rotates x[T,H,Dh] by each token's position (positions int32 [T], restarting per packed sequence). */
export function rope(x: Tensor, positions: Tensor, opts: RopeOptions): Tensor {
  return ropeCall("rope", x, positions, opts, false);
}

/** The transpose of rope: rotation by the opposite angle, times the same scaling. */
export function ropeBackward(dy: Tensor, positions: Tensor, opts: RopeOptions): Tensor {
  return ropeCall("ropeBackward", dy, positions, opts, true);
}

// ---- the per-batch table: cos / sin formed once per batch, read by every layer's rope

/** What a rope table holds: float32 (for float32 and bfloat16 x), or float64 (for float64 x; CPU only). */
export type RopeTableDtype = "float32" | "float64";

/**
 * cos and sin of each token's rotation angles, times the attention scaling, as [T, 2, Dh/2]: row t
 * holds the cos of its Dh/2 frequencies, then their sin. A model builds one per batch, on the
 * positions' device, and every layer's ropeWithTable / ropeBackwardWithTable reads it, instead of
 * each call forming them again. Values: rope's own (the angle as its float32 product, cos / sin in
 * double, rounded once for a float32 table; all in double for a float64 one).
 */
export function ropeTable(positions: Tensor, headDim: number, opts: RopeOptions, dtype: RopeTableDtype = "float32"): Tensor {
  const op = "ropeTable";
  needDtype(op, "positions", positions, "int32");
  needRank(op, "positions", positions, [1]);
  if (dtype !== "float32" && dtype !== "float64") fail(op, `the table is float32 or float64, got ${String(dtype)}`);
  if (positions.device === "cuda" && dtype !== "float32") fail(op, "the table is float32 on cuda");
  const { invFreq, attentionScaling } = ropeFrequencies(headDim, opts);
  return new Tensor(
    backendFor(op, "ropeTable", ["positions", positions])(positions.handle(op, "positions"), invFreq, attentionScaling, dtypeCode[dtype]),
    dtype,
    [positions.shape[0]!, 2, headDim / 2],
  );
}

/** x [T,H,Dh] (Dh even) and a table [T, 2, Dh/2] for it. */
function needRopeTable(op: string, name: string, x: Tensor, table: Tensor): void {
  needFloat(op, name, x);
  needRank(op, name, x, [3]);
  const [T, , Dh] = x.shape as [number, number, number];
  if (Dh % 2 !== 0) fail(op, `head dim must be even, got ${Dh}`);
  needDtype(op, "table", table, x.dtype === "float64" ? "float64" : "float32");
  needShape(op, "table", table, [T, 2, Dh / 2]);
}

function ropeTableCall(op: string, x: Tensor, table: Tensor, inverse: boolean): Tensor {
  needRopeTable(op, "x", x, table);
  return new Tensor(
    backendFor(op, "ropeWithTable", ["x", x], ["table", table])(x.handle(op, "x"), table.handle(op, "table"), inverse),
    x.dtype,
    x.shape,
  );
}

/** rope(x, positions, opts) with the cos / sin of ropeTable(positions, Dh, opts): x[T,H,Dh], table [T, 2, Dh/2]. */
export function ropeWithTable(x: Tensor, table: Tensor): Tensor {
  return ropeTableCall("ropeWithTable", x, table, false);
}

/** ropeBackward through the same table. */
export function ropeBackwardWithTable(dy: Tensor, table: Tensor): Tensor {
  return ropeTableCall("ropeBackwardWithTable", dy, table, true);
}

function ropeQKCall(op: string, q: Tensor, k: Tensor, table: Tensor, inverse: boolean): { q: Tensor; k: Tensor } {
  needRopeTable(op, "q", q, table);
  needRopeTable(op, "k", k, table);
  needSameDtype(op, ["q", q], ["k", k]);
  // The CPU has no launch to save: the single-tensor op, twice.
  if (deviceOfInputs(op, ["q", q], ["k", k], ["table", table]) === "cpu") {
    return { q: ropeTableCall(op, q, table, inverse), k: ropeTableCall(op, k, table, inverse) };
  }
  const [hq, hk] = cudaFn(op, "ropeQKWithTable")(q.handle(op, "q"), k.handle(op, "k"), table.handle(op, "table"), inverse);
  return { q: new Tensor(hq, q.dtype, q.shape), k: new Tensor(hk, k.dtype, k.shape) };
}

/** ropeWithTable of a layer's q [T,Hq,Dh] and k [T,Hk,Dh] (same T, Dh and dtype): one launch on cuda. */
export function ropeQKWithTable(q: Tensor, k: Tensor, table: Tensor): { q: Tensor; k: Tensor } {
  return ropeQKCall("ropeQKWithTable", q, k, table, false);
}

/** ropeBackwardWithTable of dq and dk: one launch on cuda. */
export function ropeQKBackwardWithTable(dq: Tensor, dk: Tensor, table: Tensor): { q: Tensor; k: Tensor } {
  return ropeQKCall("ropeQKBackwardWithTable", dq, dk, table, true);
}

/**
 * A fused q/k/v projection's output [T, (Hq + 2 Hk) Dh] as q and k rotated through the table
 * ([T,Hq,Dh], [T,Hk,Dh]) and v as it is ([T,Hk,Dh]): one launch on cuda, reading the fused
 * tensor once; on the CPU splitColumns then ropeQKWithTable.
 */
export function ropeQKVSplit(qkv: Tensor, table: Tensor, numHeads: number, numKvHeads: number): { q: Tensor; k: Tensor; v: Tensor } {
  const op = "ropeQKVSplit";
  needFloat(op, "qkv", qkv);
  needRank(op, "qkv", qkv, [2]);
  needRank(op, "table", table, [3]);
  const [T, width] = qkv.shape as [number, number];
  const Dh = 2 * table.shape[2]!;
  if (!Number.isInteger(numHeads) || !Number.isInteger(numKvHeads) || numHeads < 1 || numKvHeads < 1 || width !== (numHeads + 2 * numKvHeads) * Dh) {
    fail(op, `qkv ${fmt(qkv.shape)} is not [T, (${numHeads} + 2 * ${numKvHeads}) * ${Dh}] for the table's head dim ${Dh}`);
  }
  needDtype(op, "table", table, qkv.dtype === "float64" ? "float64" : "float32");
  needShape(op, "table", table, [T, 2, Dh / 2]);
  const shapes = [[T, numHeads, Dh], [T, numKvHeads, Dh], [T, numKvHeads, Dh]];
  if (deviceOfInputs(op, ["qkv", qkv], ["table", table]) === "cpu") {
    const flat = splitColumns(qkv, [numHeads * Dh, numKvHeads * Dh, numKvHeads * Dh]);
    const [q, k, v] = flat.map((t, i) => {
      const h = t.reshape(shapes[i]!);
      t.dispose();
      return h;
    }) as [Tensor, Tensor, Tensor];
    const r = ropeQKWithTable(q, k, table);
    q.dispose();
    k.dispose();
    return { ...r, v };
  }
  const hs = cudaFn(op, "ropeQKVSplit")(qkv.handle(op, "qkv"), table.handle(op, "table"), numHeads, numKvHeads);
  const [q, k, v] = hs.map((h, i) => new Tensor(h, qkv.dtype, shapes[i]!)) as [Tensor, Tensor, Tensor];
  return { q, k, v };
}

export interface RopeQKVBackwardCatOptions {
  /** dqkv's dtype: the gradients' by default; float32 gradients may give a bfloat16 dqkv (the next GEMMs' operand). */
  dtype?: DType;
  /** Also return dqkv's column sums (the fused projection's bias gradient; float32 on cuda), from the same pass there. */
  columnSums?: boolean;
}

/** The column sums of x's values as stored (a bfloat16 x is summed in float32 on the CPU). */
function sumsOfStored(x: Tensor): Tensor {
  if (x.dtype !== "bfloat16") return sumRows(x);
  const wide = cast(x, "float32");
  try {
    return sumRows(wide);
  } finally {
    wide.dispose();
  }
}

/**
 * ropeQKVSplit's transpose: dq and dk rotated back and dv, side by side as [T, (Hq + 2 Hk) Dh];
 * one launch on cuda, where the gradients may be the attention backward's float32 sums
 * (`float32Grads`) for a bfloat16 dqkv, and the column sums come in the same pass.
 */
export function ropeQKVBackwardCat(
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  table: Tensor,
  opts: RopeQKVBackwardCatOptions = {},
): { dqkv: Tensor; columnSums?: Tensor } {
  const op = "ropeQKVBackwardCat";
  needRopeTable(op, "dq", dq, table);
  needRopeTable(op, "dk", dk, table);
  needSameDtype(op, ["dq", dq], ["dk", dk], ["dv", dv]);
  needShape(op, "dv", dv, dk.shape);
  const [T, Hq, Dh] = dq.shape as [number, number, number];
  const Hk = dk.shape[1]!;
  if (dk.shape[2] !== Dh) fail(op, `dk ${fmt(dk.shape)} has another head dim than dq ${fmt(dq.shape)}`);
  const dtype = opts.dtype ?? dq.dtype;
  if (dtype !== dq.dtype && !(dq.dtype === "float32" && dtype === "bfloat16")) fail(op, `${dq.dtype} gradients cannot give a ${dtype} dqkv`);
  if (deviceOfInputs(op, ["dq", dq], ["dk", dk], ["dv", dv], ["table", table]) === "cpu") {
    const r = ropeQKBackwardWithTable(dq, dk, table);
    const flat = [r.q.reshape([T, Hq * Dh]), r.k.reshape([T, Hk * Dh]), dv.reshape([T, Hk * Dh])];
    r.q.dispose();
    r.k.dispose();
    let dqkv: Tensor;
    try {
      dqkv = catColumns(flat);
    } finally {
      for (const f of flat) f.dispose();
    }
    if (dtype !== dqkv.dtype) {
      const c = cast(dqkv, dtype);
      dqkv.dispose();
      dqkv = c;
    }
    return { dqkv, columnSums: opts.columnSums ? sumsOfStored(dqkv) : undefined };
  }
  const [h, sums] = cudaFn(op, "ropeQKVBackwardCat")(
    dq.handle(op, "dq"),
    dk.handle(op, "dk"),
    dv.handle(op, "dv"),
    table.handle(op, "table"),
    dtypeCode[dtype],
    opts.columnSums === true,
  );
  const width = (Hq + 2 * Hk) * Dh;
  return { dqkv: new Tensor(h!, dtype, [T, width]), columnSums: sums ? new Tensor(sums, "float32", [width]) : undefined };
}
