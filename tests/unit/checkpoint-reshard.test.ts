import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import {
  flatShardRange,
  loadShard,
  loadWholeModel,
  wholeModelShard,
  openCheckpoint,
  optimTensorName,
  saveCheckpoint,
  type RankShardInput,
} from "../../models/checkpoint/index.ts";
import { AdamW, type OptimizerStateDict } from "../../models/optim/index.ts";
import { createModel, packSequences } from "../../models/index.ts";
import { tinyConfigs } from "./models-testkit.ts";
import { bitsEqual, meta, rangeOf, rankInputs, testTensors, withTempDir } from "./checkpoint-testkit.ts";
import { param, setGrad, rand } from "./optim-reference.ts";

test("saved over fsdp=4, every tensor loads bit-identical over fsdp=2 and fsdp=1", async () => {
  await withTempDir(async (root) => {
    const tensors = testTensors();
    const dir = await saveCheckpoint(root, meta(120, 4), rankInputs(tensors, 4));
    assert.equal(dir, join(root, "step-000120"));
    const ck = await openCheckpoint(root);
    try {
      assert.equal(ck.dir, dir);
      for (const t of tensors) {
        bitsEqual(await loadShard(ck, t.name), t.data, `${t.name} on world 1`);
        for (let r = 0; r < 2; r++) {
          const range = rangeOf(t, r, 2);
          bitsEqual(await loadShard(ck, t.name, range), t.data.slice(range.start, range.end), `${t.name} rank ${r} of 2`);
        }
        // A range that straddles the saving ranks' pieces in odd places.
        const odd = { start: 1, end: t.data.length - 1 };
        bitsEqual(await loadShard(ck, t.name, odd), t.data.slice(1, -1), `${t.name} [1, n-1)`);
      }
      await assert.rejects(loadShard(ck, "model.norm.weight", { start: 0, end: 4 }), /model\.norm\.weight.*\[0, 4\).*\[0, 3\)/);
      await assert.rejects(loadShard(ck, "nope"), /tensor nope is not in/);
    } finally {
      await ck.close();
    }
  });
});

test("the manifest records shapes, per-rank ranges, files with checksums, mesh, config, data and RNG state", async () => {
  await withTempDir(async (root) => {
    const tensors = testTensors();
    const dataState = { version: 1, cursor: { file: 2, offset: 12345n }, packer: { buffer: [Int32Array.from([5, -1, 7])], rng: 99 } };
    const config = { model: { name: "tiny" }, trainer: { max_steps: 10 } };
    const dir = await saveCheckpoint(root, meta(7, 4, { config, data: dataState, rng: { seed: 42, counter: 3 }, model: { model_type: "llama" } }), rankInputs(tensors, 4));
    const m = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8"));
    assert.equal(m.format, "tessera-checkpoint");
    assert.equal(m.version, 1);
    assert.equal(m.step, 7);
    assert.equal(m.tokensSeen, 7000);
    assert.deepEqual(m.mesh, { dp: 1, fsdp: 4, sp: 1 });
    assert.equal(m.worldSize, 4);
    assert.deepEqual(Object.keys(m.files).sort(), ["rank-00000.safetensors", "rank-00001.safetensors", "rank-00002.safetensors", "rank-00003.safetensors"]);
    for (const f of Object.values(m.files) as { sha256: string; bytes: number }[]) assert.match(f.sha256, /^[0-9a-f]{64}$/);
    // [10, 6] by rows over 4: ceil(10/4) = 3 rows of 6 each, the last rank one row.
    assert.deepEqual(m.tensors["model.embed_tokens.weight"], {
      shape: [10, 6],
      dtype: "F32",
      shards: [
        { rank: 0, file: "rank-00000.safetensors", start: 0, end: 18 },
        { rank: 1, file: "rank-00001.safetensors", start: 18, end: 36 },
        { rank: 2, file: "rank-00002.safetensors", start: 36, end: 54 },
        { rank: 3, file: "rank-00003.safetensors", start: 54, end: 60 },
      ],
    });
    // [3] flat over 4: ranks 3 (and the empty tail) hold nothing and are not listed.
    assert.deepEqual(m.tensors["model.norm.weight"].shards.map((p: { rank: number }) => p.rank), [0, 1, 2]);
    const ck = await openCheckpoint(dir);
    try {
      assert.deepEqual(ck.config, config);
      assert.deepEqual(ck.dataState, dataState);
      assert.deepEqual(ck.rngState, { seed: 42, counter: 3 });
      assert.deepEqual(ck.names(), tensors.map((t) => t.name).sort());
    } finally {
      await ck.close();
    }
  });
});

