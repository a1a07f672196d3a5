// Autoregressive generation with a KV cache, for one sequence.
//
// The prompt runs through the model at once (varlen attention op, causal, window). Each
// layer's keys and values (after norm and RoPE) go into a cache table [Hkv * maxLen, Dh]
// per layer, row h * maxLen + position. A decode step gathers, for every query head, the
// cached rows of its kv head inside the visible window into [Hq, n, Dh] and attends with
// batched matmul + softmax: the same arithmetic as the attention op, over the cache.
//
// Sampling: temperature 0 (or absent) is greedy; otherwise logits / temperature, then
// top-k, then top-p (nucleus), sampled with a seeded RNG so a seed reproduces a sample.
// `logprobs[i]` is log p(outputIds[i]) under the model's distribution (log-softmax of the
// raw logits: temperature and filtering change what is drawn, not what is reported).
import { ops, type Tensor } from "./ops.ts";
import type { CausalLM } from "./causal-lm.ts";
import { Ctx, type BatchTensors } from "./layers/ctx.ts";

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 or absent: greedy. */
  temperature?: number;
  /** Keep the k most likely tokens (0 or absent: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 or absent: all). */
  topP?: number;
  seed?: number;
  /** Stop after producing one of these (default: the config's eos). */
  eosTokenId?: number | readonly number[];
}

export interface GenerateResult {
  /** The new tokens (not the prompt); ends with eos when it stopped there. */
  outputIds: number[];
  logprobs: number[];
}

export function generate(model: CausalLM, inputIds: readonly number[], opts: GenerateOptions): GenerateResult {
  if (inputIds.length === 0) throw new Error("generate: empty prompt");
  const vocab = model.config.vocabSize;
  for (const t of inputIds) if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new Error(`generate: token ${t} is outside the vocabulary of ${vocab}`);
  let maxLen = inputIds.length + opts.maxNewTokens;
  if (model.maxPositions !== undefined) maxLen = Math.min(maxLen, model.maxPositions);
  if (inputIds.length > maxLen) throw new Error(`generate: prompt of ${inputIds.length} tokens exceeds the ${maxLen} positions of the model`);
  const eos = new Set<number>(eosOf(opts.eosTokenId ?? model.config.eosTokenId));
  const rng = mulberry32(opts.seed ?? 0);
  const cache = new KVCache(model, maxLen);
  const outputIds: number[] = [];
  const logprobs: number[] = [];
  try {
    let logits = cache.forward(inputIds, 0);
    for (let step = 0; step < opts.maxNewTokens; step++) {
      const next = pick(logits, opts, rng);
      outputIds.push(next);
      logprobs.push(logSoftmaxAt(logits, next));
      const pos = inputIds.length + step;
      if (eos.has(next) || pos >= maxLen) break;
      logits = cache.forward([next], pos);
    }
  } finally {
    cache.dispose();
  }
  return { outputIds, logprobs };
}

function eosOf(e: number | readonly number[] | undefined): number[] {
  if (e === undefined) return [];
  return typeof e === "number" ? [e] : [...e];
}

class KVCache {
  private readonly k: Tensor[] = [];
  private readonly v: Tensor[] = [];

  constructor(
    private readonly model: CausalLM,
    private readonly maxLen: number,
  ) {
    for (const b of model.blocks) {
      const { numKvHeads, headDim } = b.attn.spec;
      this.k.push(ops.keep(ops.zeros([numKvHeads * maxLen, headDim], model.dtype)));
      this.v.push(ops.keep(ops.zeros([numKvHeads * maxLen, headDim], model.dtype)));
    }
  }

