// The actor system over the NATS transport: two systems on two connections (as two processes
// would be) talk through a real nats-server; errors, validation, dedupe and trace context
// survive the wire.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { z } from "zod";
import { ActorSystem, defineActor, defineProtocol } from "../../runtime/actors/index.ts";
import { NatsTransport, H } from "../../runtime/transport/index.ts";
import { decode } from "../../runtime/codec.ts";
import { HandlerError, InvalidMessageError, NoResponderError } from "../../runtime/errors.ts";
import { tracer } from "../../runtime/telemetry/index.ts";
import { startNatsServer, type NatsServer } from "../helpers/nats-server.ts";

const exporter = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));

// z.instanceof(Float32Array) would type the value Float32Array<ArrayBuffer>, which a
// Float32Array<ArrayBufferLike> (what `new Float32Array(...)` and the codec give) is not.
const f32 = z.custom<Float32Array>((v) => v instanceof Float32Array, "expected a Float32Array");

const Store = defineProtocol("store", {
  put: { msg: z.object({ key: z.string(), value: f32 }), reply: z.number() },
  get: { msg: z.object({ key: z.string() }), reply: f32.nullable() },
  fail: { msg: z.object({}) },
});

let nats: NatsServer;
let serverSide: NatsTransport;
let clientSide: NatsTransport;
let raw: NatsConnection;
let server: ActorSystem;
let client: ActorSystem;
let puts = 0;

before(async () => {
  nats = await startNatsServer();
  serverSide = await NatsTransport.connect({ servers: nats.url, job: "actors" });
  clientSide = await NatsTransport.connect({ servers: nats.url, job: "actors" });
  raw = await connect({ servers: nats.url });
  server = new ActorSystem({ transport: serverSide, name: "server", log: () => {} });
  client = new ActorSystem({ transport: clientSide, name: "client", log: () => {} });
  await server.spawn(
    "store",
    defineActor(Store, () => {
      const data = new Map<string, Float32Array>();
      return {
        put: (m) => {
          puts++;
          data.set(m.key, m.value);
          return data.size;
        },
        get: (m) => data.get(m.key) ?? null,
        fail: () => {
          throw new Error("store is read-only today");
        },
      };
    }),
  );
});

after(async () => {
  await raw.close();
  await client.shutdown();
  await server.shutdown();
  await clientSide.close();
  await serverSide.close();
  await nats.stop();
});

test("asks cross the wire with typed replies; retried ids run once", async () => {
  const store = client.ref("store", Store);
  const value = new Float32Array([1.5, -2, 3.25]);
  assert.equal(await store.ask({ type: "put", key: "w", value }, { id: "put-w" }), 1);
  // The retry (same id) is answered from memory: the handler does not run again.
  assert.equal(await store.ask({ type: "put", key: "w", value }, { id: "put-w" }), 1);
  assert.equal(puts, 1);
  const got = await store.ask({ type: "get", key: "w" });
  assert.ok(got instanceof Float32Array);
  assert.deepEqual(Array.from(got), [1.5, -2, 3.25]);
});

test("errors come back as their typed classes", async () => {
  const store = client.ref("store", Store);
  await assert.rejects(store.ask({ type: "fail" }), HandlerError);
  const bad = { type: "put", key: "w", value: [1, 2] } as unknown as { type: "put"; key: string; value: Float32Array };
  await assert.rejects(store.ask(bad), InvalidMessageError);
  await assert.rejects(client.ref("nobody", Store).ask({ type: "get", key: "x" }, { timeoutMs: 3_000 }), NoResponderError);
  assert.equal(await store.ask({ type: "get", key: "absent" }), null);
});

test("garbage bytes on the wire get a CodecError reply", async () => {
  const h = natsHeaders();
  h.set(H.id, "garbage");
  h.set(H.type, "put");
  const msg = await raw.request(serverSide.subjectFor("store"), new Uint8Array([0xc1, 0xc1]), { timeout: 3_000, headers: h });
  const reply = decode(msg.data) as { ok: boolean; error: { code: string } };
  assert.equal(reply.ok, false);
  assert.equal(reply.error.code, "CODEC");
  assert.ok(server.stats("store")!.invalid >= 1);
  assert.equal(await client.ref("store", Store).ask({ type: "get", key: "absent" }), null);
});

test("the caller's span is the parent of the handler's span on the other connection", async () => {
  exporter.reset();
  const root = tracer().startSpan("caller");
  await context.with(trace.setSpan(context.active(), root), () =>
    client.ref("store", Store).ask({ type: "get", key: "w" }),
  );
  root.end();
  const handled = exporter.getFinishedSpans().find((s) => s.name === "actor store get");
  assert.ok(handled, "no handler span");
  assert.equal(handled.spanContext().traceId, root.spanContext().traceId);
  assert.equal(handled.parentSpanContext?.spanId, root.spanContext().spanId);
});