test("a slice is read from the files that hold it only", async () => {
  await withTempDir(async (root) => {
    const tensors = testTensors();
    const dir = await saveCheckpoint(root, meta(1, 4), rankInputs(tensors, 4));
    const ck = await openCheckpoint(dir);
    try {
      // After the checks at open, rank 3's file goes away: rank 0's range still loads, the whole tensor cannot.
      await unlink(join(dir, "rank-00003.safetensors"));
      const t = tensors[1]!;
      const r0 = flatShardRange(t.data.length, 0, 4);
      bitsEqual(await ck.loadShard(t.name, r0), t.data.slice(r0.start, r0.end), "rank 0's range");
      await assert.rejects(ck.loadShard(t.name), /cannot open shard file .*rank-00003\.safetensors for tensor model\.layers\.0\.mlp\.up_proj\.weight/);
    } finally {
      await ck.close();
    }
  });
});

test("replicated tensors written by two replicas, or a rank missing, are refused before anything is committed", async () => {
  await withTempDir(async (root) => {
    const t = testTensors()[2]!;
    const whole = { name: t.name, shape: t.shape, data: t.data };
    await assert.rejects(
      saveCheckpoint(root, { step: 1, tokensSeen: 0, mesh: { dp: 2, fsdp: 1, sp: 1 } }, [{ tensors: [whole] }, { tensors: [whole] }]),
      /model\.layers\.0\.mlp\.up_proj\.bias.*rank 1.*overlaps.*one replica/,
    );
    await assert.rejects(saveCheckpoint(root, meta(1, 2), [{ tensors: [whole] }]), /no shard report from rank\(s\) 1 of 2/);
    const half = { ...whole, range: { start: 0, end: 3 }, data: t.data.slice(0, 3) };
    await assert.rejects(saveCheckpoint(root, meta(1, 2), [{ tensors: [half] }, { tensors: [] }]), /no rank holds elements \[3, 7\)/);
    await assert.rejects(openCheckpoint(root), /neither manifest\.json nor a latest pointer/);
  });
});

/** Splits a whole-model optimizer state into `world` ranks' shards (what FSDP ranks hold). */
function shardState(st: OptimizerStateDict, sizes: Map<string, number>, world: number): OptimizerStateDict[] {
  return Array.from({ length: world }, (_, r) => ({
    step: st.step,
    params: Object.fromEntries(
      Object.entries(st.params).map(([name, ps]) => {
        const range = flatShardRange(sizes.get(name)!, r, world);
        const buffers = Object.fromEntries(Object.entries(ps.buffers).map(([b, a]) => [b, Float32Array.from(a.subarray(range.start, range.end))]));
        return [name, { ...ps, shape: [range.end - range.start], buffers }];
      }),
    ),
  }));
}

