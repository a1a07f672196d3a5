// The public face of runtime/: the actor system, transports, codec, config, telemetry.
export * from "./errors.ts";
export { encode, decode } from "./codec.ts";
export * from "./transport/index.ts";
export * from "./actors/index.ts";
export * from "./telemetry/index.ts";
export * from "./config/index.ts";
export { main as runCli, commands as runtimeCommands, UsageError, type ArgSpec, type Command, type Io, type OptionSpec, type ParsedArgs } from "./cli/index.ts";
