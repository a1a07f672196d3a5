// Benchmark of the runtime's messaging: ask round-trip latency (p50, p99), asks per second
// with several in flight, and one-way tells per second, for 1 KB and 1 MB payloads, over
// the in-process transport, over NATS on loopback, and, as the baseline, a bare
// @nats-io/transport-node request/reply loop against the same server. The runtime's
// overhead over the bare client is the figure to watch.
//
//   node --import tsx tests/bench/runtime.bench.ts
//
// Prints a table and writes tests/bench/results/runtime.json. Runs in well under a minute.
// Both ends live in this one process (two NATS connections), so the NATS figures include
// both sides' CPU on one event loop, for the runtime and for the bare client alike.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { z } from "zod";
import { ActorSystem, defineActor, defineProtocol, } from "../../runtime/actors/index.ts";
import { InProcTransport, NatsTransport, type Transport } from "../../runtime/transport/index.ts";
import { startNatsServer } from "../helpers/nats-server.ts";

const Echo = defineProtocol("bench-echo", {
  echo: { msg: z.object({ data: z.instanceof(Uint8Array) }), reply: z.instanceof(Uint8Array) },
  push: { msg: z.object({ data: z.instanceof(Uint8Array) }) },
  count: { msg: z.object({}), reply: z.number() },
});

/** Payload sizes; 1 MB is 10^6 bytes, so the bare client's message fits the default 1 MiB max_payload. */
const SIZES = [
  { label: "1 KB", bytes: 1024, latencyIters: 3000, throughputMs: 1500, tells: 20_000 },
  { label: "1 MB", bytes: 1_000_000, latencyIters: 150, throughputMs: 1500, tells: 0 },
];
const IN_FLIGHT = 32;
/**
 * Each measurement is split into rounds that alternate between the transports, so that a
 * load change on a shared machine hits all of them alike instead of whichever ran then.
 */
const ROUNDS = 5;

type Bytes = Uint8Array<ArrayBuffer>;
type Kind = "inproc" | "nats" | "nats-bare";

interface Row {
  transport: Kind;
  payload: string;
  payloadBytes: number;
  p50Us: number;
  p99Us: number;
  asksPerSec: number;
  tellsPerSec?: number;
}

/** One transport under test: an echo round trip, and a stream of one-way messages. */
interface Target {
  readonly kind: Kind;
  roundTrip(data: Bytes): Promise<Uint8Array>;
  /** Sends `n` one-way messages and resolves once the receiver has them all. */
  tells(n: number, data: Bytes): Promise<void>;
  close(): Promise<void>;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function latencySamples(t: Target, data: Bytes, iters: number, out: number[]): Promise<void> {
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    const back = await t.roundTrip(data);
    out.push(Number(process.hrtime.bigint() - t0) / 1000);
    if (back.byteLength !== data.byteLength) throw new Error(`${t.kind}: echo returned the wrong size`);
  }
}

/** Round trips completed with IN_FLIGHT outstanding, and the seconds it took. */
async function throughputSlice(t: Target, data: Bytes, ms: number): Promise<{ done: number; secs: number }> {
  let done = 0;
  const t0 = performance.now();
  const deadline = t0 + ms;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (performance.now() < deadline) {
        await t.roundTrip(data);
        done++;
      }
    }),
  );
  return { done, secs: (performance.now() - t0) / 1000 };
}

async function runtimeTarget(kind: "inproc" | "nats", server: Transport, client: Transport): Promise<Target> {
  const serverSystem = new ActorSystem({ transport: server, name: `bench-${kind}-server`, log: () => {} });
  const clientSystem =
    server === client ? serverSystem : new ActorSystem({ transport: client, name: `bench-${kind}-client`, log: () => {} });
  let pushed = 0;
  await serverSystem.spawn(
    "bench.echo",
    defineActor(Echo, () => ({
      echo: ({ data }) => data,
      push: () => {
        pushed++;
      },
      count: () => pushed,
    })),
  );
  const ref = clientSystem.ref("bench.echo", Echo);
  return {
    kind,
    roundTrip: (data) => ref.ask({ type: "echo", data }, { timeoutMs: 30_000 }),
    tells: async (n, data) => {
      const before = await ref.ask({ type: "count" });
      // As actor code does: each tell awaited (it resolves once the transport took it).
      for (let i = 0; i < n; i++) await ref.tell({ type: "push", data });
      // Handled after every tell from this sender: FIFO per sender.
      const after = await ref.ask({ type: "count" }, { timeoutMs: 30_000 });
      if (after - before !== n) throw new Error(`${kind}: ${after - before} of ${n} tells arrived`);
    },
    close: async () => {
      await clientSystem.shutdown();
      await serverSystem.shutdown();
      await client.close();
      if (server !== client) await server.close();
    },
  };
}

