// HF config.json <-> Gpt2Config.
import { bool, int, num, optInt, type ConfigCodec, type Gpt2Config } from "../config.ts";

// Every name transformers maps to the tanh approximation of GELU.
const TANH_GELU = new Set(["gelu_new", "gelu_pytorch_tanh", "gelu_fast"]);

export const gpt2Codec: ConfigCodec<Gpt2Config> = {
  fromHF(hf) {
    const where = "config.json (gpt2)";
    const act = hf.activation_function ?? "gelu_new";
    if (typeof act !== "string" || !TANH_GELU.has(act)) {
      throw new Error(`${where}: activation_function ${JSON.stringify(act)} is not supported (${[...TANH_GELU].join(", ")})`);
    }
    if (!bool(hf, "tie_word_embeddings", true)) throw new Error(`${where}: untied lm_head is not supported for gpt2`);
    if (!bool(hf, "scale_attn_weights", true)) throw new Error(`${where}: scale_attn_weights=false is not supported`);
    if (bool(hf, "scale_attn_by_inverse_layer_idx", false)) throw new Error(`${where}: scale_attn_by_inverse_layer_idx is not supported`);
    if (bool(hf, "add_cross_attention", false)) throw new Error(`${where}: add_cross_attention is not supported`);
    const nEmbd = int(hf, "n_embd");
    const nHead = int(hf, "n_head");
    if (nEmbd % nHead !== 0) throw new Error(`${where}: n_embd ${nEmbd} is not a multiple of n_head ${nHead}`);
    const eos = optInt(hf, "eos_token_id");
    return {
      family: "gpt2",
      modelType: "gpt2",
      vocabSize: int(hf, "vocab_size"),
      nPositions: int(hf, "n_positions"),
      nEmbd,
      nLayer: int(hf, "n_layer"),
      nHead,
      nInner: int(hf, "n_inner", 4 * nEmbd),
      layerNormEps: num(hf, "layer_norm_epsilon", 1e-5),
      initializerRange: num(hf, "initializer_range", 0.02),
      bosTokenId: optInt(hf, "bos_token_id"),
      eosTokenId: eos,
      hf,
    };
  },

  toHF(c) {
    return {
      // Dropout is not modelled here: a model trained without it is saved without it.
      resid_pdrop: 0.0,
      embd_pdrop: 0.0,
      attn_pdrop: 0.0,
      ...c.hf,
      model_type: "gpt2",
      architectures: ["GPT2LMHeadModel"],
      vocab_size: c.vocabSize,
      n_positions: c.nPositions,
      n_embd: c.nEmbd,
      n_layer: c.nLayer,
      n_head: c.nHead,
      n_inner: c.nInner,
      activation_function: "gelu_new",
      layer_norm_epsilon: c.layerNormEps,
      initializer_range: c.initializerRange,
      scale_attn_weights: true,
      scale_attn_by_inverse_layer_idx: false,
      reorder_and_upcast_attn: false,
      tie_word_embeddings: true,
      use_cache: true,
      bos_token_id: c.bosTokenId ?? null,
      eos_token_id: c.eosTokenId ?? null,
    };
  },
};
