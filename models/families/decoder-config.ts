// HF config.json <-> DecoderConfig for llama, qwen2, qwen3 and mistral.
//
// RoPE: transformers 5 writes `rope_parameters` {rope_type, rope_theta, ...}; 4.x wrote
// `rope_theta` + `rope_scaling`. Both are read; both are written (5 takes `rope_scaling` as
// an alias of `rope_parameters`, so they carry the same dict).
import { bool, int, num, optInt, type ConfigCodec, type DecoderConfig, type HFConfigJson, type LayerType, type RopeScaling } from "../config.ts";

const ARCHITECTURES: Record<string, string> = {
  llama: "LlamaForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
  mistral: "MistralForCausalLM",
};

export const DECODER_MODEL_TYPES = Object.keys(ARCHITECTURES);

function ropeFromHF(hf: HFConfigJson): { theta: number; scaling?: RopeScaling } {
  const where = `config.json (${String(hf.model_type)})`;
  const params = (hf.rope_parameters ?? hf.rope_scaling ?? undefined) as Record<string, unknown> | undefined;
  if (params !== undefined && (typeof params !== "object" || Array.isArray(params))) throw new Error(`${where}: rope_parameters is not an object`);
  const theta = typeof params?.rope_theta === "number" ? params.rope_theta : num(hf, "rope_theta", 10000);
  const type = (params?.rope_type ?? params?.type ?? "default") as string;
  const p = (key: string, fallback?: number): number => {
    const v = params?.[key] ?? fallback;
    if (typeof v !== "number") throw new Error(`${where}: rope ${type} needs a number ${key}`);
    return v;
  };
  const optP = (key: string): number | undefined => (typeof params?.[key] === "number" ? (params[key] as number) : undefined);
  switch (type) {
    case "default":
      return { theta };
    case "linear":
      return { theta, scaling: { type: "linear", factor: p("factor") } };
    case "llama3":
      return {
        theta,
        scaling: {
          type: "llama3",
          factor: p("factor"),
          lowFreqFactor: p("low_freq_factor"),
          highFreqFactor: p("high_freq_factor"),
          originalMaxPositionEmbeddings: p("original_max_position_embeddings"),
        },
      };
    case "yarn": {
      const maxPos = int(hf, "max_position_embeddings");
      const original = p("original_max_position_embeddings", maxPos);
      // transformers 5: an absent factor is the context extension max_position_embeddings / original.
      const scaling: RopeScaling = { type: "yarn", factor: p("factor", maxPos / original), originalMaxPositionEmbeddings: original };
      const betaFast = optP("beta_fast");
      const betaSlow = optP("beta_slow");
      const attentionFactor = optP("attention_factor");
      if (betaFast !== undefined) scaling.betaFast = betaFast;
      if (betaSlow !== undefined) scaling.betaSlow = betaSlow;
      if (attentionFactor !== undefined) scaling.attentionFactor = attentionFactor;
      const mscale = optP("mscale");
      const mscaleAllDim = optP("mscale_all_dim");
      if (mscale !== undefined) scaling.mscale = mscale;
      if (mscaleAllDim !== undefined) scaling.mscaleAllDim = mscaleAllDim;
      if (typeof params?.truncate === "boolean") scaling.truncate = params.truncate;
      return { theta, scaling };
    }
    default:
      throw new Error(`${where}: rope_type ${JSON.stringify(type)} is not supported (default, linear, llama3, yarn)`);
  }
}

function ropeToHF(theta: number, s: RopeScaling | undefined): Record<string, unknown> {
  if (!s) return { rope_type: "default", rope_theta: theta };
  switch (s.type) {
    case "linear":
      return { rope_type: "linear", rope_theta: theta, factor: s.factor };
    case "llama3":
      return {
        rope_type: "llama3",
        rope_theta: theta,
        factor: s.factor,
        low_freq_factor: s.lowFreqFactor,
        high_freq_factor: s.highFreqFactor,
        original_max_position_embeddings: s.originalMaxPositionEmbeddings,
      };
    case "yarn": {
      const out: Record<string, unknown> = {
        rope_type: "yarn",
        rope_theta: theta,
        factor: s.factor,
        original_max_position_embeddings: s.originalMaxPositionEmbeddings,
      };
      if (s.betaFast !== undefined) out.beta_fast = s.betaFast;
      if (s.betaSlow !== undefined) out.beta_slow = s.betaSlow;
      if (s.attentionFactor !== undefined) out.attention_factor = s.attentionFactor;
      if (s.mscale !== undefined) out.mscale = s.mscale;
      if (s.mscaleAllDim !== undefined) out.mscale_all_dim = s.mscaleAllDim;
      if (s.truncate !== undefined) out.truncate = s.truncate;
      return out;
    }
  }
}

