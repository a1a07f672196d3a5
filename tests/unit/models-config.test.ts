import { test } from "node:test";
import assert from "node:assert/strict";
import { configFromHF, configToHF, registeredModelTypes, type DecoderConfig, type Gpt2Config, type ModelConfig } from "../../models/index.ts";

// config.json files as published on the Hub (trimmed of fields that do not matter here).
const qwen25 = {
  architectures: ["Qwen2ForCausalLM"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: "silu",
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const qwen3 = {
  architectures: ["Qwen3ForCausalLM"],
  attention_bias: false,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: "silu",
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: "qwen3",
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const llama32 = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 64,
  hidden_act: "silu",
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: "llama3" },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  vocab_size: 128256,
};

const mistral = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  vocab_size: 32000,
};

const gpt2 = {
  activation_function: "gelu_new",
  architectures: ["GPT2LMHeadModel"],
  attn_pdrop: 0.1,
  bos_token_id: 50256,
  embd_pdrop: 0.1,
  eos_token_id: 50256,
  initializer_range: 0.02,
  layer_norm_epsilon: 1e-5,
  model_type: "gpt2",
  n_ctx: 1024,
  n_embd: 768,
  n_head: 12,
  n_inner: null,
  n_layer: 12,
  n_positions: 1024,
  resid_pdrop: 0.1,
  vocab_size: 50257,
};

function strip(c: ModelConfig): Omit<ModelConfig, "hf"> {
  const { hf: _hf, ...rest } = c;
  return rest;
}

/** Saving and reading back gives the same config. */
function roundTrips(c: ModelConfig): void {
  const again = configFromHF(JSON.parse(JSON.stringify(configToHF(c))));
  assert.deepEqual(strip(again), strip(c));
}

