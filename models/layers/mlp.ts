// The two MLPs: SwiGLU (gate/up/down, Llama family) and GELU (c_fc/c_proj, GPT-2).
import { ops, type Tensor } from "../ops.ts";
import { Linear, type Layer } from "./basic.ts";
import type { Ctx } from "./ctx.ts";
import type { Init } from "./init.ts";
import type { Param } from "./param.ts";

export class SwiGLU implements Layer {
  readonly gate: Linear;
  readonly up: Linear;
  readonly down: Linear;

  constructor(init: Init, prefix: string, hidden: number, inner: number, bias: boolean) {
    this.gate = new Linear(init, `${prefix}.gate_proj`, hidden, inner, bias);
    this.up = new Linear(init, `${prefix}.up_proj`, hidden, inner, bias);
    this.down = new Linear(init, `${prefix}.down_proj`, inner, hidden, bias);
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    const g = this.gate.forward(x, ctx.child("gate"));
    const u = this.up.forward(x, ctx.child("up"));
    ctx.save("gate", g);
    ctx.save("up", u);
    return this.down.forward(ops.swiglu(g, u), ctx.child("down"));
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    const dh = this.down.backward(dy, ctx.child("down"));
    const { dgate, dup } = ops.swigluBackward(dh, ctx.get("gate"), ctx.get("up"));
    dh.dispose();
    const dx = this.gate.backward(dgate, ctx.child("gate"));
    dgate.dispose();
    this.up.backwardInto(dup, ctx.child("up"), dx);
    dup.dispose();
    return dx;
  }

  params(): Param[] {
    return [...this.gate.params(), ...this.up.params(), ...this.down.params()];
  }
}

export class GeluMLP implements Layer {
  readonly fc: Linear;
  readonly proj: Linear;

  constructor(init: Init, prefix: string, hidden: number, inner: number) {
    this.fc = new Linear(init, `${prefix}.c_fc`, hidden, inner, true);
    this.proj = new Linear(init, `${prefix}.c_proj`, inner, hidden, true);
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    const f = this.fc.forward(x, ctx.child("fc"));
    ctx.save("f", f);
    return this.proj.forward(ops.gelu(f), ctx.child("proj"));
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    const dg = this.proj.backward(dy, ctx.child("proj"));
    const df = ops.geluBackward(dg, ctx.get("f"));
    dg.dispose();
    const dx = this.fc.backward(df, ctx.child("fc"));
    df.dispose();
    return dx;
  }

  params(): Param[] {
    return [...this.fc.params(), ...this.proj.params()];
  }
}
