// Shared helpers of the models-*.test.ts files: tiny configs of every family, parameter
// randomisation, and central finite differences in float64.
import { configFromHF, packSequences, type CausalLM, type ModelConfig, type PackedBatch, type Param } from "../../models/index.ts";
import { randn, tensor, type Tensor } from "../../native/index.ts";

export const VOCAB = 40;

export const tinyConfigs: Record<string, ModelConfig> = {
  qwen2: configFromHF({
    model_type: "qwen2",
    vocab_size: VOCAB,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 64,
    tie_word_embeddings: false,
  }),
  qwen3: configFromHF({
    model_type: "qwen3",
    vocab_size: VOCAB,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 6,
    max_position_embeddings: 64,
    tie_word_embeddings: true,
    rope_theta: 1e6,
  }),
  llama: configFromHF({
    model_type: "llama",
    vocab_size: VOCAB,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    max_position_embeddings: 64,
    rope_theta: 10000,
    rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 },
    mlp_bias: true,
    attention_bias: true,
  }),
  mistral: configFromHF({
    model_type: "mistral",
    vocab_size: VOCAB,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    max_position_embeddings: 64,
    sliding_window: 3,
  }),
  gpt2: configFromHF({ model_type: "gpt2", vocab_size: VOCAB, n_positions: 32, n_embd: 16, n_layer: 2, n_head: 4 }),
};

/** Three sequences, one label masked as a prompt would be, a sequence longer than the window. */
export function tinyBatch(): PackedBatch {
  const seqs = [
    [3, 14, 15, 9, 26, 5, 35],
    [8, 9, 7],
    [1, 2, 33, 38, 27, 0],
  ];
  const batch = packSequences(seqs);
  batch.labels![batch.cuSeqlens[1]!] = -100;
  return batch;
}

/** Random values for every parameter (norm weights around 1), so no path is trivial. */
export function randomizeParams(params: readonly Param[], seed: number, std = 0.3): void {
  params.forEach((p, i) => {
    const r = randn(p.shape, { seed: seed + i, std, dtype: p.dtype === "bfloat16" ? "float32" : p.dtype });
    const a = r.toArray() as Float32Array | Float64Array;
    r.dispose();
    if (!p.decay) for (let j = 0; j < a.length; j++) a[j] = a[j]! + 1;
    p.set(tensor(a, p.shape, { dtype: p.dtype }));
  });
}

export function values(t: Tensor): Float64Array {
  return Float64Array.from(t.toArray() as Float32Array | Float64Array);
}

/** Sets element i of a parameter; returns the old value. */
export function setParamAt(p: Param, i: number, v: number): number {
  const a = values(p.value);
  const old = a[i]!;
  a[i] = v;
  p.set(tensor(a, p.shape, { dtype: p.dtype }));
  return old;
}

/** d f / d param[i] by central differences. */
export function numericGrad(p: Param, i: number, f: () => number, eps = 1e-5): number {
  const x = values(p.value)[i]!;
  setParamAt(p, i, x + eps);
  const up = f();
  setParamAt(p, i, x - eps);
  const down = f();
  setParamAt(p, i, x);
  return (up - down) / (2 * eps);
}

/** A few element indices of a tensor of n elements, spread out, deterministic. */
export function sampleIndices(n: number, k: number, salt: number): number[] {
  const out = new Set<number>();
  const m = Math.min(k, n);
  for (let j = 0; j < m; j++) out.add((Math.floor(((j + 0.5) * n) / m) + salt * 7919) % n);
  return [...out];
}

export function assertClose(actual: number, expected: number, what: string, rtol: number, atol: number): void {
  const err = Math.abs(actual - expected);
  if (!(err <= atol + rtol * Math.abs(expected))) {
    throw new Error(`${what}: ${actual} vs ${expected} (|diff| ${err.toExponential(2)} > atol ${atol} + rtol ${rtol} * |expected|)`);
  }
}

/** Checks model gradients of loss(batch) against finite differences of evalLoss. */
export function checkModelGradients(model: CausalLM, batch: PackedBatch, perParam: number, rtol: number, atol: number): number {
  model.zeroGrad();
  model.loss(batch);
  const f = () => model.evalLoss(batch).loss;
  let checked = 0;
  model.params().forEach((p, k) => {
    const g = values(p.grad!);
    for (const i of sampleIndices(p.value.numel, perParam, k + 1)) {
      assertClose(g[i]!, numericGrad(p, i, f), `d loss / d ${p.name}[${i}]`, rtol, atol);
      checked++;
    }
  });
  return checked;
}
