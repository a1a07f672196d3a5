// Model configs: our names for what a Hugging Face `config.json` says. Each family converts
// both ways; unknown HF fields ride along in `hf` so that a loaded-then-saved model keeps
// them (transformers reads them back unchanged).

export type HFConfigJson = Record<string, unknown>;

/** RoPE frequency scaling: the native `rope` op's own type, so the two cannot drift apart. */
export type { RopeScaling } from "../native/index.ts";
import type { RopeScaling } from "../native/index.ts";

export type LayerType = "full_attention" | "sliding_attention";

/** The shared decoder of Llama, Qwen2/2.5, Qwen3 and Mistral, with its switches. */
export interface DecoderConfig {
  family: "decoder";
  /** HF `model_type`: llama, qwen2, qwen3, mistral. Decides parameter layout details. */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** May differ from hiddenSize / numHeads (Qwen3). */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  /** Bias on q/k/v projections (Qwen2 always; Llama/Qwen3 `attention_bias`). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama/Qwen3 `attention_bias`; never Qwen2). */
  oBias: boolean;
  /** Bias on gate/up/down (Llama `mlp_bias`). */
  mlpBias: boolean;
  /** RMSNorm over head_dim on q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  /** Window of the layers whose type is `sliding_attention`. */
  slidingWindow?: number;
  layerTypes: LayerType[];
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  initializerRange: number;
  bosTokenId?: number | undefined;
  eosTokenId?: number | number[] | undefined;
  padTokenId?: number | undefined;
  /** The HF config this came from (fields we do not model are written back as they were). */
  hf?: HFConfigJson;
}

export interface Gpt2Config {
  family: "gpt2";
  modelType: "gpt2";
  vocabSize: number;
  nPositions: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nInner: number;
  layerNormEps: number;
  initializerRange: number;
  bosTokenId?: number | undefined;
  eosTokenId?: number | undefined;
  hf?: HFConfigJson;
}

export type ModelConfig = DecoderConfig | Gpt2Config;

/** Converts HF config.json <-> our config for one family of `model_type`s. */
export interface ConfigCodec<C extends ModelConfig = ModelConfig> {
  fromHF(hf: HFConfigJson): C;
  toHF(cfg: C): HFConfigJson;
}

const registry = new Map<string, ConfigCodec>();

/** Maps an HF `model_type` to the family that reads and writes its configs. */
export function registerModel(modelType: string, codec: ConfigCodec): void {
  registry.set(modelType, codec);
}

export function registeredModelTypes(): string[] {
  return [...registry.keys()].sort();
}

function codecFor(modelType: unknown, where: string): ConfigCodec {
  const c = typeof modelType === "string" ? registry.get(modelType) : undefined;
  if (!c) {
    throw new Error(`${where}: model_type ${JSON.stringify(modelType)} is not supported (known: ${registeredModelTypes().join(", ")})`);
  }
  return c;
}

/** Our config from a parsed HF config.json; `where` names the source in errors. */
export function configFromHF(hf: HFConfigJson, where = "config.json"): ModelConfig {
  return codecFor(hf.model_type, where).fromHF(hf);
}

/** The HF config.json object for `cfg`; `dtype` is the dtype the weights are saved in. */
export function configToHF(cfg: ModelConfig, dtype: "float32" | "bfloat16" = "float32"): HFConfigJson {
  const out = codecFor(cfg.modelType, "config").toHF(cfg);
  // transformers 5 reads `dtype`; 4.x reads `torch_dtype`.
  return { ...out, dtype, torch_dtype: dtype };
}

// Field readers that name the field and the model in their errors.
export function num(hf: HFConfigJson, key: string, fallback?: number): number {
  const v = hf[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new Error(`config.json (${String(hf.model_type)}): missing ${key}`);
  }
  if (typeof v !== "number" || !Number.isFinite(v)) throw new Error(`config.json (${String(hf.model_type)}): ${key} is not a number: ${JSON.stringify(v)}`);
  return v;
}

export function int(hf: HFConfigJson, key: string, fallback?: number): number {
  const v = num(hf, key, fallback);
  if (!Number.isInteger(v) || v < 0) throw new Error(`config.json (${String(hf.model_type)}): ${key} is not a non-negative integer: ${v}`);
  return v;
}

export function bool(hf: HFConfigJson, key: string, fallback: boolean): boolean {
  const v = hf[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "boolean") throw new Error(`config.json (${String(hf.model_type)}): ${key} is not a boolean: ${JSON.stringify(v)}`);
  return v;
}

export function optInt(hf: HFConfigJson, key: string): number | undefined {
  const v = hf[key];
  return v === undefined || v === null ? undefined : int(hf, key);
}
