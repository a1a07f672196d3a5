import { test } from "node:test";
import assert from "node:assert/strict";
import { open, readdir, readFile, stat, truncate, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  beginCheckpoint,
  buildManifest,
  commitCheckpoint,
  listComplete,
  openCheckpoint,
  resolveResume,
  saveCheckpoint,
  writeRankShard,
  type Checkpoint,
  type RankShardReport,
} from "../../models/checkpoint/index.ts";
import { decode, encode } from "../../runtime/index.ts";
import { bitsEqual, meta, rankInputs, testTensors, values, withTempDir, type TestTensor } from "./checkpoint-testkit.ts";

/** The test tensors with values that depend on the step, so checkpoints of different steps differ. */
function tensorsAt(step: number): TestTensor[] {
  return testTensors().map((t, i) => ({ ...t, data: values(t.data.length, step * 100 + i) }));
}

const save = (root: string, step: number, opts: Parameters<typeof saveCheckpoint>[3] = {}) =>
  saveCheckpoint(root, meta(step, 4), rankInputs(tensorsAt(step), 4), opts);

async function expectHolds(ck: Checkpoint, step: number): Promise<void> {
  assert.equal(ck.step, step);
  for (const t of tensorsAt(step)) bitsEqual(await ck.loadShard(t.name), t.data, `${t.name} of step ${step}`);
}

async function latestOf(root: string): Promise<string> {
  return (await readFile(join(root, "latest"), "utf8")).trim();
}

const tmpFolders = async (root: string) => (await readdir(root)).filter((n) => n.includes(".tmp-")).sort();

for (const where of ["between shard writes", "before the rename"] as const) {
  test(`a save that fails ${where} leaves the previous checkpoint as latest and loadable; the next save cleans up`, async () => {
    await withTempDir(async (root) => {
      await save(root, 10);
      const boom = () => {
        throw new Error("injected crash");
      };
      const hooks = where === "between shard writes" ? { afterShard: (r: number) => (r === 1 ? boom() : undefined) } : { beforeRename: boom };
      await assert.rejects(save(root, 20, hooks), /injected crash/);

      assert.equal(await latestOf(root), "step-000010");
      assert.deepEqual((await listComplete(root)).map((c) => c.name), ["step-000010"]);
      const left = await tmpFolders(root);
      assert.equal(left.length, 1);
      assert.match(left[0]!, /^step-000020\.tmp-/);
      if (where === "before the rename") assert.ok((await stat(join(root, left[0]!, "manifest.json"))).isFile());
      const ck = await openCheckpoint(root);
      try {
        await expectHolds(ck, 10);
      } finally {
        await ck.close();
      }
      assert.equal(await resolveResume(root, "auto"), join(root, "step-000010"));

      // And what a crash while `latest` was being replaced would leave.
      await writeFile(join(root, ".latest.tmp-123-abcd"), "step-0000");
      await save(root, 20);
      assert.deepEqual(await tmpFolders(root), []);
      assert.equal(await latestOf(root), "step-000020");
      const ck2 = await openCheckpoint(root);
      try {
        await expectHolds(ck2, 20);
      } finally {
        await ck2.close();
      }
    });
  });
}

test("keep_last prunes the oldest complete checkpoints after a save, never the one just written", async () => {
  await withTempDir(async (root) => {
    for (const step of [1, 2, 3, 4, 5]) await save(root, step, { keepLast: 2 });
    assert.deepEqual((await readdir(root)).sort(), ["latest", "step-000004", "step-000005"]);
    // Resumed from an older step: the new checkpoint stays, the abandoned run's newer steps go first.
    await save(root, 3, { keepLast: 1 });
    assert.deepEqual((await readdir(root)).sort(), ["latest", "step-000003"]);
    assert.equal(await latestOf(root), "step-000003");
  });
});

test("saving a step that exists (a retried command) replaces it whole", async () => {
  await withTempDir(async (root) => {
    await save(root, 5);
    const t = tensorsAt(6);
    await saveCheckpoint(root, meta(5, 4), rankInputs(t, 4));
    assert.deepEqual((await readdir(root)).sort(), ["latest", "step-000005"]);
    const ck = await openCheckpoint(root);
    try {
      bitsEqual(await ck.loadShard(t[0]!.name), t[0]!.data, "replaced tensor");
    } finally {
      await ck.close();
    }
  });
});

