// The two MLPs: SwiGLU (gate/up/down, Llama family) and GELU (c_fc/c_proj, GPT-2).
import { ops, type Tensor } from "../ops.ts";
import { Linear, LinearGroup, type Layer } from "./basic.ts";
import type { Ctx } from "./ctx.ts";
import type { Init } from "./init.ts";
import type { Param } from "./param.ts";

export class SwiGLU implements Layer {
  readonly gate: Linear;
  readonly up: Linear;
  readonly down: Linear;
  /** gate and up as one GEMM a pass, its output [T, 2 inner] packed gate|up. */
  private readonly gateUp: LinearGroup;

  constructor(init: Init, prefix: string, hidden: number, inner: number, bias: boolean) {
    this.gate = new Linear(init, `${prefix}.gate_proj`, hidden, inner, bias);
    this.up = new Linear(init, `${prefix}.up_proj`, hidden, inner, bias);
    this.down = new Linear(init, `${prefix}.down_proj`, inner, hidden, bias);
    this.gateUp = new LinearGroup([this.gate, this.up]);
  }

  forward(x: Tensor, ctx: Ctx): Tensor {
    const gu = this.gateUp.forward(x, ctx.child("gate_up"));
    ctx.save("gate_up", gu);
    return this.down.forward(ops.swigluPacked(gu), ctx.child("down"));
  }

  backward(dy: Tensor, ctx: Ctx): Tensor {
    const dh = this.down.backward(dy, ctx.child("down"));
    const dgu = ops.swigluPackedBackward(dh, ctx.get("gate_up"));
    dh.dispose();
    const dx = this.gateUp.backward(dgu, ctx.child("gate_up"));
    dgu.dispose();
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
