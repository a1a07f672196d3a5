// The decoder of Llama, Qwen2/2.5, Qwen3 and Mistral: embed_tokens, N x [RMSNorm ->
// attention (GQA, RoPE, optional q/k/v bias, q/k norm, sliding window) -> residual, RMSNorm
// -> SwiGLU -> residual], final RMSNorm, lm_head (tied to embed_tokens or not). Parameter
// names are transformers' own.
import type { DecoderConfig } from "./config.ts";
import { CausalLM, type HFTensor, type ModelOptions } from "./causal-lm.ts";
import { ops, type RopeOptions, type Tensor } from "./ops.ts";
import { Embedding, RMSNorm } from "./layers/basic.ts";
import { Attention } from "./layers/attention.ts";
import { Block } from "./layers/block.ts";
import type { BatchTensors } from "./layers/ctx.ts";
import { Init } from "./layers/init.ts";
import type { Param } from "./layers/param.ts";
import { SwiGLU } from "./layers/mlp.ts";
import { direct } from "./hf/mapping.ts";

export class DecoderLM extends CausalLM {
  readonly embed: Embedding;
  readonly blocks: Block[];
  readonly finalNorm: RMSNorm;
  readonly head: Param;
  readonly maxPositions = undefined;
  /** Every layer's RoPE schedule (one for all, so a batch's cos / sin table serves them all). */
  readonly #rope: RopeOptions;

  constructor(
    readonly config: DecoderConfig,
    opts: ModelOptions = {},
  ) {
    super(opts.dtype ?? "float32");
    const c = config;
    const init = new Init(opts.seed ?? 0, c.initializerRange, this.dtype, !opts.noInit);
    this.embed = new Embedding(init, "model.embed_tokens", c.vocabSize, c.hiddenSize);
    this.blocks = [];
    this.#rope = c.ropeScaling ? { theta: c.ropeTheta, scaling: c.ropeScaling } : { theta: c.ropeTheta };
    for (let i = 0; i < c.numLayers; i++) {
      const p = `model.layers.${i}`;
      const attn = new Attention(init, {
        hidden: c.hiddenSize,
        numHeads: c.numHeads,
        numKvHeads: c.numKvHeads,
        headDim: c.headDim,
        qkvBias: c.qkvBias,
        oBias: c.oBias,
        ...(c.qkNorm ? { qkNormEps: c.rmsNormEps } : {}),
        rope: this.#rope,
        ...(c.layerTypes[i] === "sliding_attention" ? { window: c.slidingWindow! } : {}),
        names: {
          q: `${p}.self_attn.q_proj`,
          k: `${p}.self_attn.k_proj`,
          v: `${p}.self_attn.v_proj`,
          o: `${p}.self_attn.o_proj`,
          qNorm: `${p}.self_attn.q_norm`,
          kNorm: `${p}.self_attn.k_norm`,
        },
      });
      this.blocks.push(
        new Block(
          new RMSNorm(init, `${p}.input_layernorm`, c.hiddenSize, c.rmsNormEps),
          attn,
          new RMSNorm(init, `${p}.post_attention_layernorm`, c.hiddenSize, c.rmsNormEps),
          new SwiGLU(init, `${p}.mlp`, c.hiddenSize, c.intermediateSize, c.mlpBias),
          opts.recompute ?? false,
        ),
      );
    }
    this.finalNorm = new RMSNorm(init, "model.norm", c.hiddenSize, c.rmsNormEps);
    this.head = c.tieWordEmbeddings ? this.embed.weight : init.normal("lm_head.weight", [c.vocabSize, c.hiddenSize]);
  }

  override ropeTable(positions: Tensor): Tensor {
    return ops.ropeTable(positions, this.config.headDim, this.#rope, this.computeDtype === "float64" ? "float64" : "float32");
  }

  embedForward(bt: BatchTensors): Tensor {
    return this.embed.forward(bt.tokens, { idsChecked: bt.checked });
  }

  protected embedBackward(dx: Tensor, bt: BatchTensors): void {
    this.embed.backward(dx, bt.tokens, { idsChecked: bt.checked });
  }

  params(): Param[] {
    const ps = [...this.embed.params(), ...this.blocks.flatMap((b) => b.params()), ...this.finalNorm.params()];
    if (!this.config.tieWordEmbeddings) ps.push(this.head);
    return ps;
  }

  hfTensors(): HFTensor[] {
    return this.params().map((p) => direct(p));
  }
}
