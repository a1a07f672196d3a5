import { test } from "node:test";
import assert from "node:assert/strict";
import { DeviceMesh, MeshError, resolveMeshShape } from "../../mesh/index.ts";

test("ranks are row-major with sp innermost, and coordOf inverts rankOf", () => {
  const mesh = new DeviceMesh({ dp: 2, fsdp: 3, sp: 2 }, 12);
  assert.deepEqual(mesh.coordOf(0), { dp: 0, fsdp: 0, sp: 0 });
  assert.deepEqual(mesh.coordOf(1), { dp: 0, fsdp: 0, sp: 1 });
  assert.deepEqual(mesh.coordOf(2), { dp: 0, fsdp: 1, sp: 0 });
  assert.deepEqual(mesh.coordOf(6), { dp: 1, fsdp: 0, sp: 0 });
  for (let r = 0; r < 12; r++) assert.equal(mesh.rankOf(mesh.coordOf(r)), r);
});

test("groups partition the world and agree across their members", () => {
  const mesh = new DeviceMesh({ dp: 2, fsdp: 2, sp: 2 }, 8);
  const layouts = mesh.layouts();
  for (const key of ["spGroup", "fsdpGroup", "dpGroup", "shardGroup"] as const) {
    const seen = new Set<number>();
    for (const l of layouts) {
      assert.ok(l[key].includes(l.rank), `${key} of rank ${l.rank} contains itself`);
      for (const m of l[key]) assert.deepEqual(layouts[m]![key], l[key], `${key}: members agree`);
      if (l[key][0] === l.rank) for (const m of l[key]) seen.add(m);
    }
    assert.equal(seen.size, 8, `${key} groups cover every rank once`);
  }
  assert.deepEqual(layouts[5]!.spGroup, [4, 5]);
  assert.deepEqual(layouts[5]!.fsdpGroup, [5, 7]);
  assert.deepEqual(layouts[5]!.dpGroup, [1, 5]);
  assert.deepEqual(layouts[5]!.shardGroup, [4, 5, 6, 7]);
});

test("ranks of one sp group read the same batch; different sp groups read different batches", () => {
  const mesh = new DeviceMesh({ dp: 2, fsdp: 2, sp: 2 }, 8);
  const byGroup = new Map<string, Set<number>>();
  for (const l of mesh.layouts()) {
    const key = l.spGroup.join(",");
    byGroup.set(key, (byGroup.get(key) ?? new Set()).add(l.batchIndex));
    assert.equal(l.batchCount, 4);
  }
  const batches = [...byGroup.values()].map((s) => {
    assert.equal(s.size, 1);
    return [...s][0];
  });
  assert.deepEqual(batches.sort(), [0, 1, 2, 3]);
});

test("one dim may be -1 and is inferred; bad shapes are errors that say why", () => {
  assert.deepEqual(resolveMeshShape({ dp: -1, fsdp: 2, sp: 1 }, 8), { dp: 4, fsdp: 2, sp: 1 });
  assert.throws(() => resolveMeshShape({ dp: -1, fsdp: -1, sp: 1 }, 8), /at most one/);
  assert.throws(() => resolveMeshShape({ dp: 2, fsdp: 2, sp: 1 }, 8), /2\*2\*1 = 4, but the world size is 8/);
  assert.throws(() => resolveMeshShape({ dp: -1, fsdp: 3, sp: 1 }, 8), /not divisible/);
  assert.throws(() => resolveMeshShape({ dp: 0, fsdp: 1, sp: 1 }, 1), /mesh.dp must be/);
  assert.throws(() => new DeviceMesh({ dp: 1, fsdp: 1, sp: 4 }, 4, { numHeads: 6 }), (e: unknown) => e instanceof MeshError && /num_attention_heads=6/.test(e.message));
  assert.throws(() => new DeviceMesh({ dp: 1, fsdp: 1, sp: 4 }, 4, { numHeads: 8, numKvHeads: 3 }), /num_key_value_heads=3/);
  assert.throws(() => new DeviceMesh({ dp: 1, fsdp: 1, sp: 4 }, 4, { numHeads: 8, numKvHeads: 2, tokensPerRank: 10 }), /tokens per rank \(10\)/);
  assert.doesNotThrow(() => new DeviceMesh({ dp: 1, fsdp: 1, sp: 4 }, 4, { numHeads: 8, numKvHeads: 2, tokensPerRank: 16 }));
});
