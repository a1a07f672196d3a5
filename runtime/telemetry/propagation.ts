// Trace context across process boundaries: W3C `traceparent` / `tracestate` carried in
// message headers. Works with whatever tracer provider is registered (none: no-op).
import { context, propagation, trace, SpanKind, SpanStatusCode, type Context, type Span } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import type { Headers } from "../transport/types.ts";

const w3c = new W3CTraceContextPropagator();
propagation.setGlobalPropagator(w3c);

export const tracer = () => trace.getTracer("tessera");

/** Writes the active (or given) context into `headers` and returns them. */
export function injectTraceContext(headers: Headers, ctx: Context = context.active()): Headers {
  w3c.inject(ctx, headers, {
    set: (carrier, key, value) => {
      (carrier as Headers)[key] = value;
    },
  });
  return headers;
}

/** The context named by `headers` (or the active one when they carry none). */
export function extractTraceContext(headers: Headers): Context {
  return w3c.extract(context.active(), headers, {
    get: (carrier, key) => (carrier as Headers)[key],
    keys: (carrier) => Object.keys(carrier as Headers),
  });
}

/**
 * Runs `fn` inside a span that is the child of the context carried in `headers`.
 * Used for every message an actor handles. The span ends when `fn` settles; a throw marks it.
 */
export async function withMessageSpan<T>(
  name: string,
  headers: Headers,
  attributes: Record<string, string | number | boolean>,
  fn: (span: Span) => Promise<T> | T,
): Promise<T> {
  return withSpan(name, attributes, fn, { parent: extractTraceContext(headers), kind: SpanKind.CONSUMER });
}

/**
 * Runs `fn` inside a new span, a child of `parent` (default: the active context), ended when
 * `fn` settles; a throw is recorded on it and rethrown.
 */
export async function withSpan<T>(
  name: string,
  attributes: Record<string, string | number | boolean>,
  fn: (span: Span) => Promise<T> | T,
  opts: { parent?: Context; kind?: SpanKind } = {},
): Promise<T> {
  const parent = opts.parent ?? context.active();
  const span = tracer().startSpan(name, { kind: opts.kind ?? SpanKind.INTERNAL, attributes }, parent);
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (err) {
    span.recordException(err as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
    throw err;
  } finally {
    span.end();
  }
}
