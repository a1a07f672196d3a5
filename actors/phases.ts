// Spans for the phases of a step (data wait, forward and backward, optimizer, eval,
// checkpoint), children of whatever span is active: the step's span on the coordinator, the
// message's span on a rank, which itself continues the coordinator's trace.
import { withSpan } from "../runtime/index.ts";

export function withPhase<T>(name: string, attributes: Record<string, string | number | boolean>, fn: () => Promise<T> | T): Promise<T> {
  return withSpan(name, attributes, () => fn());
}
