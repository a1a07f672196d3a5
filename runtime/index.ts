// The public face of runtime/: the actor system, transports, codec, config, telemetry.
export * from "./errors.ts";
export { encode, decode } from "./codec.ts";
export * from "./transport/index.ts";
export * from "./actors/index.ts";
export * from "./telemetry/index.ts";
export * from "./config/index.ts";
