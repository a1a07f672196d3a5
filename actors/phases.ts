// Spans for the phases of a step (data wait, forward and backward, optimizer, eval,
// checkpoint), children of whatever span is active: the step's span on the coordinator, the
// message's span on a rank, which itself continues the coordinator's trace.
import { context, trace, SpanStatusCode } from "@opentelemetry/api";
import { tracer } from "../runtime/index.ts";

export async function withPhase<T>(name: string, attributes: Record<string, string | number | boolean>, fn: () => Promise<T> | T): Promise<T> {
  const span = tracer().startSpan(name, { attributes });
  try {
    return await context.with(trace.setSpan(context.active(), span), fn);
  } catch (err) {
    span.recordException(err as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
    throw err;
  } finally {
    span.end();
  }
}
