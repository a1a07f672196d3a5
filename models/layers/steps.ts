// The training step as a coroutine. Layers that a parallelism plan must reach into (the
// attention op, for Ulysses all-to-alls) and the model's step (hooks between blocks, for
// FSDP gathers and reduce-scatters) are generators that yield an Effect where such a point
// lies. One body serves two drivers: runSync handles each effect at once (one rank, or
// hooks that need no waiting), runAsync awaits each (collectives return promises). So the
// layer math is written once and the plan's communication stays outside models/.
import { ops, type AttentionOptions, type Tensor } from "../ops.ts";
import type { BatchTensors, Ctx } from "./ctx.ts";

export type HookPoint = "preForward" | "preBackward" | "postBackward";

/** Where the step may stop for a plan. */
export type Effect =
  | { op: "hook"; point: HookPoint; block: number | "outer" }
  /** Attention over q[T,Hq,Dh], k/v[T,Hkv,Dh]: the handler owns q, k, v (saves or frees them) and returns o[T,Hq,Dh]. */
  | { op: "attention"; q: Tensor; k: Tensor; v: Tensor; ctx: Ctx; opts: AttentionOptions }
  /**
   * Its backward from dout[T,Hq,Dh] (the caller frees dout) to fresh dq, dk, dv: in dout's dtype,
   * or float32 where `float32Grads` and the handler can give them at no cost (the local op on
   * cuda; a plan's exchange keeps dout's dtype), so the caller takes either.
   */
  | { op: "attentionBackward"; dout: Tensor; ctx: Ctx; opts: AttentionOptions; float32Grads?: boolean };

export type Steps<R> = Generator<Effect, R, unknown>;

export interface AttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

/**
 * Points in a step where a parallelism plan acts. `block` is a block index, or "outer" for
 * the embeddings, final norm and head: those are used from preForward("outer") (before block
 * 0) through postBackward("outer") (after block 0's backward; the head's gradient is formed
 * before any block's backward). A block's parameters are used between its preForward and
 * the next preForward, and between its preBackward and postBackward.
 */
export interface StepHooks {
  preForward?(block: number | "outer"): void;
  preBackward?(block: number | "outer"): void;
  postBackward?(block: number | "outer"): void;
}

/** StepHooks that may wait (collectives); the async step awaits each. */
export interface AsyncStepHooks {
  preForward?(block: number | "outer"): void | Promise<void>;
  preBackward?(block: number | "outer"): void | Promise<void>;
  postBackward?(block: number | "outer"): void | Promise<void>;
}

/**
 * The attention op spread over ranks (Ulysses sequence parallelism, mesh/plans). It gets
 * this rank's q, k, v (its tokens, all heads; it owns them), returns this rank's o, and saves
 * in `ctx` what its backward needs; `ctx` is only used for save/get.
 */
export interface AttentionExchange {
  forward(q: Tensor, k: Tensor, v: Tensor, ctx: SaveSlot, opts: AttentionOptions): Promise<Tensor>;
  backward(dout: Tensor, ctx: SaveSlot, opts: AttentionOptions): Promise<AttentionGrads>;
}

/** What an exchange may do with a layer's Ctx. */
export interface SaveSlot {
  save(key: string, t: Tensor): void;
  get(key: string): Tensor;
}

/** The attention op on this rank's tokens alone. */
export function localAttention(e: Extract<Effect, { op: "attention" }>): Tensor {
  const { o, lse } = ops.attention(e.q, e.k, e.v, e.ctx.batch.cuSeqlens, withHostOffsets(e.opts, e.ctx.batch));
  e.ctx.save("q", e.q);
  e.ctx.save("k", e.k);
  e.ctx.save("v", e.v);
  e.ctx.save("o", o);
  e.ctx.save("lse", lse);
  return o;
}

export function localAttentionBackward(e: Extract<Effect, { op: "attentionBackward" }>): AttentionGrads {
  const c = e.ctx;
  return ops.attentionBackward(e.dout, c.get("q"), c.get("k"), c.get("v"), c.get("o"), c.get("lse"), c.batch.cuSeqlens, withHostOffsets(e.opts, c.batch), e.float32Grads);
}

function withHostOffsets(opts: AttentionOptions, batch: BatchTensors): AttentionOptions {
  return batch.cuSeqlensHost ? { ...opts, cuSeqlensHost: batch.cuSeqlensHost } : opts;
}

/** Runs steps to the end, handling every effect at once. */
export function runSync<R>(steps: Steps<R>, hooks?: StepHooks): R {
  let r = steps.next();
  while (!r.done) {
    const e = r.value;
    let out: unknown;
    if (e.op === "hook") hooks?.[e.point]?.(e.block);
    else if (e.op === "attention") out = localAttention(e);
    else out = localAttentionBackward(e);
    r = steps.next(out);
  }
  return r.value;
}

/** How long a step may compute before it gives the event loop a turn. */
const YIELD_EVERY_MS = 100;

/**
 * Runs steps to the end, awaiting the hooks and the attention exchange (local attention without
 * one). Ops are synchronous and an already-resolved hook only queues a microtask, so without a
 * real turn of the event loop a whole step would starve the process's timers and sockets (a
 * rank's heartbeats among them): every YIELD_EVERY_MS of compute, at the next step point, it
 * yields one macrotask.
 */
export async function runAsync<R>(steps: Steps<R>, hooks?: AsyncStepHooks, exchange?: AttentionExchange): Promise<R> {
  let r = steps.next();
  let lastTurn = performance.now();
  while (!r.done) {
    if (performance.now() - lastTurn > YIELD_EVERY_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      lastTurn = performance.now();
    }
    const e = r.value;
    let out: unknown;
    if (e.op === "hook") await hooks?.[e.point]?.(e.block);
    else if (e.op === "attention") out = exchange ? await exchange.forward(e.q, e.k, e.v, e.ctx, e.opts) : localAttention(e);
    else out = exchange ? await exchange.backward(e.dout, e.ctx, e.opts) : localAttentionBackward(e);
    r = steps.next(out);
  }
  return r.value;
}