async function bareTarget(url: string): Promise<Target> {
  const responder: NatsConnection = await connect({ servers: url });
  const requester: NatsConnection = await connect({ servers: url });
  let pushed = 0;
  responder.subscribe("bare.echo", { callback: (_err, m) => void m.respond(m.data) });
  responder.subscribe("bare.push", {
    callback: (_err, m) => {
      if (m.reply) m.respond();
      else pushed++;
    },
  });
  await responder.flush();
  return {
    kind: "nats-bare",
    roundTrip: async (data) => (await requester.request("bare.echo", data, { timeout: 30_000 })).data,
    tells: async (n, data) => {
      const before = pushed;
      for (let i = 0; i < n; i++) requester.publish("bare.push", data);
      await requester.request("bare.push", undefined, { timeout: 30_000 });
      if (pushed - before !== n) throw new Error(`bare: ${pushed - before} of ${n} publishes arrived`);
    },
    close: async () => {
      await requester.close();
      await responder.close();
    },
  };
}

async function measure(targets: Target[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const size of SIZES) {
    const data = new Uint8Array(size.bytes).fill(7);
    const lat = new Map<Kind, number[]>(targets.map((t) => [t.kind, []]));
    const thr = new Map<Kind, { done: number; secs: number }>(targets.map((t) => [t.kind, { done: 0, secs: 0 }]));
    const tel = new Map<Kind, number>(targets.map((t) => [t.kind, 0]));
    for (const t of targets) await latencySamples(t, data, Math.max(20, size.latencyIters / 10), []); // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      for (const t of targets) await latencySamples(t, data, size.latencyIters / ROUNDS, lat.get(t.kind)!);
      for (const t of targets) {
        const r = await throughputSlice(t, data, size.throughputMs / ROUNDS);
        const acc = thr.get(t.kind)!;
        acc.done += r.done;
        acc.secs += r.secs;
      }
      if (size.tells > 0) {
        for (const t of targets) {
          const t0 = performance.now();
          await t.tells(size.tells / ROUNDS, data);
          tel.set(t.kind, tel.get(t.kind)! + (performance.now() - t0) / 1000);
        }
      }
    }
    for (const t of targets) {
      const samples = lat.get(t.kind)!.sort((a, b) => a - b);
      const acc = thr.get(t.kind)!;
      rows.push({
        transport: t.kind,
        payload: size.label,
        payloadBytes: size.bytes,
        p50Us: percentile(samples, 50),
        p99Us: percentile(samples, 99),
        asksPerSec: acc.done / acc.secs,
        ...(size.tells > 0 ? { tellsPerSec: size.tells / tel.get(t.kind)! } : {}),
      });
    }
  }
  return rows;
}

function natsServerVersion(): string {
  try {
    return execFileSync("/usr/sbin/nats-server", ["--version"]).toString().trim();
  } catch {
    return "unknown";
  }
}

async function main(): Promise<void> {
  const server = await startNatsServer();
  const targets: Target[] = [];
  try {
    const inproc = new InProcTransport();
    targets.push(await runtimeTarget("inproc", inproc, inproc));
    const a = await NatsTransport.connect({ servers: server.url, job: "bench", name: "bench-server" });
    const b = await NatsTransport.connect({ servers: server.url, job: "bench", name: "bench-client" });
    targets.push(await runtimeTarget("nats", a, b));
    targets.push(await bareTarget(server.url));
    const rows = await measure(targets);

    const overhead = SIZES.map(({ label }) => {
      const nats = rows.find((r) => r.transport === "nats" && r.payload === label)!;
      const bare = rows.find((r) => r.transport === "nats-bare" && r.payload === label)!;
      return {
        payload: label,
        p50AddedUs: nats.p50Us - bare.p50Us,
        p50Ratio: nats.p50Us / bare.p50Us,
        throughputRatio: nats.asksPerSec / bare.asksPerSec,
        ...(nats.tellsPerSec && bare.tellsPerSec ? { tellThroughputRatio: nats.tellsPerSec / bare.tellsPerSec } : {}),
      };
    });

    const result = {
      date: new Date().toISOString(),
      node: process.version,
      natsServer: natsServerVersion(),
      cpu: cpus()[0]?.model ?? "unknown",
      cores: cpus().length,
      inFlight: IN_FLIGHT,
      rounds: ROUNDS,
      rows,
      overhead,
    };
    const dir = join(fileURLToPath(new URL(".", import.meta.url)), "results");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "runtime.json"), JSON.stringify(result, null, 2) + "\n");

    const f = (n: number | undefined, digits = 0) => (n === undefined ? "-" : n.toFixed(digits));
    console.table(
      rows.map((r) => ({
        transport: r.transport,
        payload: r.payload,
        "p50 µs": f(r.p50Us),
        "p99 µs": f(r.p99Us),
        [`asks/s (${IN_FLIGHT} in flight)`]: f(r.asksPerSec),
        "tells/s": f(r.tellsPerSec),
      })),
    );
    console.table(
      overhead.map((o) => ({
        payload: o.payload,
        "runtime p50 − bare p50 (µs)": f(o.p50AddedUs),
        "p50 ratio": f(o.p50Ratio, 2),
        "asks/s ratio": f(o.throughputRatio, 2),
        "tells/s ratio": f(o.tellThroughputRatio, 2),
      })),
    );
    console.log(`wrote ${join(dir, "runtime.json")}`);
  } finally {
    for (const t of targets) await t.close();
    await server.stop("SIGKILL");
  }
}

await main();
