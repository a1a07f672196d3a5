import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage } from "node:http";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { context, trace } from "@opentelemetry/api";
import {
  injectTraceContext,
  setupTelemetry,
  tracer,
  withMessageSpan,
  type SpanRecord,
} from "../../runtime/telemetry/index.ts";
import type { TelemetrySection } from "../../runtime/config/index.ts";

const settings = (over: Partial<TelemetrySection>): TelemetrySection => ({
  exporter: "none",
  otlp_endpoint: "http://127.0.0.1:1",
  service_name: "tessera-test",
  jsonl_path: join(mkdtempSync(join(tmpdir(), "tessera-tel-")), "traces.jsonl"),
  ...over,
});

test("jsonl exporter writes one record per span with correct parent ids, across a message hop", async () => {
  const cfg = settings({ exporter: "jsonl" });
  const path = join(mkdtempSync(join(tmpdir(), "tessera-tel-")), "nested", "rank-0.jsonl");
  const tel = await setupTelemetry(cfg, { serviceName: "tessera-rank", resourceAttributes: { "tessera.rank": 0 }, jsonlPath: path });
  try {
    await tracer().startActiveSpan("step", { attributes: { step: 3 } }, async (step) => {
      tracer().startActiveSpan("forward", (fwd) => fwd.end());
      // A message sent from inside the step and handled "elsewhere": its span is the step's child via headers.
      const headers = injectTraceContext({});
      await context.with(context.active(), () =>
        withMessageSpan("rank.handle", headers, { type: "Step" }, async () => {
          await new Promise((r) => setTimeout(r, 1));
          tracer().startSpan("inner").end(); // parented through the async context manager
        }),
      );
      await assert.rejects(withMessageSpan("rank.fail", headers, {}, () => Promise.reject(new Error("boom"))));
      step.end();
    });
  } finally {
    await tel.shutdown();
  }

  const records = readFileSync(path, "utf8")
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l) as SpanRecord);
  const by = new Map(records.map((r) => [r.name, r]));
  assert.deepEqual([...by.keys()].sort(), ["forward", "inner", "rank.fail", "rank.handle", "step"]);
  const step = by.get("step")!;
  assert.equal(step.parentSpanId, undefined);
  assert.equal(by.get("forward")!.parentSpanId, step.spanId);
  assert.equal(by.get("rank.handle")!.parentSpanId, step.spanId);
  assert.equal(by.get("inner")!.parentSpanId, by.get("rank.handle")!.spanId);
  for (const r of records) {
    assert.equal(r.traceId, step.traceId);
    assert.match(r.spanId, /^[0-9a-f]{16}$/);
    assert.ok(BigInt(r.endTimeUnixNano) >= BigInt(r.startTimeUnixNano));
    assert.equal(r.resource["service.name"], "tessera-rank");
    assert.equal(r.resource["tessera.rank"], 0);
  }
  assert.deepEqual(step.attributes, { step: 3 });
  assert.equal(by.get("rank.handle")!.kind, "CONSUMER");
  assert.deepEqual(by.get("rank.handle")!.status, { code: "UNSET" });
  assert.deepEqual(by.get("rank.fail")!.status, { code: "ERROR", message: "boom" });
  assert.equal(by.get("rank.fail")!.events[0]!.name, "exception");
  assert.ok(by.get("inner")!.durationMs >= 0);
  // Spans of this process are within a minute of now: the nanosecond strings are epoch times.
  assert.ok(Math.abs(Number(BigInt(step.startTimeUnixNano) / 1_000_000n) - Date.now()) < 60_000);
});

test("otlp exporter posts the spans to <endpoint>/v1/traces", async () => {
  const posts: { method: string; url: string; body: string }[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      posts.push({ method: req.method!, url: req.url!, body: Buffer.concat(chunks).toString("utf8") });
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  try {
    const tel = await setupTelemetry(settings({ exporter: "otlp", otlp_endpoint: `http://127.0.0.1:${port}/`, otlp_headers: { "x-probe": "1" } }));
    try {
      tracer().startSpan("otlp-probe-span", { attributes: { "tessera.step": 1 } }).end();
    } finally {
      await tel.shutdown();
    }
  } finally {
    server.close();
  }
  const traces = posts.filter((p) => p.method === "POST" && p.url === "/v1/traces");
  assert.equal(traces.length, 1, JSON.stringify(posts.map((p) => [p.method, p.url])));
  assert.ok(traces[0]!.body.includes("otlp-probe-span"), traces[0]!.body.slice(0, 500));
  assert.ok(traces[0]!.body.includes("tessera-test"), "resource carries the service name");
});

test("exporter none records nothing but still carries context; setup twice needs a shutdown between", async () => {
  const tel = await setupTelemetry(settings({ exporter: "none" }));
  try {
    const span = tracer().startSpan("x");
    assert.equal(span.isRecording(), false);
    span.end();
    // An incoming trace context stays active across awaits, so it is forwarded to further messages.
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    await withMessageSpan("m", { traceparent }, {}, async () => {
      await new Promise((r) => setImmediate(r));
      assert.equal(injectTraceContext({}).traceparent, traceparent);
    });
    await assert.rejects(setupTelemetry(settings({ exporter: "none" })), /already set up/);
  } finally {
    await tel.shutdown();
    await tel.shutdown();
  }
  const again = await setupTelemetry(settings({ exporter: "console" }));
  assert.equal(trace.getTracer("t").startSpan("y").isRecording(), true);
  await again.shutdown();
});
