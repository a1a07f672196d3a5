export { injectTraceContext, extractTraceContext, withMessageSpan, tracer } from "./propagation.ts";
