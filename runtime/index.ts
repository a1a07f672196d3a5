// The public face of runtime/: the actor system, transports, codec, config, telemetry.
export * from "./errors.ts";
export { encode, decode } from "./codec.ts";
export type { Transport, Delivery, Reply, Served, Headers } from "./transport/types.ts";
export { H } from "./transport/types.ts";
export * from "./telemetry/index.ts";
export * from "./config/index.ts";
