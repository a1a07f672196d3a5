// Sharded Muon's state in checkpoints: each rank saves the momentum of its flat ranges (the
// ranges of its parameter shards) with its AdamW state, and a fresh plan, on the same mesh
// or another, takes exactly that state back. Ranks run in one process (host collectives
// over an InProcTransport) through actors' RankPlan, the wiring the RankActor uses, and save
// through models/checkpoint. Float32 throughout, so the F32 checkpoint holds the state exactly.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRankPlan, noCollectives, type RankPlan } from "../../actors/index.ts";
import { DeviceMesh, startInProcessCollectives, type MeshShape } from "../../mesh/index.ts";
import { loadShard, openCheckpoint, saveCheckpoint, type RankShardInput } from "../../models/checkpoint/index.ts";
import type { OptimizerStateDict } from "../../models/optim/index.ts";
import { batchOf, countTokens, makeModel, tinyConfigs } from "./mesh-plans-kit.ts";

const cfg = tinyConfigs.qwen2!;
const LR = 1e-2;
const optimizer = {
  name: "muon" as const,
  lr: LR,
  betas: [0.9, 0.95] as [number, number],
  eps: 1e-8,
  weight_decay: 0.1,
  muon: { momentum: 0.95, nesterov: true, ns_steps: 5 },
  schedule: { name: "constant" as const, warmup_steps: 0, decay_fraction: 0.1, min_lr_ratio: 0.1 },
};
/** Step s's global batch: two micro-batches (one per batch stream under fsdp=2). */
const batches = (s: number) => [batchOf([5, 9, 2], 2 * s + 1), batchOf([7, 3, 6], 2 * s + 2)];

interface Segment {
  shape: MeshShape;
  /** Steps first + 1 .. last. */
  first: number;
  last: number;
  /** A checkpoint to start from. */
  from?: string;
  /** Where to save at the end. */
  root: string;
}

/** Runs steps on every rank of a mesh, saves a checkpoint at the end; the checkpoint folder and each rank's optimizer state. */
async function segment(s: Segment): Promise<{ dir: string; states: OptimizerStateDict[] }> {
  const world = s.shape.dp * s.shape.fsdp * s.shape.sp;
  const mesh = new DeviceMesh(s.shape, world);
  const coll = world > 1 ? await startInProcessCollectives(world, { timeoutMs: 20_000 }) : undefined;
  const streams = mesh.layout(0).batchCount;
  try {
    const ranks = await Promise.all(
      mesh.layouts().map(async (layout) => {
        const model = makeModel(cfg, "float32");
        const plan: RankPlan = createRankPlan(model, layout, coll?.ranks[layout.rank] ?? noCollectives, { optimizer });
        try {
          if (s.from) {
            const ckpt = await openCheckpoint(s.from);
            try {
              await plan.loadCheckpoint(ckpt);
            } finally {
              await ckpt.close();
            }
          }
          for (let step = s.first + 1; step <= s.last; step++) {
            const bs = batches(step);
            const per = bs.length / streams;
            const count = countTokens(bs);
            for (let m = 0; m < per; m++) await plan.microStep(bs[layout.batchIndex * per + m]!, 1 / count);
            await plan.finishGradients();
            await plan.optimStep(LR, 0);
          }
          const shard: RankShardInput = plan.checkpointShard();
          // Read before the plan is disposed: a shard's tensors and optimizer buffers are read from live tensors.
          const copied = await Promise.all(shard.tensors.map(async (t) => ({ ...t, data: Float32Array.from(typeof t.data === "function" ? await t.data() : t.data) })));
          const state = plan.optimizer.stateDict();
          return { shard: { ...shard, tensors: copied, optimizer: state }, state };
        } finally {
          plan.dispose();
          model.dispose();
        }
      }),
    );
    const dir = await saveCheckpoint(s.root, { step: s.last, tokensSeen: 0, mesh: s.shape }, ranks.map((r) => r.shard));
    return { dir, states: ranks.map((r) => r.state) };
  } finally {
    await coll?.close();
  }
}

const fsdp2: MeshShape = { dp: 1, fsdp: 2, sp: 1 };
const one: MeshShape = { dp: 1, fsdp: 1, sp: 1 };
const root = () => mkdtempSync(join(tmpdir(), "tessera-muon-state-"));

