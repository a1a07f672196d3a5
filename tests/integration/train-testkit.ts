// Shared by the trainer's tests: temporary output folders removed when the test file ends
// (runs write checkpoints of tens of MB), and the overrides that shrink tiny.yaml further.
import { after } from "node:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];
after(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** One layer of 32 with 64-token packs: a step in a fraction of tiny.yaml's time (the 151,669-token vocabulary stays). */
export const SMALL = [
  "model.config.hidden_size=32",
  "model.config.num_hidden_layers=1",
  "model.config.intermediate_size=64",
  "data.packing_length=64",
  "data.shuffle_window=64",
];
