// A pre-norm transformer block: x + attn(norm1(x)), then h + mlp(norm2(h)). The residual sums
// are formed by the norms' kernels (forwardResidual), the last one by the next block's norm1 or
// the model's final norm. With `recompute`, forward keeps only its input and backward runs the
// forward again first (activation checkpointing per block).
import { ops, type Tensor } from "../ops.ts";
import { normOfSum, type Layer, type NormLayer } from "./basic.ts";
import type { Attention } from "./attention.ts";
import { Ctx } from "./ctx.ts";
import type { Param } from "./param.ts";
import { runSync, type Steps } from "./steps.ts";

export class Block implements Layer {
  constructor(
    readonly norm1: NormLayer,
    readonly attn: Attention,
    readonly norm2: NormLayer,
    readonly mlp: Layer,
    public recompute = false,
  ) {}

  forward(x: Tensor, ctx: Ctx): Tensor {
    const { x: h, delta } = runSync(this.forwardSteps(x, ctx));
    if (!delta) return h;
    const y = ops.add(h, delta);
    delta.dispose();
    return y;
  }

  /**
   * Forward with attention as an effect (see steps.ts). The block's input is x + delta and its
   * output is x' + delta', each sum left for the next norm's kernel to form (rmsnorm with the
   * residual: one pass instead of an add and a norm): delta is the previous block's unsummed
   * output (absent: the input is x) and is disposed here; the caller passes delta' on to the
   * next block or the final norm. Under recompute the output comes summed (no delta').
   */
  *forwardSteps(x: Tensor, ctx: Ctx, delta?: Tensor): Steps<{ x: Tensor; delta?: Tensor }> {
    if (!this.recompute) return yield* this.run(x, delta, ctx);
    let input = x;
    if (delta) {
      input = ops.add(x, delta);
      delta.dispose();
    }
    ctx.save("x", input);
    const scratch = new Ctx(ctx.batch);
    const out = yield* this.run(input, undefined, scratch);
    const y = ops.add(out.x, out.delta!);
    out.delta!.dispose();
    scratch.free(new Set([input]));
    return { x: y };
  }

  private *run(x: Tensor, delta: Tensor | undefined, ctx: Ctx): Steps<{ x: Tensor; delta: Tensor }> {
    const { y: a, sum: input } = normOfSum(this.norm1, x, delta, ctx.child("norm1"));
    const o = yield* this.attn.forwardSteps(a, ctx.child("attn"));
    const { y: b, sum: h } = this.norm2.forwardResidual(input, o, ctx.child("norm2"));
    o.dispose();
    const m = this.mlp.forward(b, ctx.child("mlp"));
    return { x: h, delta: m };
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    return runSync(this.backwardSteps(dy, ctx));
  }

  *backwardSteps(dy: Tensor, ctx: Ctx): Steps<Tensor> {
    let c = ctx;
    if (this.recompute) {
      c = ctx.child("recomputed");
      (yield* this.run(ctx.get("x"), undefined, c)).delta.dispose();
    }
    const db = this.mlp.backward(dy, c.child("mlp"));
    const dh = this.norm2.backwardResidual(db, dy, c.child("norm2"));
    db.dispose();
    const da = yield* this.attn.backwardSteps(dh, c.child("attn"));
    const dx = this.norm1.backwardResidual(da, dh, c.child("norm1"));
    da.dispose();
    dh.dispose();
    return dx;
  }

  params(): Param[] {
    return [...this.norm1.params(), ...this.attn.params(), ...this.norm2.params(), ...this.mlp.params()];
  }
}
