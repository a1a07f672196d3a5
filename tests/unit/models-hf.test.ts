import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  Gpt2LM,
  SafetensorsReader,
  createModel,
  loadHF,
  roundToBf16,
  saveHF,
  writeSafetensors,
  type CausalLM,
  type Gpt2Config,
} from "../../models/index.ts";
import { randomizeParams, tinyBatch, tinyConfigs, values } from "./models-testkit.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tessera-hf-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function logitsOf(m: CausalLM): Float64Array {
  const t = m.logits(tinyBatch());
  const v = values(t);
  t.dispose();
  return v;
}

const expectedNames: Record<string, { has: string[]; hasNot: string[] }> = {
  qwen2: {
    has: ["model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.bias", "model.layers.0.self_attn.v_proj.bias", "lm_head.weight", "model.norm.weight"],
    hasNot: ["model.layers.0.self_attn.o_proj.bias", "model.layers.0.self_attn.q_norm.weight"],
  },
  qwen3: {
    has: ["model.layers.0.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight", "model.layers.0.mlp.gate_proj.weight"],
    hasNot: ["lm_head.weight", "model.layers.0.self_attn.q_proj.bias"],
  },
  llama: {
    has: ["lm_head.weight", "model.layers.0.self_attn.o_proj.bias", "model.layers.0.mlp.down_proj.bias", "model.layers.1.post_attention_layernorm.weight"],
    hasNot: [],
  },
  mistral: { has: ["model.layers.1.input_layernorm.weight", "lm_head.weight"], hasNot: ["model.layers.0.self_attn.q_proj.bias"] },
  gpt2: {
    has: ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_proj.bias", "transformer.ln_f.bias"],
    hasNot: ["lm_head.weight", "transformer.h.0.attn.c_attn.q.weight"],
  },
};

for (const [family, config] of Object.entries(tinyConfigs)) {
  test(`${family}: saveHF writes HF names and config; loadHF gives back the same model`, async () => {
    await withDir(async (dir) => {
      const m = createModel(config, { seed: 5 });
      randomizeParams(m.params(), 9, 0.2);
      await saveHF(m, dir);
      assert.deepEqual((await readdir(dir)).sort(), ["config.json", "generation_config.json", "model.safetensors"]);
      const hf = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
      assert.equal(hf.model_type, config.modelType);
      assert.equal(hf.dtype, "float32");
      const r = await SafetensorsReader.open(dir);
      const names = r.names();
      await r.close();
      for (const n of expectedNames[family]!.has) assert.ok(names.includes(n), `${n} saved`);
      for (const n of expectedNames[family]!.hasNot) assert.ok(!names.includes(n), `${n} not saved`);
      assert.deepEqual(names, m.hfTensors().map((t) => t.name).sort());

      const { model, unused } = await loadHF(dir);
      assert.deepEqual(unused, []);
      assert.deepEqual(logitsOf(model), logitsOf(m));
      model.params().forEach((p, i) => assert.deepEqual(values(p.value), values(m.params()[i]!.value), p.name));
      model.dispose();
      m.dispose();
    });
  });
}

test("gpt2: Conv1D weights are stored [in, out] and c_attn fuses q, k, v along out", async () => {
  await withDir(async (dir) => {
    const cfg = tinyConfigs.gpt2 as Gpt2Config;
    const m = createModel(cfg, { seed: 2 }) as Gpt2LM;
    randomizeParams(m.params(), 4);
    await saveHF(m, dir);
    const r = await SafetensorsReader.open(dir);
    const n = cfg.nEmbd;
    const cAttn = await r.readFloat32("transformer.h.0.attn.c_attn.weight", [n, 3 * n]);
    const bias = await r.readFloat32("transformer.h.0.attn.c_attn.bias", [3 * n]);
    const fc = await r.readFloat32("transformer.h.0.mlp.c_fc.weight", [n, cfg.nInner]);
    await r.close();
    const a = m.attentions[0]!;
    const q = values(a.q.weight.value);
    const k = values(a.k.weight.value);
    const fcW = values(m.mlps[0]!.fc.weight.value); // [inner, n]
    for (const [i, j] of [
      [0, 0],
      [3, 7],
      [n - 1, n - 1],
    ] as const) {
      assert.equal(cAttn[i * 3 * n + j], Math.fround(q[j * n + i]!));
      assert.equal(cAttn[i * 3 * n + n + j], Math.fround(k[j * n + i]!));
      assert.equal(fc[i * cfg.nInner + j], Math.fround(fcW[j * n + i]!));
    }
    assert.equal(bias[n + 2], Math.fround(values(a.k.bias!.value)[2]!));
  });
});

