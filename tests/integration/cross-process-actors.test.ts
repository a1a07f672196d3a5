// Actors in two OS processes talking over a real nats-server: ordered tells, asks both ways,
// garbage and schema-invalid input, and trace context across the process boundary.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { context, trace } from "@opentelemetry/api";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { ActorSystem, defineActor, type ReplyEnvelope } from "../../runtime/actors/index.ts";
import { decode, encode } from "../../runtime/codec.ts";
import { CodecError, InvalidMessageError } from "../../runtime/errors.ts";
import { tracer } from "../../runtime/telemetry/index.ts";
import { NatsTransport } from "../../runtime/transport/index.ts";
import { startNatsServer, type NatsServer } from "../helpers/nats-server.ts";
import { Parent, Peer } from "./fixtures/peer-protocol.ts";
import { spawnPeer, type PeerProcess } from "./fixtures/spawn-peer.ts";
import { installTracing } from "./fixtures/tracing.ts";

const job = "xproc";
const finishedSpans = installTracing();
let server: NatsServer;
let peer: PeerProcess;
let transport: NatsTransport;
let system: ActorSystem;
let nc: NatsConnection;

before(async () => {
  server = await startNatsServer();
  peer = await spawnPeer(server.url, job);
  transport = await NatsTransport.connect({ servers: server.url, job, name: "test" });
  system = new ActorSystem({ transport, name: "test-process", log: () => {} });
  await system.spawn("parent.main", defineActor(Parent, () => ({ inc: ({ n }) => n + 1 })));
  nc = await connect({ servers: server.url });
});
after(async () => {
  await peer?.stop();
  await nc?.close();
  await system?.shutdown();
  await transport?.close();
  await server?.stop("SIGKILL");
});

test("10 000 tells to an actor in another process arrive in order; asks go both ways", async () => {
  const ref = system.ref("peer.main", Peer);
  const n = 10_000;
  for (let seq = 0; seq < n; seq++) await ref.tell({ type: "push", seq });
  // The ask follows the tells from the same sender, so it is handled after all of them.
  assert.deepEqual(await ref.ask({ type: "seen" }, { timeoutMs: 10_000 }), { count: n, inOrder: true, last: n - 1 });
  // The child's actor asks this process's actor and hands the answer back.
  assert.equal(await ref.ask({ type: "callBack", address: "parent.main", n: 41 }), 42);
});

test("garbage bytes and schema-invalid messages get error replies and the actor serves on", async () => {
  const ref = system.ref("peer.main", Peer);
  const subject = transport.subjectFor("peer.main");
  const before = await ref.ask({ type: "seen" });
  const statsBefore = await ref.ask({ type: "stats" });

  const raw = await nc.request(subject, new Uint8Array([0xc1, 0xc1, 0xc1]), { timeout: 5000 });
  const garbageReply = decode(raw.data) as ReplyEnvelope;
  assert.equal(garbageReply.ok, false);
  if (!garbageReply.ok) assert.equal(garbageReply.error.code, new CodecError("").code);
  // Told garbage (no reply subject): dropped and counted, nothing to answer.
  nc.publish(subject, new Uint8Array([0xc1]));

  const wrongField = encode({ type: "push", seq: "not a number" });
  const wrongReply = decode((await nc.request(subject, wrongField, { timeout: 5000 })).data) as ReplyEnvelope;
  assert.equal(wrongReply.ok, false);
  if (!wrongReply.ok) assert.equal(wrongReply.error.code, "INVALID_MESSAGE");

  const loose = ref as unknown as { ask(m: unknown, o?: unknown): Promise<unknown> };
  await assert.rejects(loose.ask({ type: "work", n: "seven" }), InvalidMessageError);
  await assert.rejects(loose.ask({ type: "noSuchType" }), /unknown message type/);

  assert.deepEqual(await ref.ask({ type: "seen" }), before, "nothing invalid reached a handler");
  const statsAfter = await ref.ask({ type: "stats" });
  // The raw garbage request, the told garbage, the bad field, the bad ask, the unknown type.
  assert.equal((statsAfter.invalid ?? 0) - (statsBefore.invalid ?? 0), 5);
  assert.deepEqual(await ref.ask({ type: "work", n: 7 }), { n: 7, executions: 1 });
});

test("a span started in this process is the parent of the handler's span in the other", async () => {
  const ref = system.ref("peer.main", Peer);
  const root = tracer().startSpan("test step");
  await context.with(trace.setSpan(context.active(), root), () => ref.ask({ type: "work", n: 1 }));
  root.end();
  const { traceId, spanId } = root.spanContext();

  const remote = await ref.ask({ type: "spans" });
  const handler = remote.find((s) => s.name === "actor peer.main work" && s.traceId === traceId);
  assert.ok(handler, `no handler span of trace ${traceId} among ${remote.map((s) => s.name).join(", ")}`);
  assert.equal(handler.parentSpanId, spanId);

  // And back: the child's callBack ask carries its handler's context to this process.
  const root2 = tracer().startSpan("test step 2");
  await context.with(trace.setSpan(context.active(), root2), () =>
    ref.ask({ type: "callBack", address: "parent.main", n: 1 }),
  );
  root2.end();
  const remote2 = await ref.ask({ type: "spans" });
  const callBack = remote2.find((s) => s.name === "actor peer.main callBack" && s.traceId === root2.spanContext().traceId);
  assert.ok(callBack);
  assert.equal(callBack.parentSpanId, root2.spanContext().spanId);
  const local = finishedSpans().find((s) => s.name === "actor parent.main inc" && s.traceId === root2.spanContext().traceId);
  assert.ok(local, "the parent's handler span joined the trace");
  assert.equal(local.parentSpanId, callBack.spanId);
});
