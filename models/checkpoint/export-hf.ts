// A checkpoint as a Hugging Face model folder (`tessera export CKPT OUT`): the full tensors
// are assembled from the shards into a model of the saved config, and models/hf writes it,
// so the HF layout (GPT-2's fused, transposed Conv1D weights, tied heads) is the one place
// that knows it.
import { copyFile, mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import "../families/builtin.ts";
import { configFromHF } from "../config.ts";
import { createModel, saveHF } from "../hf/io.ts";
import { ops } from "../ops.ts";
import { openCheckpoint } from "./read.ts";

/** Tokenizer files copied when present; tokenizer.json or tokenizer_config.json must be. */
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja"];

export interface ExportOptions {
  /** A folder holding the tokenizer files to copy beside the weights. */
  tokenizerDir?: string;
  /** Storage dtype of the weights; default float32 (the master weights as they are). */
  dtype?: "float32" | "bfloat16";
  maxShardBytes?: number;
}

/** Writes config.json, generation_config.json, safetensors (and the tokenizer) of a checkpoint to `outDir`. */
export async function exportHF(ckptDir: string, outDir: string, opts: ExportOptions = {}): Promise<void> {
  const ckpt = await openCheckpoint(ckptDir);
  try {
    const hf = ckpt.manifest.model;
    if (!hf) throw new Error(`export: checkpoint ${ckpt.dir} holds no model config (manifest "model" is null)`);
    const model = createModel(configFromHF(hf, `${ckpt.dir} manifest model`));
    try {
      const params = model.params();
      const expected = new Set(params.map((p) => p.name));
      const extra = ckpt.names().filter((n) => !expected.has(n));
      if (extra.length) throw new Error(`export: checkpoint ${ckpt.dir} holds tensors the model has no parameter for: ${extra.slice(0, 5).join(", ")}`);
      for (const p of params) {
        if (!ckpt.manifest.tensors[p.name]) throw new Error(`export: checkpoint ${ckpt.dir} lacks parameter ${p.name}`);
        const shape = ckpt.entry(p.name).shape;
        if (shape.join() !== p.shape.join()) {
          throw new Error(`export: tensor ${p.name} is [${shape.join(", ")}] in ${ckpt.dir}, the model's config makes it [${p.shape.join(", ")}]`);
        }
        p.set(ops.tensor(await ckpt.loadShard(p.name), p.shape, { dtype: p.dtype }));
      }
      await saveHF(model, outDir, {
        ...(opts.dtype ? { dtype: opts.dtype } : {}),
        ...(opts.maxShardBytes ? { maxShardBytes: opts.maxShardBytes } : {}),
      });
    } finally {
      model.dispose();
    }
  } finally {
    await ckpt.close();
  }
  if (opts.tokenizerDir) await copyTokenizer(opts.tokenizerDir, outDir);
}

async function copyTokenizer(from: string, to: string): Promise<void> {
  const present: string[] = [];
  for (const f of TOKENIZER_FILES) {
    if (await stat(join(from, f)).then((s) => s.isFile(), () => false)) present.push(f);
  }
  if (!present.includes("tokenizer.json") && !present.includes("tokenizer_config.json")) {
    throw new Error(`export: ${from} holds neither tokenizer.json nor tokenizer_config.json`);
  }
  await mkdir(to, { recursive: true });
  for (const f of present) await copyFile(join(from, f), join(to, f));
}