test("every built-in model_type is registered", () => {
  assert.deepEqual(registeredModelTypes(), ["gpt2", "llama", "mistral", "qwen2", "qwen3"]);
  assert.throws(() => configFromHF({ model_type: "bert" }), /model_type "bert" is not supported \(known: gpt2, llama/);
});

test("qwen2: q/k/v bias always, no o bias, head_dim from hidden/heads, sliding off unless use_sliding_window", () => {
  const c = configFromHF(qwen25) as DecoderConfig;
  assert.equal(c.family, "decoder");
  assert.equal(c.headDim, 64);
  assert.equal(c.numKvHeads, 2);
  assert.equal(c.qkvBias, true);
  assert.equal(c.oBias, false);
  assert.equal(c.qkNorm, false);
  assert.equal(c.ropeTheta, 1e6);
  assert.equal(c.ropeScaling, undefined);
  assert.equal(c.slidingWindow, undefined);
  assert.ok(c.layerTypes.every((t) => t === "full_attention"));
  assert.equal(c.tieWordEmbeddings, true);
  roundTrips(c);
  const hf = configToHF(c, "bfloat16");
  assert.deepEqual(hf.architectures, ["Qwen2ForCausalLM"]);
  assert.equal(hf.dtype, "bfloat16");
  assert.equal(hf.torch_dtype, "bfloat16");
  assert.deepEqual(hf.rope_parameters, { rope_type: "default", rope_theta: 1e6 });

  // use_sliding_window: layers from max_window_layers on slide.
  const s = configFromHF({ ...qwen25, use_sliding_window: true, sliding_window: 512, max_window_layers: 20 }) as DecoderConfig;
  assert.equal(s.slidingWindow, 512);
  assert.deepEqual(s.layerTypes.map((t, i) => (t === "sliding_attention" ? i : -1)).filter((i) => i >= 0), [20, 21, 22, 23]);
  roundTrips(s);
});

test("qwen3: q/k norm, head_dim independent of hidden/heads, attention_bias on q/k/v/o", () => {
  const c = configFromHF(qwen3) as DecoderConfig;
  assert.equal(c.headDim, 128);
  assert.notEqual(c.headDim, c.hiddenSize / c.numHeads);
  assert.equal(c.qkNorm, true);
  assert.equal(c.qkvBias, false);
  assert.equal(c.oBias, false);
  roundTrips(c);
  const b = configFromHF({ ...qwen3, attention_bias: true }) as DecoderConfig;
  assert.equal(b.qkvBias, true);
  assert.equal(b.oBias, true);
  roundTrips(b);
});

test("llama: llama3 rope scaling, mlp_bias, and transformers 5 rope_parameters", () => {
  const c = configFromHF(llama32) as DecoderConfig;
  assert.equal(c.ropeTheta, 500000);
  assert.deepEqual(c.ropeScaling, { type: "llama3", factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.equal(c.rmsNormEps, 1e-5);
  assert.equal(c.mlpBias, false);
  roundTrips(c);
  const hf = configToHF(c);
  assert.deepEqual(hf.rope_parameters, {
    rope_type: "llama3",
    rope_theta: 500000,
    factor: 32,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  });
  assert.equal(hf.attention_bias, false);

  // transformers 5 writes rope_parameters instead of rope_theta + rope_scaling.
  const { rope_scaling: _s, rope_theta: _t, ...v5 } = llama32;
  const c5 = configFromHF({ ...v5, rope_parameters: hf.rope_parameters }) as DecoderConfig;
  assert.deepEqual(strip(c5), strip(c));

  const yarn = configFromHF({
    ...v5,
    rope_parameters: { rope_type: "yarn", rope_theta: 1e4, factor: 4, original_max_position_embeddings: 4096, beta_fast: 32 },
  }) as DecoderConfig;
  assert.deepEqual(yarn.ropeScaling, { type: "yarn", factor: 4, originalMaxPositionEmbeddings: 4096, betaFast: 32 });
  roundTrips(yarn);
  // transformers 5: no factor means max_position_embeddings / original_max_position_embeddings.
  const yarnNoFactor = configFromHF({ ...v5, rope_parameters: { rope_type: "yarn", rope_theta: 1e4, original_max_position_embeddings: 32768 } }) as DecoderConfig;
  assert.deepEqual(yarnNoFactor.ropeScaling, { type: "yarn", factor: 4, originalMaxPositionEmbeddings: 32768 });
  const lin = configFromHF({ ...v5, rope_scaling: { type: "linear", factor: 2 }, rope_theta: 1e4 }) as DecoderConfig;
  assert.deepEqual(lin.ropeScaling, { type: "linear", factor: 2 });
  assert.throws(() => configFromHF({ ...v5, rope_parameters: { rope_type: "dynamic", factor: 2 } }), /rope_type "dynamic" is not supported/);
  assert.throws(() => configFromHF({ ...llama32, hidden_act: "gelu" }), /hidden_act "gelu" is not supported/);
  assert.throws(() => configFromHF({ ...llama32, hidden_size: undefined }), /missing hidden_size/);
});

test("mistral: every layer slides with sliding_window; null means full attention", () => {
  const c = configFromHF(mistral) as DecoderConfig;
  assert.equal(c.slidingWindow, 4096);
  assert.ok(c.layerTypes.every((t) => t === "sliding_attention"));
  assert.equal(c.headDim, 128);
  assert.equal(c.tieWordEmbeddings, false);
  roundTrips(c);
  assert.equal(configToHF(c).sliding_window, 4096);
  const full = configFromHF({ ...mistral, sliding_window: null }) as DecoderConfig;
  assert.equal(full.slidingWindow, undefined);
  assert.ok(full.layerTypes.every((t) => t === "full_attention"));
  roundTrips(full);
});

test("gpt2: n_inner null means 4*n_embd; tied lm head; tanh GELU only", () => {
  const c = configFromHF(gpt2) as Gpt2Config;
  assert.equal(c.family, "gpt2");
  assert.equal(c.nInner, 3072);
  assert.equal(c.nPositions, 1024);
  assert.equal(c.layerNormEps, 1e-5);
  roundTrips(c);
  const hf = configToHF(c);
  assert.deepEqual(hf.architectures, ["GPT2LMHeadModel"]);
  assert.equal(hf.activation_function, "gelu_new");
  assert.equal(hf.n_ctx, 1024, "unmodelled fields are kept");
  assert.throws(() => configFromHF({ ...gpt2, activation_function: "relu" }), /activation_function "relu" is not supported/);
  assert.throws(() => configFromHF({ ...gpt2, tie_word_embeddings: false }), /untied lm_head/);
});
