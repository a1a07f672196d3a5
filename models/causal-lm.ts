// What every causal LM here shares: embed, blocks, final norm, LM head over packed batches.
// The training step is explicit: forward through the blocks saving activations per block,
// fused linear cross-entropy (full logits never exist), then backward in reverse, freeing
// each block's activations as soon as its backward has run.
import type { ModelConfig } from "./config.ts";
import { ops, type Device, type DType, type Tensor } from "./ops.ts";
import { normOfSum, type NormLayer } from "./layers/basic.ts";
import type { Block } from "./layers/block.ts";
import { Ctx, type BatchTensors } from "./layers/ctx.ts";
import type { Param } from "./layers/param.ts";
import { runAsync, runSync, type AsyncStepHooks, type AttentionExchange, type StepHooks, type Steps } from "./layers/steps.ts";

export type { AsyncStepHooks, AttentionExchange, AttentionGrads, SaveSlot, StepHooks } from "./layers/steps.ts";

/** A packed batch: sequences laid end to end, no padding. */
export interface PackedBatch {
  tokens: Int32Array;
  /** Position of each token within its sequence. */
  positions: Int32Array;
  /** Sequence boundaries: [0, len0, len0 + len1, ..., T]. */
  cuSeqlens: Int32Array;
  /** Target of each position (already shifted); -100 is not counted. Needed by loss(). */
  labels?: Int32Array;
}

export interface LossResult {
  /** Sum of cross-entropy over counted tokens divided by their count (this batch only). */
  loss: number;
  lossSum: number;
  count: number;
}

export interface LossOptions {
  /**
   * The gradients are those of gradScale * lossSum. Default 1 / count (the mean over this
   * batch); for gradient accumulation pass 1 / (counted tokens of all micro-batches).
   */
  gradScale?: number;
  /** Called around each block's forward and backward (where FSDP gathers a block's weights
   * and reduce-scatters its gradients). */
  hooks?: StepHooks;
}

/** lossAsync's options: hooks that may wait, and the attention op spread over ranks (Ulysses). */
export interface AsyncLossOptions {
  gradScale?: number;
  hooks?: AsyncStepHooks;
  attention?: AttentionExchange;
}

/** One parameter as it appears in HF files (name, HF shape), read from and written to our params. */
export interface HFTensor {
  name: string;
  shape: readonly number[];
  /** The values, in HF layout. */
  read(): Float32Array;
  /** The gradient in HF layout (zeros before any backward). */
  readGrad(): Float32Array;
  write(data: Float32Array): void;
}

export interface ModelOptions {
  /** Seed of the initial weights. */
  seed?: number;
  /** dtype of parameters and compute: float32 (default), float64 for gradient checks. */
  dtype?: DType;
  /** Recompute each block's forward during backward instead of keeping its activations. */
  recompute?: boolean;
  /** Skip sampling initial weights (they will be loaded): every matrix starts at zero. */
  noInit?: boolean;
}

export const IGNORE_INDEX = -100;

export abstract class CausalLM {
  abstract readonly config: ModelConfig;
  abstract readonly blocks: Block[];
  abstract readonly finalNorm: NormLayer;
  /** The LM head weight [V, D] (the embedding's when tied). */
  abstract readonly head: Param;

  /** Token (and, for GPT-2, position) embeddings of a batch: the first block's input. */
  abstract embedForward(batch: BatchTensors): Tensor;
  protected abstract embedBackward(dx: Tensor, batch: BatchTensors): void;
  /** Every parameter once (a tied head is the embedding). */
  abstract params(): Param[];
  /** The parameters as HF files hold them. */
  abstract hfTensors(): HFTensor[];
  /** The largest position the model can embed + 1 (absent: unbounded). */
  abstract readonly maxPositions: number | undefined;

  #device: Device = "cpu";
  #compute: DType;

  constructor(readonly dtype: DType) {
    this.#compute = dtype;
  }

  /** Where the parameters live and the step runs. */
  get device(): Device {
    return this.#device;
  }

  /** The dtype activations and weights are computed in (dtype is the master weights'). */
  get computeDtype(): DType {
    return this.#compute;
  }

  /**
   * Moves the parameters to device and computes in `compute` there: with bfloat16 on cuda each
   * parameter keeps fp32 master weights and gradients beside its bf16 compute copy. Gradients
   * are dropped.
   */
  place(device: Device, compute: DType = this.dtype): this {
    for (const p of this.params()) p.place(device, compute);
    this.#device = device;
    this.#compute = compute;
    return this;
  }

  /**
   * The cos / sin table of a batch's positions that every layer's RoPE reads (native `ropeTable`),
   * or undefined for a model without RoPE. Made once per batch, beside the batch's upload.
   */
  ropeTable(_positions: Tensor): Tensor | undefined {
    return undefined;
  }

