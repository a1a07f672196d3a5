import { test } from "node:test";
import assert from "node:assert/strict";
import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { z } from "zod";
import { ActorSystem, defineActor, defineProtocol } from "../../runtime/actors/index.ts";
import { InProcTransport } from "../../runtime/transport/inproc.ts";
import { tracer } from "../../runtime/telemetry/index.ts";

const exporter = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));

const Leaf = defineProtocol("leaf", { ping: { msg: z.object({}), reply: z.literal("pong") } });
const Middle = defineProtocol("middle", { relay: { msg: z.object({}), reply: z.literal("pong") } });

test("a caller's span is the parent of the handler's span, and of the spans of asks the handler makes", async (t) => {
  const transport = new InProcTransport();
  const system = new ActorSystem({ transport, name: "caller", log: () => {} });
  t.after(async () => {
    await system.shutdown();
    await transport.close();
  });
  await system.spawn("leaf", defineActor(Leaf, () => ({ ping: () => "pong" as const })));
  await system.spawn(
    "middle",
    defineActor(Middle, (ctx) => {
      const leaf = ctx.ref("leaf", Leaf);
      return { relay: () => leaf.ask({ type: "ping" }) };
    }),
  );
  const middle = system.ref("middle", Middle);

  const root = tracer().startSpan("caller step");
  const answer = await context.with(trace.setSpan(context.active(), root), () => middle.ask({ type: "relay" }));
  root.end();
  assert.equal(answer, "pong");

  const spans = exporter.getFinishedSpans();
  const byName = (n: string) => {
    const s = spans.find((x) => x.name === n);
    assert.ok(s, `no span "${n}" among ${spans.map((x) => x.name).join(", ")}`);
    return s;
  };
  const relay = byName("actor middle relay");
  const ping = byName("actor leaf ping");
  const rootId = root.spanContext();
  assert.equal(relay.spanContext().traceId, rootId.traceId);
  assert.equal(relay.parentSpanContext?.spanId, rootId.spanId);
  assert.equal(ping.spanContext().traceId, rootId.traceId);
  assert.equal(ping.parentSpanContext?.spanId, relay.spanContext().spanId);
  assert.equal(ping.attributes["tessera.actor"], "leaf");
});
