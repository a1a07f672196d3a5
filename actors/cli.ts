// The full `tessera` command table: runtime's commands (config validate, ...) and those
// that need the other rooms (train, launch, generate, data preview, export). runtime/ may import
// none of them, so it is put together here, where everything may be imported.
import { runtimeCommands, type Command } from "../runtime/index.ts";
import { train } from "./commands/train.ts";
import { launchCommand } from "./commands/launch.ts";
import { generateCommand } from "./commands/generate.ts";
import { dataPreview } from "./commands/data-preview.ts";
import { exportCommand } from "./commands/export.ts";

export const commands: readonly Command[] = [...runtimeCommands, train, launchCommand, generateCommand, dataPreview, exportCommand];