/** Every tensor of two checkpoints (weights and optimizer buffers, read whole): the largest |a - b|, and whether every bit agrees. */
async function compare(a: string, b: string): Promise<Map<string, { maxAbs: number; sameBits: boolean }>> {
  const [x, y] = await Promise.all([openCheckpoint(a), openCheckpoint(b)]);
  try {
    const names = Object.keys(y.manifest.tensors).sort();
    assert.deepEqual(Object.keys(x.manifest.tensors).sort(), names, "the same tensors");
    assert.deepEqual(x.manifest.optimizer, y.manifest.optimizer, "the same optimizer step counts");
    const out = new Map<string, { maxAbs: number; sameBits: boolean }>();
    for (const n of names) {
      const [u, v] = await Promise.all([loadShard(x, n), loadShard(y, n)]);
      const ub = new Uint32Array(u.buffer, u.byteOffset, u.length);
      const vb = new Uint32Array(v.buffer, v.byteOffset, v.length);
      out.set(n, { maxAbs: u.reduce((w, e, i) => Math.max(w, Math.abs(e - v[i]!)), 0), sameBits: ub.every((e, i) => e === vb[i]) });
    }
    return out;
  } finally {
    await Promise.all([x.close(), y.close()]);
  }
}

test("sharded Muon (fsdp=2): saved at step 2 and resumed on fresh plans, steps 3-4 equal the uninterrupted run bit for bit", async () => {
  const whole = await segment({ shape: fsdp2, first: 0, last: 4, root: root() });
  const r = root();
  const half = await segment({ shape: fsdp2, first: 0, last: 2, root: r });
  // The momentum is really in the checkpoint: each rank's range of every Muon matrix, nonzero.
  const ck = await openCheckpoint(half.dir);
  try {
    const momenta = Object.keys(ck.manifest.tensors).filter((n) => n.endsWith(".momentum_buffer"));
    assert.ok(momenta.length >= 4, `momentum buffers: ${momenta.join(", ")}`);
    for (const n of momenta) {
      assert.ok(ck.entry(n).shards.map((p) => p.rank).sort().join() === "0,1", `${n}: a range from each rank`);
      assert.ok((await loadShard(ck, n)).some((v) => v !== 0), `${n} is not zero`);
    }
    assert.ok(Object.values(ck.manifest.optimizer!.params).every((p) => p.step === 2));
  } finally {
    await ck.close();
  }
  const resumed = await segment({ shape: fsdp2, first: 2, last: 4, from: half.dir, root: r });
  const diffs = await compare(resumed.dir, whole.dir);
  const differing = [...diffs].filter(([, d]) => !d.sameBits).map(([n]) => n);
  assert.deepEqual(differing, [], "tensors that differ in any bit");
  assert.deepEqual(resumed.states.map((s) => s.step), [4, 4]);
});

test("sharded Muon state saved under fsdp=2 loads whole under fsdp=1 (MuonWithAdamW) exactly, and continues the fsdp=2 run", async (t) => {
  const r = root();
  const half = await segment({ shape: fsdp2, first: 0, last: 2, root: r });
  // Loaded on one rank, its state is the two ranks' ranges joined, bit for bit.
  const model = makeModel(cfg, "float32");
  const plan = createRankPlan(model, new DeviceMesh(one, 1).layout(0), noCollectives, { optimizer });
  try {
    const ckpt = await openCheckpoint(half.dir);
    try {
      await plan.loadCheckpoint(ckpt);
    } finally {
      await ckpt.close();
    }
    const got = plan.optimizer.stateDict();
    assert.equal(got.step, 2);
    const muonParams = Object.entries(got.params).filter(([, p]) => p.algorithm === "muon");
    assert.ok(muonParams.length >= 4);
    for (const [name, p] of Object.entries(got.params)) {
      for (const [buf, data] of Object.entries(p.buffers)) {
        const joined = new Float32Array(data.length);
        let at = 0;
        for (const s of half.states) {
          const part = s.params[name]?.buffers[buf];
          if (part) joined.set(part, at);
          at += part?.length ?? 0;
        }
        assert.equal(at, data.length, `${name}.${buf}: the ranks' ranges cover it`);
        assert.ok(joined.every((v, i) => Object.is(v, data[i])), `${name}.${buf}: bit for bit`);
      }
      assert.equal(p.step, half.states[0]!.params[name]!.step);
    }
  } finally {
    plan.dispose();
    model.dispose();
  }
  // Steps 3-4 on one rank continue the fsdp=2 run: only summation orders differ (float32).
  const whole = await segment({ shape: fsdp2, first: 0, last: 4, root: root() });
  const resumed = await segment({ shape: one, first: 2, last: 4, from: half.dir, root: r });
  const worst = Math.max(...[...(await compare(resumed.dir, whole.dir)).values()].map((d) => d.maxAbs));
  assert.ok(worst <= 1e-5, `max |diff| ${worst}`);
  t.diagnostic(`fsdp=2 -> fsdp=1 continuation vs uninterrupted fsdp=2: max |diff| ${worst.toExponential(2)}`);
});