  /** The batch, checked, on the model's device, with the RoPE table its layers share. */
  #upload(batch: PackedBatch): BatchTensors {
    checkBatch(batch, this.config.vocabSize, this.maxPositions);
    const bt = uploadBatch(batch, this.#device);
    bt.checked = true;
    bt.rope = this.ropeTable(bt.positions);
    return bt;
  }

  set recompute(on: boolean) {
    for (const b of this.blocks) b.recompute = on;
  }

  zeroGrad(): void {
    for (const p of this.params()) p.zeroGrad();
  }

  /** Forward and backward on one packed batch; gradients are added to the parameters'. */
  loss(batch: PackedBatch, opts: LossOptions = {}): LossResult {
    const { labels, gradScale } = this.lossInputs(batch, opts.gradScale);
    return ops.scope(() => runSync(this.lossSteps(this.#upload(batch), labels, gradScale), opts.hooks));
  }

  /**
   * loss() for a rank under a parallel plan: the hooks and the attention exchange may wait on
   * collectives. It holds no scope across its awaits (ranks of one process interleave there),
   * so everything it makes is freed explicitly; only gradients remain.
   */
  async lossAsync(batch: PackedBatch, opts: AsyncLossOptions = {}): Promise<LossResult> {
    const { labels, gradScale } = this.lossInputs(batch, opts.gradScale);
    const bt = this.#upload(batch);
    try {
      return await runAsync(this.lossSteps(bt, labels, gradScale), opts.hooks, opts.attention);
    } finally {
      disposeBatch(bt);
    }
  }

  private lossInputs(batch: PackedBatch, scale: number | undefined): { labels: Int32Array; gradScale: number } {
    const labels = batch.labels;
    if (!labels) throw new Error("loss: the batch has no labels");
    let count = 0;
    for (const l of labels) if (l !== IGNORE_INDEX) count++;
    return { labels, gradScale: scale ?? (count > 0 ? 1 / count : 0) };
  }

  private *lossSteps(bt: BatchTensors, labels: Int32Array, gradScale: number): Steps<LossResult> {
    const ctx = new Ctx(bt);
    const hn = yield* this.hiddenSteps(bt, ctx, false);
    const lab = ops.tensor(labels, [labels.length], { dtype: "int32", device: this.#device });
    const r = ops.linearCrossEntropy(hn, this.head.value, lab, { ignoreIndex: IGNORE_INDEX, gradScale });
    hn.dispose();
    lab.dispose();
    this.head.accumulate(r.dw);
    let d = this.finalNorm.backward(r.dx, ctx.child("norm"));
    r.dx.dispose();
    ctx.child("norm").free();
    for (let i = this.blocks.length - 1; i >= 0; i--) {
      const c = ctx.child(String(i));
      yield { op: "hook", point: "preBackward", block: i };
      const next = yield* this.blocks[i]!.backwardSteps(d, c);
      yield { op: "hook", point: "postBackward", block: i };
      d.dispose();
      c.free();
      d = next;
    }
    yield { op: "hook", point: "preBackward", block: "outer" };
    this.embedBackward(d, bt);
    yield { op: "hook", point: "postBackward", block: "outer" };
    d.dispose();
    ctx.free();
    return { loss: r.count > 0 ? r.loss / r.count : 0, lossSum: r.loss, count: r.count };
  }

  /** The loss of a packed batch without backward (evaluation). */
  evalLoss(batch: PackedBatch): LossResult {
    const labels = batch.labels;
    if (!labels) throw new Error("evalLoss: the batch has no labels");
    return ops.scope(() => {
      const bt = this.#upload(batch);
      const hn = this.hiddenForward(bt, new Ctx(bt), true);
      const lab = ops.tensor(labels, [labels.length], { dtype: "int32", device: this.#device });
      const r = ops.linearCrossEntropyLoss(hn, this.head.value, lab, { ignoreIndex: IGNORE_INDEX });
      return { loss: r.count > 0 ? r.loss / r.count : 0, lossSum: r.loss, count: r.count };
    });
  }

  /**
   * evalLoss() for a rank under a parallel plan: preForward hooks (FSDP gathers) and the
   * attention exchange (Ulysses) are awaited; no backward hooks run, so the plan releases
   * what it gathered afterwards.
   */
  async evalLossAsync(batch: PackedBatch, opts: Omit<AsyncLossOptions, "gradScale"> = {}): Promise<LossResult> {
    const labels = batch.labels;
    if (!labels) throw new Error("evalLoss: the batch has no labels");
    const bt = this.#upload(batch);
    try {
      const hn = await runAsync(this.hiddenSteps(bt, new Ctx(bt), true), opts.hooks, opts.attention);
      const lab = ops.tensor(labels, [labels.length], { dtype: "int32", device: this.#device });
      const r = ops.linearCrossEntropyLoss(hn, this.head.value, lab, { ignoreIndex: IGNORE_INDEX });
      hn.dispose();
      lab.dispose();
      return { loss: r.count > 0 ? r.loss / r.count : 0, lossSum: r.loss, count: r.count };
    } finally {
      disposeBatch(bt);
    }
  }

  /** Logits [T, V] of a packed batch (no gradients, nothing kept but the result). */
  logits(batch: PackedBatch): Tensor {
    return ops.scope(() => {
      const bt = this.#upload(batch);
      const hn = this.hiddenForward(bt, new Ctx(bt), true);
      return ops.matmul(hn, this.head.value, { transB: true });
    });
  }

  /** Embedding, blocks and final norm; with `inference`, each block's activations are freed at once. */
  protected hiddenForward(bt: BatchTensors, ctx: Ctx, inference: boolean): Tensor {
    return runSync(this.hiddenSteps(bt, ctx, inference));
  }

  private *hiddenSteps(bt: BatchTensors, ctx: Ctx, inference: boolean): Steps<Tensor> {
    yield { op: "hook", point: "preForward", block: "outer" };
    let h = this.embedForward(bt);
    // Each block's output as its two unsummed parts (Block.forwardSteps): the next norm adds them.
    let delta: Tensor | undefined;
    for (let i = 0; i < this.blocks.length; i++) {
      const c = ctx.child(String(i));
      yield { op: "hook", point: "preForward", block: i };
      const next = yield* this.blocks[i]!.forwardSteps(h, c, delta);
      if (inference) {
        c.free(new Set([next.x]));
        if (!h.disposed) h.dispose();
      }
      h = next.x;
      delta = next.delta;
    }
    const hn = normOfSum(this.finalNorm, h, delta, ctx.child("norm")).y;
    if (inference) {
      ctx.free();
      if (!h.disposed) h.dispose();
    }
    return hn;
  }

  dispose(): void {
    for (const p of this.params()) p.dispose();
  }
}

function disposeBatch(bt: BatchTensors): void {
  bt.tokens.dispose();
  bt.positions.dispose();
  bt.cuSeqlens.dispose();
  bt.rope?.dispose();
}

function uploadBatch(b: PackedBatch, device: Device): BatchTensors {
  const T = b.tokens.length;
  return {
    tokens: ops.tensor(b.tokens, [T], { dtype: "int32", device }),
    positions: ops.tensor(b.positions, [T], { dtype: "int32", device }),
    cuSeqlens: ops.tensor(b.cuSeqlens, [b.cuSeqlens.length], { dtype: "int32", device }),
    cuSeqlensHost: b.cuSeqlens,
    numTokens: T,
  };
}

/** A malformed batch is an error here, with what is wrong, not garbage from a kernel. */
export function checkBatch(b: PackedBatch, vocab: number, maxPositions: number | undefined): void {
  const T = b.tokens.length;
  if (b.positions.length !== T) throw new Error(`batch: ${b.positions.length} positions for ${T} tokens`);
  if (b.labels && b.labels.length !== T) throw new Error(`batch: ${b.labels.length} labels for ${T} tokens`);
  const cu = b.cuSeqlens;
  if (cu.length < 2 || cu[0] !== 0 || cu[cu.length - 1] !== T) {
    throw new Error(`batch: cu_seqlens must run from 0 to ${T}, got [${Array.from(cu).join(", ")}]`);
  }
  for (let i = 1; i < cu.length; i++) if (cu[i]! < cu[i - 1]!) throw new Error(`batch: cu_seqlens decreases at ${i}`);
  for (let i = 0; i < T; i++) {
    const t = b.tokens[i]!;
    if (t < 0 || t >= vocab) throw new Error(`batch: token ${t} at ${i} is outside the vocabulary of ${vocab}`);
    const p = b.positions[i]!;
    if (p < 0 || (maxPositions !== undefined && p >= maxPositions)) throw new Error(`batch: position ${p} at ${i} is outside [0, ${maxPositions})`);
    const l = b.labels?.[i];
    if (l !== undefined && l !== IGNORE_INDEX && (l < 0 || l >= vocab)) throw new Error(`batch: label ${l} at ${i} is outside the vocabulary of ${vocab}`);
  }
}

/** A contiguous packed batch from plain sequences: positions from 0, labels = next token. */
export function packSequences(seqs: readonly (readonly number[])[]): PackedBatch {
  const T = seqs.reduce((a, s) => a + s.length, 0);
  const tokens = new Int32Array(T);
  const positions = new Int32Array(T);
  const labels = new Int32Array(T);
  const cuSeqlens = new Int32Array(seqs.length + 1);
  let o = 0;
  seqs.forEach((s, b) => {
    s.forEach((t, i) => {
      tokens[o + i] = t;
      positions[o + i] = i;
      labels[o + i] = i + 1 < s.length ? s[i + 1]! : IGNORE_INDEX;
    });
    o += s.length;
    cuSeqlens[b + 1] = o;
  });
  return { tokens, positions, cuSeqlens, labels };
}