test("AdamW state saved over 4 ranks resumes on 1 and on 2 exactly where it left off", async () => {
  await withTempDir(async (root) => {
    const spec: [string, number[]][] = [
      ["model.layers.0.mlp.up_proj.weight", [8, 6]],
      ["model.layers.0.mlp.up_proj.bias", [7]],
      ["model.norm.weight", [5]],
    ];
    const make = (from?: Map<string, Float32Array>) => spec.map(([n, s], i) => param(n, from ? Float64Array.from(from.get(n)!) : rand(s.reduce((a, b) => a * b, 1), 3 + i), s));
    const ps = make();
    const opt = new AdamW(ps, { weightDecay: 0.1 });
    for (let s = 0; s < 3; s++) {
      // The norm never gets a gradient: it has no state, and must come back without any.
      ps.forEach((p, i) => (p.name === "model.norm.weight" ? p.zeroGrad() : setGrad(p, rand(p.value.numel, 100 * s + i))));
      opt.step(1e-2);
    }
    const st = opt.stateDict();
    assert.deepEqual(Object.keys(st.params).sort(), ["model.layers.0.mlp.up_proj.bias", "model.layers.0.mlp.up_proj.weight"]);
    const sizes = new Map(ps.map((p) => [p.name, p.value.numel]));
    const states = shardState(st, sizes, 4);
    const inputs: RankShardInput[] = states.map((optimizer, r) => ({
      tensors: ps.map((p) => {
        const range = flatShardRange(p.value.numel, r, 4);
        return { name: p.name, shape: p.shape, range, data: () => (p.value.toArray() as Float32Array).slice(range.start, range.end) };
      }),
      optimizer,
    }));
    const dir = await saveCheckpoint(root, meta(3, 4), inputs);
    const ck = await openCheckpoint(dir);
    try {
      assert.deepEqual(ck.manifest.optimizer, {
        step: 3,
        params: { "model.layers.0.mlp.up_proj.weight": { algorithm: "adamw", step: 3 }, "model.layers.0.mlp.up_proj.bias": { algorithm: "adamw", step: 3 } },
      });
      assert.ok(ck.manifest.tensors[optimTensorName("model.layers.0.mlp.up_proj.weight", "exp_avg_sq")]);

      // World 2: each rank gets its range of every buffer.
      for (let r = 0; r < 2; r++) {
        const targets = Object.fromEntries(ps.map((p) => [p.name, { range: flatShardRange(p.value.numel, r, 2) }]));
        const got = await ck.loadOptimizerState(targets);
        assert.equal(got.step, 3);
        assert.deepEqual(Object.keys(got.params).sort(), Object.keys(st.params).sort());
        for (const [name, ps0] of Object.entries(st.params)) {
          const range = targets[name]!.range;
          assert.deepEqual(got.params[name]!.shape, [range.end - range.start]);
          for (const b of ["exp_avg", "exp_avg_sq"]) {
            bitsEqual(got.params[name]!.buffers[b] as Float32Array, (ps0.buffers[b] as Float32Array).slice(range.start, range.end), `${name}.${b} rank ${r} of 2`);
          }
        }
      }

      // World 1: fresh parameters and optimizer from the checkpoint take the next step exactly as the originals do.
      const loaded = new Map<string, Float32Array>();
      for (const [n] of spec) loaded.set(n, await ck.loadShard(n));
      const ps2 = make(loaded);
      const opt2 = new AdamW(ps2, { weightDecay: 0.1 });
      opt2.loadStateDict(await ck.loadOptimizerState());
      assert.equal(opt2.stepCount, 3);
      for (const [pa, pb] of ps.map((p, i) => [p, ps2[i]!] as const)) {
        const g = rand(pa.value.numel, 777);
        setGrad(pa, g);
        setGrad(pb, g);
      }
      opt.step(1e-2);
      opt2.step(1e-2);
      ps.forEach((p, i) => bitsEqual(ps2[i]!.value.toArray() as Float32Array, p.value.toArray() as Float32Array, `${p.name} after the resumed step`));
      opt.dispose();
      opt2.dispose();
      for (const p of [...ps, ...ps2]) p.dispose();
    } finally {
      await ck.close();
    }
  });
});

test("world 1: a model and its AdamW saved mid-training and loaded into fresh ones take the next step bit-identically", async () => {
  await withTempDir(async (root) => {
    const cfg = tinyConfigs.llama!;
    const batch = (s: number) => packSequences([[1 + s, 5, 9, 2, 7], [3, 8, 11 + s]]);
    const a = createModel(cfg, { seed: 3 });
    const optA = new AdamW(a.params(), { weightDecay: 0.1 });
    for (let s = 0; s < 2; s++) {
      a.loss(batch(s));
      optA.step(1e-2);
      a.zeroGrad();
    }
    const dir = await saveCheckpoint(root, meta(2, 1), [wholeModelShard(a.params(), optA)]);

    const b = createModel(cfg, { seed: 99 });
    const optB = new AdamW(b.params(), { weightDecay: 0.1 });
    const ck = await openCheckpoint(dir);
    try {
      assert.deepEqual(await loadWholeModel(ck, b.params(), optB), []);
    } finally {
      await ck.close();
    }
    assert.equal(optB.stepCount, 2);
    for (const [m, o] of [[a, optA], [b, optB]] as const) {
      m.loss(batch(2));
      o.step(1e-2);
    }
    const pb = new Map(b.params().map((p) => [p.name, p]));
    for (const p of a.params()) bitsEqual(pb.get(p.name)!.value.toArray() as Float32Array, p.value.toArray() as Float32Array, p.name);
    optA.dispose();
    optB.dispose();
    a.dispose();
    b.dispose();
  });
});
