// The command table. A new command is a file under commands/ and one line here.
import type { Command } from "./command.ts";
import { configValidate } from "./commands/config-validate.ts";

export const commands: readonly Command[] = [configValidate];
