// GPT-2: wte + wpe, N x [LayerNorm -> attention (c_attn: fused q/k/v with bias, c_proj) ->
// residual, LayerNorm -> MLP (c_fc, tanh GELU, c_proj) -> residual], ln_f, LM head tied to
// wte. Internally c_attn is three projections named `...c_attn.{q,k,v}`; HF files hold the
// fused Conv1D tensors, mapped in hfTensors().
import type { Gpt2Config } from "./config.ts";
import { CausalLM, type HFTensor, type ModelOptions } from "./causal-lm.ts";
import { ops, type Tensor } from "./ops.ts";
import { Embedding, LayerNorm } from "./layers/basic.ts";
import { Attention } from "./layers/attention.ts";
import { Block } from "./layers/block.ts";
import type { BatchTensors } from "./layers/ctx.ts";
import { Init } from "./layers/init.ts";
import type { Param } from "./layers/param.ts";
import { GeluMLP } from "./layers/mlp.ts";
import { concatBias, conv1dWeight, direct } from "./hf/mapping.ts";

export class Gpt2LM extends CausalLM {
  readonly wte: Embedding;
  readonly wpe: Embedding;
  readonly blocks: Block[];
  readonly attentions: Attention[];
  readonly mlps: GeluMLP[];
  readonly finalNorm: LayerNorm;
  readonly head: Param;
  readonly maxPositions: number;

  constructor(
    readonly config: Gpt2Config,
    opts: ModelOptions = {},
  ) {
    super(opts.dtype ?? "float32");
    const c = config;
    this.maxPositions = c.nPositions;
    const init = new Init(opts.seed ?? 0, c.initializerRange, this.dtype, !opts.noInit);
    this.wte = new Embedding(init, "transformer.wte", c.vocabSize, c.nEmbd);
    this.wpe = new Embedding(init, "transformer.wpe", c.nPositions, c.nEmbd);
    this.blocks = [];
    this.attentions = [];
    this.mlps = [];
    for (let i = 0; i < c.nLayer; i++) {
      const p = `transformer.h.${i}`;
      const attn = new Attention(init, {
        hidden: c.nEmbd,
        numHeads: c.nHead,
        numKvHeads: c.nHead,
        headDim: c.nEmbd / c.nHead,
        qkvBias: true,
        oBias: true,
        names: { q: `${p}.attn.c_attn.q`, k: `${p}.attn.c_attn.k`, v: `${p}.attn.c_attn.v`, o: `${p}.attn.c_proj` },
      });
      const mlp = new GeluMLP(init, `${p}.mlp`, c.nEmbd, c.nInner);
      this.attentions.push(attn);
      this.mlps.push(mlp);
      this.blocks.push(
        new Block(
          new LayerNorm(init, `${p}.ln_1`, c.nEmbd, c.layerNormEps),
          attn,
          new LayerNorm(init, `${p}.ln_2`, c.nEmbd, c.layerNormEps),
          mlp,
          opts.recompute ?? false,
        ),
      );
    }
    this.finalNorm = new LayerNorm(init, "transformer.ln_f", c.nEmbd, c.layerNormEps);
    this.head = this.wte.weight;
  }

  embedForward(bt: BatchTensors): Tensor {
    const t = this.wte.forward(bt.tokens, { idsChecked: bt.checked });
    const p = this.wpe.forward(bt.positions, { idsChecked: bt.checked });
    const h = ops.add(t, p);
    t.dispose();
    p.dispose();
    return h;
  }

  protected embedBackward(dx: Tensor, bt: BatchTensors): void {
    this.wte.backward(dx, bt.tokens, { idsChecked: bt.checked });
    this.wpe.backward(dx, bt.positions, { idsChecked: bt.checked });
  }

  params(): Param[] {
    return [...this.wte.params(), ...this.wpe.params(), ...this.blocks.flatMap((b) => b.params()), ...this.finalNorm.params()];
  }

  hfTensors(): HFTensor[] {
    const out: HFTensor[] = [direct(this.wte.weight), direct(this.wpe.weight)];
    this.blocks.forEach((b, i) => {
      const p = `transformer.h.${i}`;
      const a = this.attentions[i]!;
      const m = this.mlps[i]!;
      out.push(
        ...b.norm1.params().map((x) => direct(x)),
        conv1dWeight(`${p}.attn.c_attn.weight`, [a.q.weight, a.k.weight, a.v.weight]),
        concatBias(`${p}.attn.c_attn.bias`, [a.q.bias!, a.k.bias!, a.v.bias!]),
        conv1dWeight(`${p}.attn.c_proj.weight`, [a.o.weight]),
        direct(a.o.bias!),
        ...b.norm2.params().map((x) => direct(x)),
        conv1dWeight(`${p}.mlp.c_fc.weight`, [m.fc.weight]),
        direct(m.fc.bias!),
        conv1dWeight(`${p}.mlp.c_proj.weight`, [m.proj.weight]),
        direct(m.proj.bias!),
      );
    });
    out.push(...this.finalNorm.params().map((x) => direct(x)));
    return out;
  }
}
