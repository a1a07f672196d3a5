// Parity with transformers: logits, loss and every parameter's gradient of tiny models
// written by tests/fixtures/models/make_fixtures.py (eager attention, float32, each packed
// sequence run alone). Tolerances (float32 on both sides, different summation orders):
// logits and gradients: max |ours - ref| <= 1e-4 * max |ref| + 1e-6 per tensor;
// loss: relative 1e-5. Greedy tokens must match wherever the reference's top-2 margin
// exceeds 1e-3 (closer calls can flip on rounding).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SafetensorsReader, generate, loadHF, type PackedBatch } from "../../models/index.ts";
import { values } from "./models-testkit.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "models");

interface Reference {
  loss: number;
  count: number;
  parameters: string[];
  greedy: { prompt: number[]; output: number[]; margins: number[] };
  transformers_version: string;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function assertTensorClose(ours: ArrayLike<number>, ref: ArrayLike<number>, what: string): void {
  assert.equal(ours.length, ref.length, `${what}: sizes`);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ours[i]! - ref[i]!);
    if (d > worst) {
      worst = d;
      at = i;
    }
  }
  const tol = 1e-4 * maxAbs(ref) + 1e-6;
  assert.ok(worst <= tol, `${what}: max |diff| ${worst.toExponential(3)} at ${at} (${ours[at]} vs ${ref[at]}) > ${tol.toExponential(3)}`);
}

for (const family of ["qwen2", "qwen3", "llama", "mistral", "gpt2"]) {
  const dir = join(root, family);
  const ready = existsSync(join(dir, "reference.json"));
  test(
    `${family}: logits, loss and gradients match transformers`,
    { skip: ready ? false : `fixtures missing in ${dir}: run python3 tests/fixtures/models/make_fixtures.py (needs torch + transformers)` },
    async () => {
      const meta = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as Reference;
      const ref = await SafetensorsReader.open(join(dir, "reference.safetensors"));
      const { model, unused } = await loadHF(dir);
      assert.deepEqual(unused, [], "every tensor of the HF file is a parameter here");
      try {
        const batch: PackedBatch = {
          tokens: await ref.readInt32("tokens"),
          positions: await ref.readInt32("positions"),
          cuSeqlens: await ref.readInt32("cu_seqlens"),
          labels: await ref.readInt32("labels"),
        };
        const logits = model.logits(batch);
        assertTensorClose(values(logits), await ref.readFloat32("logits", logits.shape), "logits");
        logits.dispose();

        const r = model.loss(batch);
        assert.equal(r.count, meta.count);
        assert.ok(Math.abs(r.loss - meta.loss) <= 1e-5 * Math.abs(meta.loss), `loss ${r.loss} vs ${meta.loss}`);

        const ours = new Map(model.hfTensors().map((t) => [t.name, t]));
        assert.deepEqual([...ours.keys()].sort(), [...meta.parameters].sort(), "the same parameters as transformers");
        for (const name of meta.parameters) {
          const t = ours.get(name)!;
          assertTensorClose(t.readGrad(), await ref.readFloat32(`grad.${name}`, t.shape), `grad of ${name}`);
        }

        const g = generate(model, meta.greedy.prompt, { maxNewTokens: meta.greedy.output.length, eosTokenId: [] });
        for (let i = 0; i < meta.greedy.output.length; i++) {
          if (meta.greedy.margins[i]! < 1e-3) break;
          assert.equal(g.outputIds[i], meta.greedy.output[i], `greedy token ${i}`);
        }
      } finally {
        model.dispose();
        await ref.close();
      }
    },
  );
}