function layerTypesFromHF(hf: HFConfigJson, numLayers: number): { layerTypes: LayerType[]; slidingWindow?: number } {
  const mt = hf.model_type as string;
  const where = `config.json (${mt})`;
  let window: number | undefined;
  if (mt === "mistral") window = optInt(hf, "sliding_window");
  else if (mt === "qwen2" || mt === "qwen3") window = bool(hf, "use_sliding_window", false) ? optInt(hf, "sliding_window") : undefined;
  else if (hf.sliding_window !== undefined && hf.sliding_window !== null) {
    throw new Error(`${where}: sliding_window is not used by ${mt} in transformers; refusing to guess`);
  }
  let layerTypes: LayerType[];
  if (Array.isArray(hf.layer_types) && mt !== "mistral") {
    if (hf.layer_types.length !== numLayers) throw new Error(`${where}: layer_types has ${hf.layer_types.length} entries for ${numLayers} layers`);
    layerTypes = hf.layer_types.map((t) => {
      if (t !== "full_attention" && t !== "sliding_attention") throw new Error(`${where}: unknown layer type ${JSON.stringify(t)}`);
      return t;
    });
  } else if (mt === "qwen2" || mt === "qwen3") {
    const maxWindowLayers = int(hf, "max_window_layers", 28);
    layerTypes = Array.from({ length: numLayers }, (_, i) => (window !== undefined && i >= maxWindowLayers ? "sliding_attention" : "full_attention"));
  } else {
    layerTypes = Array.from({ length: numLayers }, () => (window !== undefined ? "sliding_attention" : "full_attention"));
  }
  if (layerTypes.includes("sliding_attention") && window === undefined) throw new Error(`${where}: sliding layers but no sliding_window`);
  return window === undefined || !layerTypes.includes("sliding_attention") ? { layerTypes } : { layerTypes, slidingWindow: window };
}

