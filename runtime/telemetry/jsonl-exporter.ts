// A span exporter that appends one JSON object per span to a file: traces you can read with
// jq or load into pandas, no collector needed. Each process writes its own file (the launcher
// gives every rank its own path), so lines from several writers never interleave.
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { SpanKind, SpanStatusCode, type Attributes, type HrTime } from "@opentelemetry/api";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";

/** One line of the file. Times are Unix epoch nanoseconds as decimal strings (they exceed 2^53). */
export interface SpanRecord {
  name: string;
  kind: string;
  traceId: string;
  spanId: string;
  /** Absent on a root span. */
  parentSpanId?: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  durationMs: number;
  attributes: Attributes;
  status: { code: "UNSET" | "OK" | "ERROR"; message?: string };
  events: { name: string; timeUnixNano: string; attributes?: Attributes }[];
  /** Resource attributes (service, rank, host): a span stays attributable after files are merged. */
  resource: Attributes;
}

/** Appends, so a job resumed after a failure continues its trace file. */
export class JsonlSpanExporter implements SpanExporter {
  private fd: number | undefined;

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, "a");
  }

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    if (this.fd === undefined) {
      done({ code: ExportResultCode.FAILED, error: new Error(`span file ${this.path} is closed`) });
      return;
    }
    try {
      // Synchronous on purpose: a batch is small, and a span written is a span not lost if the process dies next.
      writeSync(this.fd, spans.map((s) => JSON.stringify(toRecord(s)) + "\n").join(""));
      done({ code: ExportResultCode.SUCCESS });
    } catch (err) {
      done({ code: ExportResultCode.FAILED, error: err as Error });
    }
  }

  async forceFlush(): Promise<void> {}

  async shutdown(): Promise<void> {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function toRecord(s: ReadableSpan): SpanRecord {
  const ctx = s.spanContext();
  const status: SpanRecord["status"] = { code: statusNames[s.status.code] };
  if (s.status.message) status.message = s.status.message;
  const r: SpanRecord = {
    name: s.name,
    kind: SpanKind[s.kind],
    traceId: ctx.traceId,
    spanId: ctx.spanId,
    startTimeUnixNano: nanos(s.startTime),
    endTimeUnixNano: nanos(s.endTime),
    durationMs: s.duration[0] * 1e3 + s.duration[1] / 1e6,
    attributes: s.attributes,
    status,
    events: s.events.map((e) => ({ name: e.name, timeUnixNano: nanos(e.time), ...(e.attributes ? { attributes: e.attributes } : {}) })),
    resource: s.resource.attributes,
  };
  if (s.parentSpanContext) r.parentSpanId = s.parentSpanContext.spanId;
  return r;
}

const statusNames = {
  [SpanStatusCode.UNSET]: "UNSET",
  [SpanStatusCode.OK]: "OK",
  [SpanStatusCode.ERROR]: "ERROR",
} as const;

function nanos([s, ns]: HrTime): string {
  return (BigInt(s) * 1_000_000_000n + BigInt(ns)).toString();
}
