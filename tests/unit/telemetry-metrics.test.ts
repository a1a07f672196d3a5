// The meter provider's Prometheus endpoint, scraped over HTTP as Prometheus would, and the
// trainer's per-step instruments and MFU arithmetic on top of it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { get } from "node:http";
import { createServer } from "node:net";
import { metrics } from "@opentelemetry/api";
import { setupTelemetry } from "../../runtime/telemetry/index.ts";
import type { TelemetrySection } from "../../runtime/config/index.ts";
import { StepMetrics, modelShape, peakTflops, stepFlops, type TrainRecord } from "../../actors/index.ts";

const settings = (over: Partial<TelemetrySection>): TelemetrySection => ({
  exporter: "none",
  otlp_endpoint: "http://127.0.0.1:1",
  service_name: "tessera-test",
  jsonl_path: "/nonexistent/traces.jsonl",
  ...over,
});

function scrape(port: number, path = "/metrics"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // A fresh connection each time: a pooled one could outlive the server and hide that it closed.
    const req = get({ host: "127.0.0.1", port, path, timeout: 10_000, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("scrape timed out")));
    req.on("error", reject);
  });
}

/** The sample value of `name` whose labels include every one of `labels` (Prometheus text format). */
function sample(body: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of body.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return undefined;
}

test("prometheus_port 0: a free port serves recorded instruments on GET /metrics; shutdown closes it", async () => {
  const tel = await setupTelemetry(settings({ prometheus_port: 0 }));
  const port = tel.prometheusPort;
  assert.ok(port !== undefined && port > 0, `port ${port}`);
  try {
    const meter = metrics.getMeter("probe");
    meter.createGauge("probe.gauge").record(2.5, { job: "j" });
    const c = meter.createCounter("probe.count");
    c.add(3, { job: "j" });
    c.add(4, { job: "j" });
    const { status, body } = await scrape(port);
    assert.equal(status, 200);
    assert.equal(sample(body, "probe_gauge", { job: "j" }), 2.5, body);
    assert.equal(sample(body, "probe_count_total", { job: "j" }), 7, body);
    assert.equal((await scrape(port, "/other")).status, 404);
  } finally {
    await tel.shutdown();
  }
  await assert.rejects(scrape(port), /ECONNREFUSED/);
  // The global provider is gone with the handle: instruments made now record nowhere.
  assert.equal(metrics.getMeterProvider().constructor.name, "NoopMeterProvider");
});

test("no prometheus_port: no endpoint and no meter provider", async () => {
  const tel = await setupTelemetry(settings({}));
  try {
    assert.equal(tel.prometheusPort, undefined);
    assert.equal(metrics.getMeterProvider().constructor.name, "NoopMeterProvider");
  } finally {
    await tel.shutdown();
  }
});

function record(over: Partial<TrainRecord>): TrainRecord {
  return {
    kind: "train",
    step: 1,
    loss: 3,
    lr: 1e-3,
    grad_norm: 0.5,
    skipped: false,
    clipped: false,
    tokens: 100,
    loss_tokens: 90,
    total_tokens: 100,
    tokens_per_s: 1000,
    step_s: 0.1,
    data_wait_s: 0.02,
    elapsed_s: 0.1,
    live_tensors: 5,
    live_bytes: 4096,
    mfu: 0.25,
    memory: { live_bytes: 4096, cuda: null },
    ...over,
  };
}

