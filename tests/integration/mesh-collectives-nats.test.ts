// Host collectives across OS processes: 4 rank processes over a real nats-server whose
// max_payload (256 KiB) is below the blocks they exchange, so blocks travel chunked.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CollectiveTimeoutError, HostCollectives } from "../../mesh/collectives/index.ts";
import { NatsTransport } from "../../runtime/transport/index.ts";
import { startNatsServer } from "../helpers/nats-server.ts";
import { ALL_REDUCE_LENGTH, ALL_TO_ALL_LENGTH, rankInput } from "./fixtures/collectives-data.ts";

const script = fileURLToPath(new URL("./fixtures/collectives-rank.ts", import.meta.url));
const WORLD = 4;

function runRank(url: string, job: string, rank: number, outDir: string, timeoutMs: number): Promise<string> {
  const child = spawn(process.execPath, ["--import", "tsx", script, url, job, String(rank), String(WORLD), outDir], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  process.once("exit", () => child.kill("SIGKILL"));
  let out = "";
  let err = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr.on("data", (b: Buffer) => (err = (err + b.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`rank ${rank} did not finish within ${timeoutMs} ms:\n${out}\n${err}`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      if (code === 0 && out.startsWith("done ")) resolve(out.trim());
      else reject(new Error(`rank ${rank} exited with ${code}:\n${out}\n${err}`));
    });
  });
}

function readF32(path: string): Float32Array {
  const b = readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

test("4 rank processes over NATS: a 3 MiB allReduce and an allToAll match the reference", { timeout: 30_000 }, async () => {
  const server = await startNatsServer({ maxPayload: 256 * 1024 });
  const outDir = mkdtempSync(join(tmpdir(), "tessera-coll-"));
  try {
    const lines = await Promise.all(Array.from({ length: WORLD }, (_, r) => runRank(server.url, "coll", r, outDir, 25_000)));
    const ranks = Array.from({ length: WORLD }, (_, r) => r);

    // Reference: float64 sum in rank order, rounded to float32 once.
    const inputs = ranks.map((r) => rankInput(r, ALL_REDUCE_LENGTH, 1));
    const expected = new Float32Array(ALL_REDUCE_LENGTH);
    for (let i = 0; i < ALL_REDUCE_LENGTH; i++) {
      let s = 0;
      for (const x of inputs) s += x[i]!;
      expected[i] = s;
    }
    const expectedBytes = Buffer.from(expected.buffer);
    for (const r of ranks) {
      const got = readFileSync(join(outDir, `allReduce.${r}.bin`));
      assert.equal(got.byteLength, ALL_REDUCE_LENGTH * 4);
      assert.ok(got.equals(expectedBytes), `allReduce at rank ${r}: bitwise equal to the reference`);
    }

    const block = ALL_TO_ALL_LENGTH / WORLD;
    const sent = ranks.map((r) => rankInput(r, ALL_TO_ALL_LENGTH, 2));
    for (const r of ranks) {
      const got = readF32(join(outDir, `allToAll.${r}.bin`));
      assert.equal(got.length, ALL_TO_ALL_LENGTH);
      for (const j of ranks) {
        const want = sent[j]!.subarray(r * block, (r + 1) * block);
        const have = got.subarray(j * block, (j + 1) * block);
        assert.ok(Buffer.from(have.buffer, have.byteOffset, have.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength)), `allToAll: rank ${r}'s block ${j} is what rank ${j} sent`);
      }
    }
    console.log(`allReduce 3 MiB x ${WORLD} ranks over NATS: ${lines.join(", ")} ms`);
  } finally {
    rmSync(outDir, { recursive: true, force: true });
    await server.stop();
  }
});

test("over NATS, a rank that never calls makes the others fail by the deadline, naming it", { timeout: 20_000 }, async () => {
  const server = await startNatsServer();
  const transports = await Promise.all([0, 1, 2].map((r) => NatsTransport.connect({ servers: server.url, job: "hung", name: `rank-${r}` })));
  const eps = await Promise.all(transports.map((transport, rank) => HostCollectives.start({ transport, rank, timeoutMs: 10_000 })));
  try {
    const calls = eps.slice(0, 2).map((ep) => ep.group([0, 1, 2], "dp").allReduce(new Float32Array(100_000), "sum", { timeoutMs: 400 }));
    for (const res of await Promise.allSettled(calls)) {
      assert.equal(res.status, "rejected");
      const err = (res as PromiseRejectedResult).reason;
      assert.ok(err instanceof CollectiveTimeoutError, String(err));
      assert.deepEqual(err.missing, [2]);
      assert.match(err.message, /#0 allReduce\(sum\) float32\[100000\] on group dp\[0,1,2\].*waiting for rank\(s\) 2$/u);
    }
  } finally {
    await Promise.all(eps.map((ep) => ep.close()));
    await Promise.all(transports.map((t) => t.close()));
    await server.stop();
  }
});