test("bf16 save rounds every weight to nearest-even bf16; sharded save loads the same", async () => {
  await withDir(async (dir) => {
    const m = createModel(tinyConfigs.qwen2!, { seed: 8 });
    randomizeParams(m.params(), 3);
    await saveHF(m, join(dir, "bf16"), { dtype: "bfloat16" });
    const hf = JSON.parse(await readFile(join(dir, "bf16", "config.json"), "utf8"));
    assert.equal(hf.dtype, "bfloat16");
    const { model } = await loadHF(join(dir, "bf16"));
    model.params().forEach((p, i) => {
      const want = Array.from(values(m.params()[i]!.value), roundToBf16);
      assert.deepEqual(Array.from(values(p.value)), want, p.name);
    });
    model.dispose();

    await saveHF(m, join(dir, "sharded"), { maxShardBytes: 4096 });
    const files = await readdir(join(dir, "sharded"));
    assert.ok(files.includes("model.safetensors.index.json"));
    const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    assert.ok(shards.length >= 2, `shards: ${files.join(", ")}`);
    const again = await loadHF(join(dir, "sharded"));
    assert.deepEqual(logitsOf(again.model), logitsOf(m));
    again.model.dispose();
    m.dispose();
  });
});

test("saving again into a folder in another layout leaves only the new weights", async () => {
  await withDir(async (dir) => {
    const a = createModel(tinyConfigs.qwen2!, { seed: 21 });
    const b = createModel(tinyConfigs.qwen2!, { seed: 22 });
    randomizeParams(a.params(), 5);
    randomizeParams(b.params(), 6);
    await saveHF(a, dir, { maxShardBytes: 4096 });
    await saveHF(b, dir); // one file now: the shards and index of `a` must go
    let files = await readdir(dir);
    assert.deepEqual(files.filter((f) => f.includes("safetensors")), ["model.safetensors"]);
    const single = await loadHF(dir);
    assert.deepEqual(logitsOf(single.model), logitsOf(b));
    single.model.dispose();
    await saveHF(a, dir, { maxShardBytes: 4096 }); // and back: model.safetensors must go
    files = await readdir(dir);
    assert.ok(!files.includes("model.safetensors"), files.join(", "));
    const sharded = await loadHF(dir);
    assert.deepEqual(logitsOf(sharded.model), logitsOf(a));
    sharded.model.dispose();
    a.dispose();
    b.dispose();
  });
});

test("loadHF: a missing tensor or a shape that does not match config.json names the tensor and the file", async () => {
  await withDir(async (dir) => {
    const m = createModel(tinyConfigs.mistral!, { seed: 1 });
    await saveHF(m, dir);
    const hf = m.hfTensors();
    const dropped = "model.layers.1.mlp.up_proj.weight";
    await writeSafetensors(
      join(dir, "model.safetensors"),
      hf.filter((t) => t.name !== dropped).map((t) => ({ name: t.name, shape: t.shape, data: t.read() })),
    );
    await assert.rejects(loadHF(dir), new RegExp(`tensor ${dropped.replace(/\./g, "\\.")} not found in ${dir}`));

    await saveHF(m, dir);
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, intermediate_size: 30 }));
    await assert.rejects(loadHF(dir), /tensor model\.layers\.0\.mlp\.gate_proj\.weight in .*model\.safetensors has shape \[24, 16\], expected \[30, 16\]/);
    await writeFile(join(dir, "config.json"), "{");
    await assert.rejects(loadHF(dir), /config\.json is not JSON/);
    m.dispose();
  });
});

test("loadHF reads checkpoints of the bare base model (names without transformer. / model.)", async () => {
  await withDir(async (dir) => {
    const m = createModel(tinyConfigs.gpt2!, { seed: 3 });
    randomizeParams(m.params(), 2);
    await saveHF(m, dir);
    const tensors = m.hfTensors().map((t) => ({ name: t.name.replace(/^transformer\./, ""), shape: t.shape, data: t.read() }));
    // Old GPT-2 files also carry the causal-mask buffers.
    tensors.push({ name: "h.0.attn.bias", shape: [1], data: new Float32Array([1]) });
    await writeSafetensors(join(dir, "model.safetensors"), tensors);
    const { model, unused } = await loadHF(dir);
    assert.deepEqual(unused, ["h.0.attn.bias"]);
    assert.deepEqual(logitsOf(model), logitsOf(m));
    model.dispose();
    m.dispose();
  });
});