  /** Runs `tokens` at positions start.. through the model, filling the cache; returns the
   * logits of the last token. A prompt (several tokens) must start at 0. */
  forward(tokens: readonly number[], start: number): Float32Array {
    const n = tokens.length;
    if (n > 1 && start !== 0) throw new Error("generate: several tokens at once only for the prompt");
    const logits = ops.scope(() => {
      const positions = Int32Array.from(tokens, (_, i) => start + i);
      const bt: BatchTensors = {
        tokens: ops.tensor(Int32Array.from(tokens), [n], { dtype: "int32" }),
        positions: ops.tensor(positions, [n], { dtype: "int32" }),
        cuSeqlens: ops.tensor(Int32Array.from([0, n]), [2], { dtype: "int32" }),
        numTokens: n,
      };
      const ctx = new Ctx(bt);
      let h = this.model.embedForward(bt);
      this.model.blocks.forEach((b, i) => {
        const attn = b.attn;
        const { numHeads: hq, headDim: dh } = attn.spec;
        const a = b.norm1.forward(h, ctx.child(`${i}.norm1`));
        const { q, k, v } = attn.project(a, ctx.child(`${i}.attn`));
        this.write(i, k, positions);
        this.write(i, v, positions, true);
        const o = start === 0 ? ops.attention(q, k, v, bt.cuSeqlens, attn.opts).o : this.attend(i, q, start);
        const ao = attn.o.forward(o.reshape([n, hq * dh]), ctx.child(`${i}.o`));
        const h2 = ops.add(h, ao);
        const m = b.mlp.forward(b.norm2.forward(h2, ctx.child(`${i}.norm2`)), ctx.child(`${i}.mlp`));
        h = ops.add(h2, m);
      });
      const hn = this.model.finalNorm.forward(h, ctx.child("norm"));
      const last = ops.embedding(hn, ops.tensor(Int32Array.from([n - 1]), [1], { dtype: "int32" }));
      return ops.matmul(last, this.model.head.value, { transB: true });
    });
    const out = logits.toArray();
    logits.dispose();
    return out instanceof Float32Array ? out : Float32Array.from(out as Float64Array);
  }

  /** Adds rows [T, Hkv, Dh] at `positions` into layer i's table (the rows there are zero). */
  private write(i: number, kv: Tensor, positions: Int32Array, isV = false): void {
    const [T, hkv, dh] = kv.shape as [number, number, number];
    const ids = new Int32Array(T * hkv);
    for (let t = 0; t < T; t++) for (let h = 0; h < hkv; h++) ids[t * hkv + h] = h * this.maxLen + positions[t]!;
    const rows = kv.reshape([T * hkv, dh]);
    const scattered = ops.embeddingBackward(rows, ops.tensor(ids, [ids.length], { dtype: "int32" }), hkv * this.maxLen);
    ops.addInto(isV ? this.v[i]! : this.k[i]!, scattered);
  }

  /** Attention of one query [1, Hq, Dh] at position `pos` over the cached keys and values. */
  private attend(i: number, q: Tensor, pos: number): Tensor {
    const attn = this.model.blocks[i]!.attn;
    const { numHeads: hq, numKvHeads: hkv, headDim: dh } = attn.spec;
    const window = attn.opts.window;
    const lo = window ? Math.max(0, pos - window + 1) : 0;
    const n = pos - lo + 1;
    const group = hq / hkv;
    const ids = new Int32Array(hq * n);
    for (let j = 0; j < hq; j++) {
      const base = Math.floor(j / group) * this.maxLen + lo;
      for (let t = 0; t < n; t++) ids[j * n + t] = base + t;
    }
    const idx = ops.tensor(ids, [ids.length], { dtype: "int32" });
    const K = ops.embedding(this.k[i]!, idx).reshape([hq, n, dh]);
    const V = ops.embedding(this.v[i]!, idx).reshape([hq, n, dh]);
    const scores = ops.scale(ops.matmul(q.reshape([hq, 1, dh]), K, { transB: true }), attn.opts.scale ?? 1 / Math.sqrt(dh));
    const p = ops.softmax(scores.reshape([hq, n])).reshape([hq, 1, n]);
    return ops.matmul(p, V).reshape([1, hq, dh]);
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
  }
}

function logSoftmaxAt(logits: Float32Array, i: number): number {
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - max);
  return logits[i]! - max - Math.log(sum);
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** The next token: greedy, or a sample after temperature, top-k and top-p. */
export function pick(logits: Float32Array, opts: Pick<GenerateOptions, "temperature" | "topK" | "topP">, rng: () => number): number {
  const temp = opts.temperature ?? 0;
  if (temp <= 0) return argmax(logits);
  const order = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const k = opts.topK && opts.topK > 0 ? Math.min(opts.topK, order.length) : order.length;
  const kept = order.slice(0, k);
  const max = logits[kept[0]!]!;
  const probs = kept.map((i) => Math.exp((logits[i]! - max) / temp));
  const z = probs.reduce((a, b) => a + b, 0);
  let n = kept.length;
  const topP = opts.topP ?? 1;
  if (topP < 1) {
    let acc = 0;
    for (let j = 0; j < kept.length; j++) {
      acc += probs[j]! / z;
      if (acc >= topP) {
        n = j + 1;
        break;
      }
    }
  }
  const total = probs.slice(0, n).reduce((a, b) => a + b, 0);
  let r = rng() * total;
  for (let j = 0; j < n; j++) {
    r -= probs[j]!;
    if (r < 0) return kept[j]!;
  }
  return kept[n - 1]!;
}

/** A small seeded PRNG (mulberry32): uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