test("StepMetrics: per-step instruments under their Prometheus names with the job label", async () => {
  const tel = await setupTelemetry(settings({ prometheus_port: 0 }));
  try {
    const sm = new StepMetrics({ job: "run-a", model: {}, peakTflops: null, devices: 1 });
    sm.record(record({}));
    sm.record(
      record({
        step: 2,
        loss: 2.75,
        grad_norm: null,
        skipped: true,
        tokens: 60,
        step_s: 3,
        mfu: null,
        memory: { live_bytes: 8192, cuda: { allocated: 10, reserved: 20, peak: 15 } },
      }),
    );
    const { body } = await scrape(tel.prometheusPort!);
    const job = { job: "run-a" };
    assert.equal(sample(body, "tessera_train_step", job), 2, body);
    assert.equal(sample(body, "tessera_train_loss", job), 2.75);
    assert.equal(sample(body, "tessera_train_lr", job), 1e-3);
    assert.equal(sample(body, "tessera_train_grad_norm", job), 0.5, "a skipped step's null norm leaves the last value");
    assert.equal(sample(body, "tessera_train_mfu", job), 0.25);
    assert.equal(sample(body, "tessera_train_tokens_total", job), 160);
    assert.equal(sample(body, "tessera_train_skipped_steps_total", job), 1);
    assert.equal(sample(body, "tessera_train_step_seconds_count", job), 2);
    assert.equal(sample(body, "tessera_train_step_seconds_sum", job), 3.1);
    assert.equal(sample(body, "tessera_train_step_seconds_bucket", { ...job, le: "0.1" }), 1);
    assert.equal(sample(body, "tessera_train_data_wait_seconds_count", job), 2);
    assert.equal(sample(body, "tessera_memory_live_tensor_bytes", job), 8192);
    assert.equal(sample(body, "tessera_memory_cuda_bytes", { ...job, state: "reserved" }), 20);
    assert.equal(sample(body, "tessera_memory_cuda_bytes", { ...job, state: "peak" }), 15);
  } finally {
    await tel.shutdown();
  }
});

test("MFU arithmetic: 6N per token plus 12 * layers * width per attended pair, over the peak of every device", () => {
  // Llama-like with head_dim set: attention width is heads * head_dim = 8 * 64 = 512, not hidden_size.
  const shape = modelShape({ num_hidden_layers: 4, hidden_size: 256, num_attention_heads: 8, head_dim: 64 });
  assert.deepEqual(shape, { layers: 4, attentionWidth: 512 });
  assert.deepEqual(modelShape({ n_layer: 2, n_embd: 128, n_head: 4 }), { layers: 2, attentionWidth: 128 });
  assert.equal(modelShape({ model_type: "llama" }), null);
  // Two packed sequences of 3 and 5 tokens: 9 + 25 attended pairs; 1,000 parameters.
  assert.equal(stepFlops(shape!, 1000, 8, 34), 6 * 1000 * 8 + 12 * 4 * 512 * 34);
  const sm = new StepMetrics({ job: "j", model: { num_hidden_layers: 4, hidden_size: 256, num_attention_heads: 8, head_dim: 64 }, peakTflops: 1e-6, devices: 2 });
  // 883,584 FLOPs in 0.5 s on two devices of 1 MFLOP/s each.
  assert.ok(Math.abs(sm.mfu(1000, 8, 34, 0.5)! - 883_584 / 0.5 / 2e6) < 1e-12);
  assert.equal(new StepMetrics({ job: "j", model: {}, peakTflops: 989, devices: 1 }).mfu(1000, 8, 34, 0.5), null);
  assert.equal(new StepMetrics({ job: "j", model: { n_layer: 1, n_embd: 8 }, peakTflops: null, devices: 1 }).mfu(1000, 8, 34, 0.5), null);

  const tel = (peak_tflops?: number) => settings(peak_tflops === undefined ? {} : { peak_tflops });
  assert.equal(peakTflops({ device: "cuda", telemetry: tel() }), 989);
  assert.equal(peakTflops({ device: "cpu", telemetry: tel() }), null);
  assert.equal(peakTflops({ device: "cpu", telemetry: tel(1.5) }), 1.5);
});

test("a prometheus_port in use fails the setup and leaves nothing registered", async () => {
  const first = await setupTelemetry(settings({ prometheus_port: 0 }));
  const taken = first.prometheusPort!;
  await first.shutdown();
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(taken, resolve));
  try {
    await assert.rejects(setupTelemetry(settings({ prometheus_port: taken })), /EADDRINUSE/);
    const again = await setupTelemetry(settings({}));
    await again.shutdown();
  } finally {
    await new Promise((resolve) => holder.close(resolve));
  }
});
