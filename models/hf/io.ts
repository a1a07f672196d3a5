// A model folder as transformers reads and writes it: config.json + model.safetensors
// (or shards + model.safetensors.index.json).
import { mkdir, readFile, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { configFromHF, configToHF, type ModelConfig } from "../config.ts";
import type { CausalLM, ModelOptions } from "../causal-lm.ts";
import { DecoderLM } from "../decoder.ts";
import { Gpt2LM } from "../gpt2.ts";
import { SafetensorsReader } from "./safetensors-read.ts";
import { atomicWriteText, writeSafetensors, type TensorToWrite } from "./safetensors-write.ts";

export function createModel(config: ModelConfig, opts: ModelOptions = {}): CausalLM {
  switch (config.family) {
    case "decoder":
      return new DecoderLM(config, opts);
    case "gpt2":
      return new Gpt2LM(config, opts);
  }
}

export async function readHFConfig(dir: string): Promise<ModelConfig> {
  const path = join(dir, "config.json");
  const text = await readFile(path, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new Error(`loadHF: cannot read ${path}: ${err.message}`);
  });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`loadHF: ${path} is not JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new Error(`loadHF: ${path} is not a JSON object`);
  return configFromHF(json as Record<string, unknown>, path);
}

export interface LoadResult {
  model: CausalLM;
  /** Tensors in the files that no parameter took (buffers such as GPT-2's attn.bias, a tied lm_head). */
  unused: string[];
}

/** Loads config.json and the weights of an HF model folder. A missing tensor or a shape
 * that does not match the config is an error naming the tensor and the file. */
export async function loadHF(dir: string, opts: Omit<ModelOptions, "seed" | "noInit"> = {}): Promise<LoadResult> {
  const config = await readHFConfig(dir);
  const reader = await SafetensorsReader.open(dir);
  const model = createModel(config, { ...opts, noInit: true });
  try {
    const used = new Set<string>();
    const prefix = config.family === "gpt2" ? "transformer." : "model.";
    for (const t of model.hfTensors()) {
      // Some checkpoints hold the base model alone, without its prefix (the original `gpt2`).
      const bare = t.name.startsWith(prefix) ? t.name.slice(prefix.length) : t.name;
      const name = !reader.has(t.name) && reader.has(bare) ? bare : t.name;
      t.write(await reader.readFloat32(name, t.shape));
      used.add(name);
    }
    return { model, unused: reader.names().filter((n) => !used.has(n)) };
  } catch (err) {
    model.dispose();
    throw err;
  } finally {
    await reader.close();
  }
}

export interface SaveOptions {
  /** Storage dtype of the weights; default float32. */
  dtype?: "float32" | "bfloat16";
  /** Split into shards of at most this many bytes (default 5 GB, as transformers). */
  maxShardBytes?: number;
}

/** Writes config.json, generation_config.json and the weights so that transformers'
 * from_pretrained(dir) opens the model. */
export async function saveHF(model: CausalLM, dir: string, opts: SaveOptions = {}): Promise<void> {
  const dtype = opts.dtype ?? "float32";
  const st = dtype === "bfloat16" ? "BF16" : "F32";
  const bytesPer = dtype === "bfloat16" ? 2 : 4;
  const maxShard = opts.maxShardBytes ?? 5 * 1024 ** 3;
  await mkdir(dir, { recursive: true });
  const tensors: (TensorToWrite & { bytes: number })[] = model
    .hfTensors()
    .map((t) => ({ name: t.name, shape: t.shape, data: () => t.read(), bytes: t.shape.reduce((a, b) => a * b, 1) * bytesPer }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const shards: (typeof tensors)[] = [[]];
  let size = 0;
  for (const t of tensors) {
    if (size > 0 && size + t.bytes > maxShard) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push(t);
    size += t.bytes;
  }
  const written = new Set<string>();
  if (shards.length === 1) {
    await writeSafetensors(join(dir, "model.safetensors"), tensors, { dtype: st });
    written.add("model.safetensors");
  } else {
    const pad = (n: number) => String(n).padStart(5, "0");
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < shards.length; i++) {
      const file = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
      await writeSafetensors(join(dir, file), shards[i]!, { dtype: st });
      written.add(file);
      for (const t of shards[i]!) weightMap[t.name] = file;
    }
    const total = tensors.reduce((a, t) => a + t.bytes, 0);
    await atomicWriteText(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n");
    written.add("model.safetensors.index.json");
  }
  // Weights of an earlier save in another layout would win over these: readers (ours and
  // transformers) take an index or a single file whichever is there, so remove the rest.
  for (const name of await readdir(dir)) {
    const weightFile = name === "model.safetensors" || name === "model.safetensors.index.json" || /^model-\d+-of-\d+\.safetensors$/.test(name);
    if (weightFile && !written.has(name)) await rm(join(dir, name), { force: true });
  }
  const hf = configToHF(model.config, dtype);
  await atomicWriteText(join(dir, "config.json"), JSON.stringify(hf, null, 2) + "\n");
  const gen: Record<string, unknown> = {};
  if (hf.bos_token_id !== null && hf.bos_token_id !== undefined) gen.bos_token_id = hf.bos_token_id;
  if (hf.eos_token_id !== null && hf.eos_token_id !== undefined) gen.eos_token_id = hf.eos_token_id;
  await atomicWriteText(join(dir, "generation_config.json"), JSON.stringify(gen, null, 2) + "\n");
}
