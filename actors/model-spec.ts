// Which model a rank builds, resolved once (by the coordinator's side) so that every rank
// builds the same one without reading the tokenizer itself.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { JobConfig } from "../runtime/index.ts";
import { configFromHF, createModel, loadHF, type CausalLM } from "../models/index.ts";
import { cudaAvailable } from "../native/index.ts";

/** Inline HF config.json fields (vocab_size filled), or an HF model folder. */
export type ModelSpec =
  | { kind: "config"; hf: Record<string, unknown>; seed: number }
  | { kind: "path"; path: string };

export function resolveModelSpec(cfg: JobConfig): ModelSpec {
  if (cfg.model.path !== undefined) return { kind: "path", path: cfg.model.path };
  const hf: Record<string, unknown> = { ...cfg.model.config };
  hf.vocab_size ??= tokenizerVocabSize(cfg.data.tokenizer);
  return { kind: "config", hf, seed: cfg.model.init_seed };
}

/**
 * The tokenizer's size with its added tokens, as `len(tokenizer)` in transformers: one more
 * than the largest id in tokenizer.json's vocabulary or added tokens.
 */
export function tokenizerVocabSize(dir: string): number {
  const path = join(dir, "tokenizer.json");
  let json: { model?: { vocab?: unknown }; added_tokens?: { id: number }[] };
  try {
    json = JSON.parse(readFileSync(path, "utf8")) as typeof json;
  } catch (err) {
    throw new Error(`cannot read the tokenizer's vocabulary size from ${path}: ${(err as Error).message}`);
  }
  const vocab = json.model?.vocab;
  // BPE / WordPiece: {token: id}; Unigram: [[token, score], ...] with ids by position.
  let max = Array.isArray(vocab) ? vocab.length - 1 : -1;
  if (vocab && !Array.isArray(vocab) && typeof vocab === "object") {
    for (const id of Object.values(vocab as Record<string, number>)) if (id > max) max = id;
  }
  for (const t of json.added_tokens ?? []) if (t.id > max) max = t.id;
  if (max < 0) throw new Error(`${path} holds no vocabulary`);
  return max + 1;
}

/**
 * What the ranks can train today; checked before any rank process starts (with the world
 * size), and again by each rank.
 */
export function checkTrainable(cfg: Pick<JobConfig, "device" | "model">, world = 1): void {
  if (cfg.device === "cpu") {
    if (cfg.model.dtype === "bfloat16") throw new Error("model.dtype bfloat16: the cpu backend computes in float32 (use auto or float32)");
    return;
  }
  if (!cudaAvailable()) {
    throw new Error("device cuda: this addon was built without CUDA or sees no GPU (buildInfo() says which); set device: cpu");
  }
  if (world > 1) {
    throw new Error(`device cuda: ${world} ranks need the NCCL backend of the collectives, which is not built yet; train on one GPU (mesh dp=fsdp=sp=1) or set device: cpu`);
  }
}

/** The dtype the layers compute in: bfloat16 on cuda unless model.dtype says float32; float32 on cpu. */
export function computeDtypeOf(cfg: Pick<JobConfig, "device" | "model">): "float32" | "bfloat16" {
  if (cfg.device === "cpu") return "float32";
  return cfg.model.dtype === "float32" ? "float32" : "bfloat16";
}

/**
 * Builds the model a spec names: fp32 master weights made (or read) on the host, then placed
 * on the job's device computing in its compute dtype.
 */
export async function buildModel(spec: ModelSpec, cfg: Pick<JobConfig, "device" | "model">): Promise<CausalLM> {
  checkTrainable(cfg);
  const model =
    spec.kind === "path"
      ? (await loadHF(spec.path, { dtype: "float32" })).model
      : createModel(configFromHF(spec.hf, "model.config"), { seed: spec.seed, dtype: "float32" });
  if (cfg.device === "cuda") model.place("cuda", computeDtypeOf(cfg));
  if (cfg.model.recompute === "full") model.recompute = true;
  return model;
}
