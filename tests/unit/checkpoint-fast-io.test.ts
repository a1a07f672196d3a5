// One-pass checkpoint writing: the sha256 a rank reports is taken of the bytes as they go out,
// the commit reads back only what another process wrote (verify "local"), and none of this
// weakens what a reader or the commit catches, or what a failed save leaves behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, cp, open, readFile, readdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  beginCheckpoint,
  buildManifest,
  commitCheckpoint,
  openCheckpoint,
  resolveResume,
  saveCheckpoint,
  writeRankShard,
  type RankShardInput,
} from "../../models/checkpoint/index.ts";
import { sha256File } from "../../models/checkpoint/durable.ts";
import { sha256Files } from "../../models/checkpoint/hash-files.ts";
import { forgetUnder, knownUnder, vouch } from "../../models/checkpoint/hashed-here.ts";
import { FileSink } from "../../models/hf/file-sink.ts";
import { bitsEqual, meta, rankInputs, testTensors, values, withTempDir } from "./checkpoint-testkit.ts";

const sha256Of = async (path: string) => createHash("sha256").update(await readFile(path)).digest("hex");

/** Small tensors (gathered into one write) beside large ones (written in several slices), and optimizer state. */
function mixedInput(): { input: RankShardInput; data: Map<string, Float32Array> } {
  const data = new Map<string, Float32Array>([
    ["a.bias", values(7, 1)],
    ["b.weight", values(9_000_001, 2)], // 36 MB: more than one 32 MiB slice, not a multiple of it
    ["c.norm", values(3, 3)],
    ["d.weight", values(1_100_000, 4)], // 4.4 MB: written on its own, one slice
  ]);
  const input: RankShardInput = {
    tensors: [...data].map(([name, d]) => ({ name, shape: [d.length], data: () => d })),
    optimizer: {
      step: 3,
      params: { "a.bias": { algorithm: "adamw", step: 3, shape: [7], buffers: { exp_avg: values(7, 5), exp_avg_sq: values(7, 6) } } },
    },
  };
  return { input, data };
}

test("a shard's reported size and sha256 are those of the file on disk, and its tensors read back bit-exact", async () => {
  await withTempDir(async (root) => {
    const { input, data } = mixedInput();
    const dir = await beginCheckpoint(root, 1);
    const report = await writeRankShard(dir, 0, input);
    const path = join(dir, report.file);
    assert.equal(report.sha256, await sha256Of(path));
    assert.equal(report.bytes, (await readFile(path)).length);
    const final = await commitCheckpoint(dir, buildManifest(meta(1, 1), [report]), { verify: "full" });
    const ck = await openCheckpoint(final);
    try {
      for (const [name, d] of data) bitsEqual(await ck.loadShard(name), d, name);
      bitsEqual((await ck.loadOptimizerState()).params["a.bias"]!.buffers.exp_avg_sq as Float32Array, values(7, 6), "exp_avg_sq");
    } finally {
      await ck.close();
    }
  });
});

test("the shard file is laid out as before: header, then each tensor's fp32 bytes in name order, nothing between", async () => {
  await withTempDir(async (root) => {
    const { input, data } = mixedInput();
    const dir = await beginCheckpoint(root, 1);
    const report = await writeRankShard(dir, 0, input);
    const file = await readFile(join(dir, report.file));
    const headerLen = Number(file.readBigUInt64LE(0));
    assert.equal(headerLen % 8, 0);
    const header = JSON.parse(file.subarray(8, 8 + headerLen).toString("utf8")) as Record<string, { data_offsets: [number, number] }>;
    const names = [...data.keys(), "optim.a.bias.exp_avg", "optim.a.bias.exp_avg_sq"].sort();
    assert.deepEqual(Object.keys(header).filter((k) => k !== "__metadata__").sort(), names);
    const expected = [values(7, 1), values(7, 5), values(7, 6), values(9_000_001, 2), values(3, 3), values(1_100_000, 4)];
    assert.deepEqual(names, ["a.bias", "b.weight", "c.norm", "d.weight", "optim.a.bias.exp_avg", "optim.a.bias.exp_avg_sq"]);
    const inOrder = [expected[0]!, expected[3]!, expected[4]!, expected[5]!, expected[1]!, expected[2]!];
    const body = Buffer.concat(inOrder.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)));
    assert.equal(file.length, 8 + headerLen + body.length);
    assert.ok(file.subarray(8 + headerLen).equals(body));
  });
});