export const decoderCodec: ConfigCodec<DecoderConfig> = {
  fromHF(hf) {
    const mt = hf.model_type as string;
    const where = `config.json (${mt})`;
    const act = hf.hidden_act ?? "silu";
    if (act !== "silu") throw new Error(`${where}: hidden_act ${JSON.stringify(act)} is not supported (silu)`);
    const hiddenSize = int(hf, "hidden_size");
    const numHeads = int(hf, "num_attention_heads");
    const numLayers = int(hf, "num_hidden_layers");
    // Qwen3's dataclass default head_dim is 128, not hidden/heads.
    const headDim = int(hf, "head_dim", mt === "qwen3" ? 128 : Math.floor(hiddenSize / numHeads));
    const numKvHeads = int(hf, "num_key_value_heads", numHeads);
    if (numHeads % numKvHeads !== 0) throw new Error(`${where}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
    const attentionBias = bool(hf, "attention_bias", false);
    const rope = ropeFromHF(hf);
    const { layerTypes, slidingWindow } = layerTypesFromHF(hf, numLayers);
    const cfg: DecoderConfig = {
      family: "decoder",
      modelType: mt,
      vocabSize: int(hf, "vocab_size"),
      hiddenSize,
      intermediateSize: int(hf, "intermediate_size"),
      numLayers,
      numHeads,
      numKvHeads,
      headDim,
      rmsNormEps: num(hf, "rms_norm_eps", 1e-6),
      ropeTheta: rope.theta,
      qkvBias: mt === "qwen2" ? true : mt === "mistral" ? false : attentionBias,
      oBias: mt === "llama" || mt === "qwen3" ? attentionBias : false,
      mlpBias: mt === "llama" ? bool(hf, "mlp_bias", false) : false,
      qkNorm: mt === "qwen3",
      layerTypes,
      tieWordEmbeddings: bool(hf, "tie_word_embeddings", false),
      maxPositionEmbeddings: int(hf, "max_position_embeddings", 4096),
      initializerRange: num(hf, "initializer_range", 0.02),
      bosTokenId: optInt(hf, "bos_token_id"),
      eosTokenId: Array.isArray(hf.eos_token_id) ? (hf.eos_token_id as number[]) : optInt(hf, "eos_token_id"),
      padTokenId: optInt(hf, "pad_token_id"),
      hf,
    };
    if (rope.scaling) cfg.ropeScaling = rope.scaling;
    if (slidingWindow !== undefined) cfg.slidingWindow = slidingWindow;
    return cfg;
  },

  toHF(c) {
    const arch = ARCHITECTURES[c.modelType];
    const where = `config (${c.modelType})`;
    if (!arch) throw new Error(`${where}: no HF architecture for model_type ${c.modelType}`);
    const rope = ropeToHF(c.ropeTheta, c.ropeScaling);
    const out: HFConfigJson = {
      ...c.hf,
      model_type: c.modelType,
      architectures: [arch],
      vocab_size: c.vocabSize,
      hidden_size: c.hiddenSize,
      intermediate_size: c.intermediateSize,
      num_hidden_layers: c.numLayers,
      num_attention_heads: c.numHeads,
      num_key_value_heads: c.numKvHeads,
      head_dim: c.headDim,
      hidden_act: "silu",
      max_position_embeddings: c.maxPositionEmbeddings,
      initializer_range: c.initializerRange,
      rms_norm_eps: c.rmsNormEps,
      use_cache: true,
      tie_word_embeddings: c.tieWordEmbeddings,
      rope_theta: c.ropeTheta,
      rope_parameters: rope,
      attention_dropout: 0.0,
      bos_token_id: c.bosTokenId ?? null,
      eos_token_id: c.eosTokenId ?? null,
      pad_token_id: c.padTokenId ?? null,
    };
    if (c.ropeScaling) out.rope_scaling = { ...rope };
    else delete out.rope_scaling;
    const sliding = c.layerTypes.includes("sliding_attention");
    if (sliding && c.slidingWindow === undefined) throw new Error(`${where}: sliding layers but no slidingWindow`);
    const needs = (ok: boolean, what: string) => {
      if (!ok) throw new Error(`${where}: ${c.modelType} in transformers cannot express ${what}`);
    };
    needs(!c.qkNorm || c.modelType === "qwen3", "q/k norm");
    needs(c.qkNorm || c.modelType !== "qwen3", "qwen3 without q/k norm");
    switch (c.modelType) {
      case "llama":
        needs(c.qkvBias === c.oBias, "q/k/v bias without o bias");
        needs(!sliding, "sliding-window attention");
        out.attention_bias = c.qkvBias;
        out.mlp_bias = c.mlpBias;
        out.pretraining_tp = 1;
        break;
      case "qwen2":
      case "qwen3":
        if (c.modelType === "qwen2") needs(c.qkvBias && !c.oBias, "attention biases other than q/k/v");
        else {
          needs(c.qkvBias === c.oBias, "q/k/v bias without o bias");
          out.attention_bias = c.qkvBias;
        }
        needs(!c.mlpBias, "MLP bias");
        out.use_sliding_window = sliding;
        out.sliding_window = sliding ? c.slidingWindow : null;
        out.max_window_layers = sliding ? c.layerTypes.indexOf("sliding_attention") : c.numLayers;
        out.layer_types = [...c.layerTypes];
        break;
      case "mistral":
        needs(!c.qkvBias && !c.oBias && !c.mlpBias, "biases");
        needs(c.layerTypes.every((t) => t === c.layerTypes[0]), "mixed full and sliding layers");
        out.sliding_window = sliding ? c.slidingWindow : null;
        delete out.layer_types;
        break;
    }
    return out;
  },
};
