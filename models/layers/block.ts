// A pre-norm transformer block: x + attn(norm1(x)), then h + mlp(norm2(h)). With
// `recompute`, forward keeps only its input and backward runs the forward again first
// (activation checkpointing per block).
import { ops, type Tensor } from "../ops.ts";
import type { Layer, NormLayer } from "./basic.ts";
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
    return runSync(this.forwardSteps(x, ctx));
  }

  /** Forward with attention as an effect (see steps.ts). */
  *forwardSteps(x: Tensor, ctx: Ctx): Steps<Tensor> {
    if (!this.recompute) return yield* this.run(x, ctx);
    ctx.save("x", x);
    const scratch = new Ctx(ctx.batch);
    const y = yield* this.run(x, scratch);
    scratch.free(new Set([x]));
    return y;
  }

  private *run(x: Tensor, ctx: Ctx): Steps<Tensor> {
    const a = this.norm1.forward(x, ctx.child("norm1"));
    const o = yield* this.attn.forwardSteps(a, ctx.child("attn"));
    const { y: b, sum: h } = this.norm2.forwardResidual(x, o, ctx.child("norm2"));
    o.dispose();
    const m = this.mlp.forward(b, ctx.child("mlp"));
    const y = ops.add(h, m);
    m.dispose();
    return y;
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    return runSync(this.backwardSteps(dy, ctx));
  }

  *backwardSteps(dy: Tensor, ctx: Ctx): Steps<Tensor> {
    let c = ctx;
    if (this.recompute) {
      c = ctx.child("recomputed");
      (yield* this.run(ctx.get("x"), c)).dispose();
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
