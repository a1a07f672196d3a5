// The process's meter provider and its Prometheus scrape endpoint. The exporter's own server
// cannot say which port it got, so it is told not to start one and is served from a plain
// node:http server here: port 0 then yields a free port the handle reports (tests scrape it).
// Instruments are taken from the global API (`metrics.getMeter`), registered here. Series carry
// no otel_scope_* labels: the metric names are prefixed (tessera_...) already.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { metrics } from "@opentelemetry/api";
import type { Resource } from "@opentelemetry/resources";

export interface MetricsHandle {
  readonly port: number;
  forceFlush(): Promise<void>;
  /** Stops the meter provider and closes the endpoint (open scrapes are cut off). */
  shutdown(): Promise<void>;
}

export async function startMetrics(resource: Resource, port: number): Promise<MetricsHandle> {
  const { MeterProvider } = await import("@opentelemetry/sdk-metrics");
  const { PrometheusExporter } = await import("@opentelemetry/exporter-prometheus");
  const exporter = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true });
  const server: Server = createServer((req, res) => {
    if (req.method === "GET" && req.url?.split("?")[0] === "/metrics") exporter.getMetricsRequestHandler(req, res);
    else res.writeHead(404).end("not found: the Prometheus endpoint is GET /metrics\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, () => {
      server.off("error", reject);
      resolve();
    });
  });
  // The exporter bundles its own sdk-metrics (2.12.0 beside our 2.12.1): the same reader
  // contract, but TypeScript sees two declarations of the class.
  const provider = new MeterProvider({ resource, readers: [exporter as never] });
  metrics.setGlobalMeterProvider(provider);
  return {
    port: (server.address() as AddressInfo).port,
    forceFlush: () => provider.forceFlush(),
    shutdown: async () => {
      try {
        await provider.shutdown();
      } finally {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
  };
}
