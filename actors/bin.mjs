#!/usr/bin/env node
// The `tessera` command. Registers tsx so the TypeScript sources run as they are.
import { register } from "tsx/esm/api";

register();
const { runCli } = await import("../runtime/index.ts");
const { commands } = await import("./cli.ts");
process.exitCode = await runCli(process.argv.slice(2), undefined, commands);
