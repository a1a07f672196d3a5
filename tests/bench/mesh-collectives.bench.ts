// Benchmark of the host collectives: allReduce (sum, float32) over 4 ranks at sizes around
// the small/large switch (SMALL_ALLREDUCE_BYTES) and up to 16 MiB, plus allGather and
// allToAll, in-process and over NATS on loopback.
//
//   node --import tsx tests/bench/mesh-collectives.bench.ts
//
// Prints a table and writes tests/bench/results/mesh-collectives.json. All 4 ranks live in
// this one process (4 NATS connections), so the NATS figures include every rank's encoding,
// decoding and reducing on one event loop: a lower bound on what 4 processes reach.
// busGBs is the NCCL-style bus bandwidth: bytes * 2(n-1)/n per second for allReduce,
// bytes * (n-1)/n for allGather and allToAll (bytes = one rank's output).
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { HostCollectives, SMALL_ALLREDUCE_BYTES, type Collectives, type HostBuffer } from "../../mesh/collectives/index.ts";
import { InProcTransport, NatsTransport, type Transport } from "../../runtime/transport/index.ts";
import { startNatsServer } from "../helpers/nats-server.ts";

const N = 4;
const KiB = 1024;
/** Around the switch: SMALL_ALLREDUCE_BYTES goes in one round, the next size in two. */
const SIZES = [1 * KiB, SMALL_ALLREDUCE_BYTES, SMALL_ALLREDUCE_BYTES + 4 * KiB, 256 * KiB, 1024 * KiB, 4096 * KiB, 16384 * KiB];

interface Row {
  transport: string;
  op: string;
  bytes: number;
  msPerCall: number;
  busGBs: number;
}

type Op = "allReduce" | "allGather" | "allToAll";

async function timeOp(groups: Collectives<HostBuffer>[], op: Op, bytes: number): Promise<number> {
  const len = bytes / 4;
  const inputs = groups.map((_, r) => Float32Array.from({ length: op === "allGather" ? len / N : len }, (_, i) => (i % 97) * 0.01 + r));
  const once = () =>
    Promise.all(
      groups.map((g, r) =>
        op === "allReduce" ? g.allReduce(inputs[r]!, "sum") : op === "allGather" ? g.allGather(inputs[r]!) : g.allToAll(inputs[r]!),
      ),
    );
  await once();
  // Enough iterations for ~0.5 s, at least 3.
  const t0 = performance.now();
  await once();
  const one = performance.now() - t0;
  const iters = Math.max(3, Math.min(200, Math.round(500 / Math.max(one, 0.01))));
  const t1 = performance.now();
  for (let i = 0; i < iters; i++) await once();
  return (performance.now() - t1) / iters;
}

async function bench(label: string, transports: Transport[]): Promise<Row[]> {
  const eps = await Promise.all(transports.map((transport, rank) => HostCollectives.start({ transport, rank, timeoutMs: 60_000 })));
  const groups = eps.map((ep) => ep.group(Array.from({ length: N }, (_, r) => r), "bench"));
  const rows: Row[] = [];
  for (const op of ["allReduce", "allGather", "allToAll"] as const) {
    for (const bytes of op === "allReduce" ? SIZES : SIZES.filter((b) => b >= 256 * KiB)) {
      const ms = await timeOp(groups, op, bytes);
      const factor = op === "allReduce" ? (2 * (N - 1)) / N : (N - 1) / N;
      rows.push({ transport: label, op, bytes, msPerCall: ms, busGBs: (bytes * factor) / (ms / 1000) / 1e9 });
      console.log(`${label.padEnd(7)} ${op.padEnd(10)} ${String(bytes / KiB).padStart(6)} KiB  ${ms.toFixed(2).padStart(9)} ms  ${(rows.at(-1)!.busGBs).toFixed(3)} GB/s`);
    }
  }
  await Promise.all(eps.map((ep) => ep.close()));
  return rows;
}

const rows: Row[] = [];
const inproc = new InProcTransport();
rows.push(...(await bench("inproc", Array.from({ length: N }, () => inproc))));
await inproc.close();

const server = await startNatsServer();
const nats = await Promise.all(Array.from({ length: N }, (_, r) => NatsTransport.connect({ servers: server.url, job: "bench", name: `rank-${r}` })));
rows.push(...(await bench("nats", nats)));
await Promise.all(nats.map((t) => t.close()));
await server.stop();

const out = join(fileURLToPath(new URL(".", import.meta.url)), "results");
mkdirSync(out, { recursive: true });
writeFileSync(
  join(out, "mesh-collectives.json"),
  JSON.stringify({ date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model, cores: cpus().length, ranks: N, rows }, null, 2) + "\n",
);
