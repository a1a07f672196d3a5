// Which parameters get weight decay, and which go to Muon. Both look only at the name and
// the (logical) shape, so a rule is testable without a model.

/**
 * The usual rule (nanoGPT, torch recipes): weight decay on matrices (>= 2-D: linear weights
 * and embeddings), none on vectors (norm weights, biases) or scalars.
 */
export function noDecay(_name: string, shape: readonly number[]): boolean {
  return shape.length < 2;
}

// A dotted name component that marks an embedding table or the LM head, across the
// families we load and their relatives: Llama/Qwen/Mistral `model.embed_tokens`, `lm_head`;
// GPT-2 `wte`, `wpe`; GPT-NeoX `embed_in`/`embed_out`; Meta's `tok_embeddings`, top-level
// `output`.
const EMBEDDING_OR_HEAD_PART = /^(?:lm_head|wte|wpe|.*embed.*)$/;

/** True for an embedding table or the LM head, by its name. */
export function isEmbeddingOrHead(name: string): boolean {
  return name.startsWith("output.") || name.split(".").some((part) => EMBEDDING_OR_HEAD_PART.test(part));
}

/**
 * Moonlight's split: Muon orthogonalises the 2-D hidden weights only (attention and MLP
 * projections). Embeddings and the LM head (their rows are per-token, not a linear map
 * between hidden spaces), norms, biases and anything not 2-D go to AdamW.
 */
export function usesMuon(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && !isEmbeddingOrHead(name);
}