test("a flipped byte in a shard fails its checksum, naming the file and its tensors", async () => {
  await withTempDir(async (root) => {
    const dir = await save(root, 8);
    const path = join(dir, "rank-00001.safetensors");
    const { size } = await stat(path);
    const fh = await open(path, "r+");
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, size - 3);
    b[0] = b[0]! ^ 0x10;
    await fh.write(b, 0, 1, size - 3);
    await fh.close();
    await assert.rejects(openCheckpoint(dir), /rank-00001\.safetensors fails its sha256 checksum: corrupt \(rank 1's shard, holding model\.embed_tokens\.weight/);
    // Sizes-only verification does not see it; it is the checksum that does.
    await (await openCheckpoint(dir, { verify: "size" })).close();
  });
});

test("a truncated or missing shard is an error naming the file and its tensors", async () => {
  await withTempDir(async (root) => {
    const dir = await save(root, 9);
    const path = join(dir, "rank-00002.safetensors");
    const { size } = await stat(path);
    await truncate(path, size - 4);
    await assert.rejects(openCheckpoint(dir, { verify: "size" }), new RegExp(`rank-00002\\.safetensors is ${size - 4} bytes, the manifest says ${size}: truncated.*holding model\\.embed_tokens\\.weight`));
    await truncate(path, 0);
    await assert.rejects(openCheckpoint(dir), /rank-00002\.safetensors is 0 bytes/);
    await unlink(path);
    await assert.rejects(openCheckpoint(dir), /shard file .*rank-00002\.safetensors is missing \(rank 2's shard, holding model\./);
  });
});

test("resume: never, auto (newest complete, past a damaged one), or a path", async () => {
  await withTempDir(async (root) => {
    assert.equal(await resolveResume(root, "auto"), undefined);
    assert.equal(await resolveResume(join(root, "nothing-here"), "auto"), undefined);
    await save(root, 10);
    await save(root, 20);
    await assert.rejects(save(root, 30, { beforeRename: () => Promise.reject(new Error("crash")) }), /crash/);
    assert.equal(await resolveResume(root, "never"), undefined);
    assert.equal(await resolveResume(root, "auto"), join(root, "step-000020"));
    assert.equal(await resolveResume(root, join(root, "step-000010")), join(root, "step-000010"));
    assert.equal(await resolveResume(root, root), join(root, "step-000020"));
    await assert.rejects(resolveResume(root, join(root, "step-000030")), /holds neither manifest\.json nor a latest pointer/);

    await truncate(join(root, "step-000020", "rank-00000.safetensors"), 10);
    const skipped: string[] = [];
    assert.equal(await resolveResume(root, "auto", { onSkip: (d, e) => skipped.push(`${d}: ${e.message}`) }), join(root, "step-000010"));
    assert.equal(skipped.length, 1);
    assert.match(skipped[0]!, /step-000020: .*rank-00000\.safetensors is 10 bytes/);
    await assert.rejects(resolveResume(root, join(root, "step-000020")), /truncated/);
  });
});

test("multi-rank protocol: ranks write concurrently, reports cross the wire codec, rank 0 commits only what matches them", async () => {
  await withTempDir(async (root) => {
    const tensors = tensorsAt(1);
    const inputs = rankInputs(tensors, 4);
    const run = async (step: number, tamper?: (dir: string) => Promise<void>) => {
      const dir = await beginCheckpoint(root, step);
      const reports = await Promise.all(inputs.map(async (input, rank) => decode(encode(await writeRankShard(dir, rank, input))) as RankShardReport));
      await tamper?.(dir);
      return commitCheckpoint(dir, buildManifest(meta(step, 4), reports.reverse()), { keepLast: 3 });
    };
    await assert.rejects(
      run(1, (dir) => unlink(join(dir, "rank-00002.safetensors"))),
      /rank 2's shard .*rank-00002\.safetensors is missing; not committing/,
    );
    await assert.rejects(
      run(1, async (dir) => {
        const fh = await open(join(dir, "rank-00003.safetensors"), "r+");
        await fh.write(Buffer.from([0xff]), 0, 1, 20);
        await fh.close();
      }),
      /rank 3's shard .*rank-00003\.safetensors does not match its reported sha256; not committing/,
    );
    assert.deepEqual(await listComplete(root), []);
    const final = await run(1);
    assert.deepEqual(await tmpFolders(root), []);
    const ck = await openCheckpoint(final);
    try {
      await expectHolds(ck, 1);
    } finally {
      await ck.close();
    }
  });
});
