// Process-wide telemetry: registers the context manager (so trace context follows async
// code: without one, a message handler's span would not parent the spans it starts) and a
// tracer provider exporting to where the config says, and a meter provider when a Prometheus
// port is configured. Call once per process, early; call shutdown() before exit so the last
// spans are flushed. The SDK is loaded only here, so a process that never sets telemetry up
// does not pay for it.
import { hostname } from "node:os";
import { context, metrics, trace, type Attributes } from "@opentelemetry/api";
import type { SpanProcessor } from "@opentelemetry/sdk-trace-base";
import type { TelemetrySection } from "../config/index.ts";
import { JsonlSpanExporter } from "./jsonl-exporter.ts";
import { startMetrics, type MetricsHandle } from "./metrics.ts";

export interface TelemetryOptions {
  /** Overrides the config's service_name (e.g. "tessera-rank"). */
  serviceName?: string;
  /** Added to the resource of every span: rank, node, job. */
  resourceAttributes?: Attributes;
  /** Overrides the config's jsonl_path; give each process its own file. */
  jsonlPath?: string;
}

export interface TelemetryHandle {
  readonly exporter: TelemetrySection["exporter"];
  /** The port the Prometheus endpoint (GET /metrics) listens on; undefined when none is configured. */
  readonly prometheusPort: number | undefined;
  /** Exports every ended span now. */
  forceFlush(): Promise<void>;
  /** Flushes, stops exporting and unregisters the globals (a later setupTelemetry may register again). Idempotent. */
  shutdown(): Promise<void>;
}

type TelemetrySettings = Pick<TelemetrySection, "exporter" | "otlp_endpoint" | "otlp_headers" | "service_name" | "jsonl_path"> &
  Partial<Pick<TelemetrySection, "prometheus_port">>;

export async function setupTelemetry(cfg: TelemetrySettings, opts: TelemetryOptions = {}): Promise<TelemetryHandle> {
  const { AsyncLocalStorageContextManager } = await import("@opentelemetry/context-async-hooks");
  if (!context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())) {
    throw new Error("telemetry is already set up in this process (shut the previous handle down first)");
  }
  let processors: SpanProcessor[];
  try {
    processors = await spanProcessors(cfg, opts);
  } catch (err) {
    context.disable();
    throw err;
  }
  const { defaultResource, resourceFromAttributes } = await import("@opentelemetry/resources");
  const resource = defaultResource().merge(
    resourceFromAttributes({
      "service.name": opts.serviceName ?? cfg.service_name,
      "host.name": hostname(),
      "process.pid": process.pid,
      ...opts.resourceAttributes,
    }),
  );
  let provider: { forceFlush(): Promise<void>; shutdown(): Promise<void> } | undefined;
  if (processors.length) {
    const { BasicTracerProvider } = await import("@opentelemetry/sdk-trace-base");
    const p = new BasicTracerProvider({ resource, spanProcessors: processors });
    trace.setGlobalTracerProvider(p);
    provider = p;
  }
  let meters: MetricsHandle | undefined;
  if (cfg.prometheus_port !== undefined) {
    try {
      meters = await startMetrics(resource, cfg.prometheus_port);
    } catch (err) {
      await provider?.shutdown();
      trace.disable();
      context.disable();
      throw err;
    }
  }

  let closing: Promise<void> | undefined;
  return {
    exporter: cfg.exporter,
    prometheusPort: meters?.port,
    forceFlush: async () => {
      await Promise.all([provider?.forceFlush(), meters?.forceFlush()]);
    },
    shutdown: () =>
      (closing ??= (async () => {
        try {
          await Promise.all([provider?.shutdown(), meters?.shutdown()]);
        } finally {
          trace.disable();
          metrics.disable();
          context.disable();
        }
      })()),
  };
}

async function spanProcessors(cfg: TelemetrySettings, opts: TelemetryOptions): Promise<SpanProcessor[]> {
  const { BatchSpanProcessor, SimpleSpanProcessor, ConsoleSpanExporter } = await import("@opentelemetry/sdk-trace-base");
  switch (cfg.exporter) {
    case "none":
      return [];
    case "console":
      return [new SimpleSpanProcessor(new ConsoleSpanExporter())];
    case "jsonl": {
      // A local file takes large batches cheaply; a deep queue keeps bursts of message spans.
      return [new BatchSpanProcessor(new JsonlSpanExporter(opts.jsonlPath ?? cfg.jsonl_path), { maxQueueSize: 16_384, scheduledDelayMillis: 1000 })];
    }
    case "otlp": {
      const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
      const base = cfg.otlp_endpoint.replace(/\/+$/, "");
      const url = base.endsWith("/v1/traces") ? base : `${base}/v1/traces`;
      return [new BatchSpanProcessor(new OTLPTraceExporter({ url, headers: cfg.otlp_headers ?? {} }), { maxQueueSize: 8192 })];
    }
  }
}