test("sha256File matches a hash of the whole file at chunk boundaries", async () => {
  await withTempDir(async (root) => {
    for (const n of [0, 1, 16 << 20, (16 << 20) + 1, (32 << 20) + 5]) {
      const p = join(root, `f${n}`);
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i += 4093) b[i] = (i * 31) & 0xff;
      await writeFile(p, b);
      assert.equal(await sha256File(p), await sha256Of(p), `${n} bytes`);
    }
  });
});

test("sha256Files hashes in worker threads, in the order given, and names a file it cannot read", async () => {
  await withTempDir(async (root) => {
    const files = [3, 5_000_000, 0, 17].map((n, i) => ({ path: join(root, `f${i}`), bytes: n }));
    for (const [i, f] of files.entries()) await writeFile(f.path, Buffer.alloc(f.bytes, i + 1));
    const expected = await Promise.all(files.map((f) => sha256Of(f.path)));
    assert.deepEqual(await sha256Files(files, { workers: 2, workersFromBytes: 0 }), expected);
    assert.deepEqual(await sha256Files(files), expected);
    await assert.rejects(sha256Files([...files, { path: join(root, "gone"), bytes: 1 }], { workers: 2, workersFromBytes: 0 }), /hashing .*gone/);
  });
});

test("the full verify still catches a corrupted shard this process wrote, at commit and at open", async () => {
  await withTempDir(async (root) => {
    const dir = await beginCheckpoint(root, 1);
    const report = await writeRankShard(dir, 0, mixedInput().input);
    const path = join(dir, report.file);
    const fh = await open(path, "r+");
    await fh.write(Buffer.from([0x5a]), 0, 1, report.bytes - 3);
    await fh.close();
    await assert.rejects(
      commitCheckpoint(dir, buildManifest(meta(1, 1), [report]), { verify: "full" }),
      /rank 0's shard .*rank-00000\.safetensors does not match its reported sha256; not committing/,
    );
    const final = await commitCheckpoint(dir, buildManifest(meta(1, 1), [report]), { verify: "size" });
    await assert.rejects(openCheckpoint(final), /fails its sha256 checksum/);
    await assert.rejects(openCheckpoint(final, { verify: "local" }), /fails its sha256 checksum/);
  });
});

