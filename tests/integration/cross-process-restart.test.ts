// nats-server crashes and restarts (same port) during a stream of asks from this process to
// an actor in another: both clients reconnect, every ask settles once, and no handler runs
// twice for one message id, although the transport re-sends in-flight asks after the
// reconnect (the actor's dedupe answers a repeat with the remembered result).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ActorSystem } from "../../runtime/actors/index.ts";
import { RuntimeError } from "../../runtime/errors.ts";
import { NatsTransport, type NatsStatusEvent } from "../../runtime/transport/index.ts";
import { startNatsServer, type NatsServer } from "../helpers/nats-server.ts";
import { Peer } from "./fixtures/peer-protocol.ts";
import { spawnPeer, type PeerProcess } from "./fixtures/spawn-peer.ts";

const job = "restart";
let server: NatsServer;
let peer: PeerProcess;
let transport: NatsTransport;
let system: ActorSystem;

before(async () => {
  server = await startNatsServer();
  peer = await spawnPeer(server.url, job);
  // A generous grace: on a loaded machine the peer may reconnect well after this process.
  transport = await NatsTransport.connect({
    servers: server.url,
    job,
    reconnectTimeWaitMs: 100,
    noResponderGraceMs: 5000,
    onError: () => {},
  });
  system = new ActorSystem({ transport, name: "asker", log: () => {} });
});
after(async () => {
  await peer?.stop();
  await system?.shutdown();
  await transport?.close();
  await server?.stop("SIGKILL");
});

test("a server restart during a stream of asks: each completes once or fails, no handler runs twice", async (t) => {
  const ref = system.ref("peer.main", Peer);
  const events: NatsStatusEvent["type"][] = [];
  transport.onStatus((e) => events.push(e.type));

  const total = 600;
  const concurrency = 16;
  const outcomes = new Map<string, { executions: number } | Error>();
  let next = 0;
  let completedBeforeRestart = -1;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      const id = `work-${i}`;
      try {
        const r = await ref.ask({ type: "work", n: i }, { id, timeoutMs: 8000 });
        assert.equal(r.n, i);
        assert.ok(!outcomes.has(id), `${id} settled twice`);
        outcomes.set(id, r);
      } catch (err) {
        outcomes.set(id, err as Error);
      }
    }
  };
  const stream = Promise.all(Array.from({ length: concurrency }, worker));

  const restart = (async () => {
    while (outcomes.size < 150) await new Promise((r) => setTimeout(r, 2));
    await server.stop("SIGKILL");
    completedBeforeRestart = outcomes.size;
    await new Promise((r) => setTimeout(r, 300));
    await server.start();
  })();
  await Promise.all([stream, restart]);

  assert.equal(outcomes.size, total);
  const failures = [...outcomes.values()].filter((o): o is Error => o instanceof Error);
  for (const err of failures) assert.ok(err instanceof RuntimeError, `untyped failure: ${err.message}`);
  for (const [id, o] of outcomes) if (!(o instanceof Error)) assert.equal(o.executions, 1, `${id}'s reply`);

  const executions = await ref.ask({ type: "executions" }, { timeoutMs: 8000 });
  const twice = Object.entries(executions).filter(([, n]) => n > 1);
  assert.deepEqual(twice, [], "handlers that ran more than once for one id");
  const { duplicates } = await ref.ask({ type: "stats" });
  t.diagnostic(`${completedBeforeRestart} asks done before the restart; ${duplicates} re-sent asks answered by dedupe`);

  assert.ok(completedBeforeRestart < total, "the restart happened while asks were streaming");
  assert.ok(events.includes("disconnect") && events.includes("reconnect"), `events: ${events.join(",")}`);
  // The transport re-sends in-flight asks after the reconnect, so none should be lost to it.
  assert.equal(failures.length, 0, `failed asks: ${failures.map((e) => `${e.name}: ${e.message}`).slice(0, 5).join("; ")}`);
});
