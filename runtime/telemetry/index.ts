export { injectTraceContext, extractTraceContext, withMessageSpan, withSpan, tracer } from "./propagation.ts";
export { setupTelemetry, type TelemetryHandle, type TelemetryOptions } from "./setup.ts";
export { JsonlSpanExporter, type SpanRecord } from "./jsonl-exporter.ts";