test('verify "local" re-hashes a shard that was replaced, written to, or reported with another hash', async () => {
  await withTempDir(async (root) => {
    const inputs = rankInputs(testTensors(), 2);
    const tamperings: [string, (path: string) => Promise<void>][] = [
      [
        "replaced by a copy with one byte changed",
        async (path) => {
          const bytes = await readFile(path);
          bytes[bytes.length - 1]! ^= 1;
          await writeFile(path + ".new", bytes);
          await rename(path + ".new", path);
        },
      ],
      [
        "written to in place (after a timestamp tick)",
        async (path) => {
          await sleep(50);
          const fh = await open(path, "r+");
          const b = Buffer.alloc(1);
          await fh.read(b, 0, 1, 40);
          b[0]! ^= 0x80;
          await fh.write(b, 0, 1, 40);
          await fh.close();
        },
      ],
    ];
    for (const [how, tamper] of tamperings) {
      const dir = await beginCheckpoint(root, 5);
      const reports = [await writeRankShard(dir, 0, inputs[0]!), await writeRankShard(dir, 1, inputs[1]!)];
      await tamper(join(dir, reports[1]!.file));
      await assert.rejects(
        commitCheckpoint(dir, buildManifest(meta(5, 2), reports), { verify: "local" }),
        /rank 1's shard .* does not match its reported sha256; not committing/,
        how,
      );
    }
    // A report whose hash is not the one this process computed (a rank's bug, or another
    // process's shard under the same name) is checked against the file.
    const dir = await beginCheckpoint(root, 5);
    const reports = [await writeRankShard(dir, 0, inputs[0]!), await writeRankShard(dir, 1, inputs[1]!)];
    reports[0] = { ...reports[0]!, sha256: "0".repeat(64) };
    await assert.rejects(commitCheckpoint(dir, buildManifest(meta(5, 2), reports), { verify: "local" }), /rank 0's shard .* does not match/);
  });
});

test('verify "local" hashes a shard this process did not write there, and passes it when it matches', async () => {
  await withTempDir(async (root) => {
    const inputs = rankInputs(testTensors(), 2);
    // Rank 1's shard as another process would leave it: written under another root, then copied in.
    const elsewhere = await beginCheckpoint(join(root, "elsewhere"), 8);
    const theirs = await writeRankShard(elsewhere, 1, inputs[1]!);
    const dir = await beginCheckpoint(root, 8);
    const ours = await writeRankShard(dir, 0, inputs[0]!);
    const bytes = await readFile(join(elsewhere, theirs.file));
    bytes[bytes.length - 2]! ^= 1;
    await writeFile(join(dir, theirs.file), bytes);
    await assert.rejects(commitCheckpoint(dir, buildManifest(meta(8, 2), [ours, theirs]), { verify: "local" }), /rank 1's shard .* does not match/);
    await copyFile(join(elsewhere, theirs.file), join(dir, theirs.file));
    const final = await commitCheckpoint(dir, buildManifest(meta(8, 2), [ours, theirs]), { verify: "local" });
    const ck = await openCheckpoint(final);
    try {
      for (const t of testTensors()) bitsEqual(await ck.loadShard(t.name), t.data, t.name);
    } finally {
      await ck.close();
    }
  });
});

/** Bytes this process has read so far, worker threads included (Linux's /proc/self/io rchar: page-cache hits count too). */
async function bytesRead(): Promise<number> {
  return Number(/^rchar: (\d+)$/m.exec(await readFile("/proc/self/io", "utf8"))![1]);
}

async function bytesReadBy(fn: () => Promise<unknown>): Promise<number> {
  const before = await bytesRead();
  await fn();
  return (await bytesRead()) - before;
}

test('verify "local" does not read back a shard this process wrote or hashed whole; "full" does', { skip: !existsSync("/proc/self/io") && "needs /proc/self/io" }, async () => {
  await withTempDir(async (root) => {
    const dir = await beginCheckpoint(join(root, "ours"), 1);
    const report = await writeRankShard(dir, 0, mixedInput().input);
    // Manifest and safetensors headers are a few KB; the shard is about 40 MB.
    const headersOnly = report.bytes / 100;
    let final = "";
    const commit = await bytesReadBy(async () => (final = await commitCheckpoint(dir, buildManifest(meta(1, 1), [report]), { verify: "local" })));
    assert.ok(commit < headersOnly, `the commit read ${commit} bytes of a shard this process wrote`);
    const openWith = (at: string, verify: "local" | "full") => async () => (await openCheckpoint(at, { verify })).close();
    // The commit renamed the folder; what this process knows of the shard moved with it.
    const local = await bytesReadBy(openWith(final, "local"));
    assert.ok(local < headersOnly, `a "local" open read ${local} bytes`);
    const full = await bytesReadBy(openWith(final, "full"));
    assert.ok(full >= report.bytes, `a "full" open read ${full} bytes, less than the ${report.bytes}-byte shard`);

    // A checkpoint another process left (a copy, unknown here): resume's pass hashes it whole
    // once, and the open that follows (findResume's) reads it no more.
    await cp(join(root, "ours"), join(root, "theirs"), { recursive: true });
    let found: string | undefined;
    const resolve = await bytesReadBy(async () => (found = await resolveResume(join(root, "theirs"), "auto", { verify: "local" })));
    assert.ok(found?.startsWith(join(root, "theirs")), `resolved ${found}`);
    assert.ok(resolve >= report.bytes, `resolveResume read ${resolve} bytes of a shard it had not seen`);
    const reopen = await bytesReadBy(openWith(found!, "local"));
    assert.ok(reopen < headersOnly, `the open after resolveResume read ${reopen} bytes`);
  });
});

test("a process vouched for by another (knownUnder / vouch) opens \"local\" without reading the shard; a shard changed since is hashed and caught", { skip: !existsSync("/proc/self/io") && "needs /proc/self/io" }, async () => {
  await withTempDir(async (root) => {
    const dir = await beginCheckpoint(join(root, "ckpt"), 1);
    const report = await writeRankShard(dir, 0, mixedInput().input);
    const final = await commitCheckpoint(dir, buildManifest(meta(1, 1), [report]), { verify: "local" });
    const headersOnly = report.bytes / 100;
    // What the coordinator knows, handed to a process that knows nothing of the folder (forgetUnder stands in for it).
    const records = knownUnder(final);
    assert.equal(records.length, 1, `records: ${JSON.stringify(records)}`);
    forgetUnder(final);
    vouch(final, records);
    const vouched = await bytesReadBy(async () => (await openCheckpoint(final, { verify: "local" })).close());
    assert.ok(vouched < headersOnly, `a vouched "local" open read ${vouched} bytes`);

    // The same records no longer hold once the shard is overwritten (same size): it is hashed, and fails.
    await sleep(20);
    const shard = join(final, records[0]!.file);
    const fh = await open(shard, "r+");
    try {
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, report.bytes - 1);
      b[0] = b[0]! ^ 0xff;
      await fh.write(b, 0, 1, report.bytes - 1);
    } finally {
      await fh.close();
    }
    forgetUnder(final);
    vouch(final, records);
    await assert.rejects(openCheckpoint(final, { verify: "local" }), /fails its sha256 checksum/);
    assert.throws(() => vouch(final, [{ ...records[0]!, file: "../elsewhere.safetensors" }]), /outside/);
  });
});

test("a save that fails in the middle of writing a shard leaves the previous latest whole, and no shard file behind", async () => {
  await withTempDir(async (root) => {
    await saveCheckpoint(root, meta(10, 1), [mixedInput().input]);
    const { input } = mixedInput();
    let produced = 0;
    const failing: RankShardInput = {
      tensors: input.tensors.map((t) => ({
        ...t,
        // The third tensor fails after large ones are already on their way to the disk.
        data: () => {
          if (++produced === 3) throw new Error("device copy failed");
          return (t.data as () => Float32Array)();
        },
      })),
    };
    await assert.rejects(saveCheckpoint(root, meta(20, 1), [failing]), /device copy failed/);
    assert.equal((await readFile(join(root, "latest"), "utf8")).trim(), "step-000010");
    const tmp = (await readdir(root)).filter((n) => n.startsWith("step-000020.tmp-"));
    assert.equal(tmp.length, 1);
    assert.deepEqual(await readdir(join(root, tmp[0]!)), []);
    const ck = await openCheckpoint(root);
    try {
      assert.equal(ck.step, 10);
      bitsEqual(await ck.loadShard("b.weight"), values(9_000_001, 2), "b.weight");
    } finally {
      await ck.close();
    }
  });
});

test("a write error in the sink surfaces from put or end, never as an unhandled rejection", async () => {
  let calls = 0;
  const fh = {
    write: async (_b: Uint8Array, _o: number, length: number) => {
      await sleep(1);
      if (++calls === 2) throw new Error("ENOSPC: no space left on device");
      return { bytesWritten: length };
    },
  } as unknown as ConstructorParameters<typeof FileSink>[0];
  const sink = new FileSink(fh, { sha256: true });
  const big = new Uint8Array(8 << 20);
  await assert.rejects(
    (async () => {
      for (let i = 0; i < 8; i++) await sink.put(big);
      await sink.end();
    })(),
    /ENOSPC/,
  );
});

test("optimizer state is read buffer by buffer as the writer reaches it, and the shard is the eager state's byte for byte", async () => {
  const { AdamW } = await import("../../models/optim/index.ts");
  const { ops } = await import("../../models/ops.ts");
  const params = [
    { name: "w", value: ops.tensor(values(12, 7), [3, 4]), grad: ops.tensor(values(12, 8), [3, 4]), zeroGrad() {} },
    { name: "b", value: ops.tensor(values(4, 9), [4]), grad: ops.tensor(values(4, 10), [4]), zeroGrad() {} },
  ];
  const opt = new AdamW(params, { weightDecay: 0.1 });
  opt.step(1e-2);
  const src = opt.stateSource();
  let reads = 0;
  for (const ps of Object.values(src.params)) {
    for (const [b, read] of Object.entries(ps.buffers)) {
      assert.equal(typeof read, "function", `${b} is read lazily`);
      const f = read as () => Float32Array | Float64Array;
      ps.buffers[b] = () => {
        reads++;
        return f();
      };
    }
  }
  const tensors = params.map((p) => ({ name: p.name, shape: p.value.shape, data: () => p.value.toArray() as Float32Array }));
  await withTempDir(async (dir) => {
    const lazy = await writeRankShard(await beginCheckpoint(join(dir, "lazy"), 1), 0, { tensors, optimizer: src });
    assert.equal(reads, 4, "each of the two parameters' two buffers read once, by the writer");
    const eager = await writeRankShard(await beginCheckpoint(join(dir, "eager"), 1), 0, { tensors, optimizer: opt.stateDict() });
    assert.equal(lazy.sha256, eager.sha256);
    assert.deepEqual(lazy.optimizer, eager.optimizer);
  });
  opt.dispose();
  for (const p of params) {
    p.value.dispose();
    p.grad.dispose();
  }
});
