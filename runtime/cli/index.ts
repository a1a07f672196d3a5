// The public face of runtime/cli: the dispatcher, the runtime's own commands, and what a
// command is, so that a room that may import everything (actors/) can assemble the full
// command table and run it.
export { main } from "./main.ts";
export { commands } from "./commands.ts";
export { UsageError, type ArgSpec, type Command, type Io, type OptionSpec, type ParsedArgs } from "./command.ts";
