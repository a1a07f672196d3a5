// Which checkpoint a job starts from (`checkpoint.resume`): auto, never, or a path.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Checkpoint, resolveCheckpointDir, type OpenOptions } from "./read.ts";
import { LATEST_FILE, listComplete } from "./layout.ts";

/**
 * The checkpoint folder to resume from, or undefined for a fresh start.
 * - `never`: undefined.
 * - `auto`: the newest complete checkpoint under `root` that opens cleanly (manifest and
 *   shards verified): the one `latest` names first (after a resume from an older checkpoint,
 *   newer steps of the abandoned run may lie beside it), then by step, newest first. One that
 *   fails to open (a disk that lost a file) is passed over for the next; none: undefined.
 * - anything else: a checkpoint folder or a root with `latest`; it must open cleanly.
 */
export interface ResumeOptions extends OpenOptions {
  /** Told of each checkpoint that `auto` passes over, and why (log it: a skipped checkpoint is news). */
  onSkip?: (dir: string, err: Error) => void;
}

export async function resolveResume(root: string, resume: string, opts: ResumeOptions = {}): Promise<string | undefined> {
  if (resume === "never") return undefined;
  if (resume !== "auto") {
    const dir = await resolveCheckpointDir(resume);
    await (await Checkpoint.open(dir, opts)).close();
    return dir;
  }
  const complete = (await listComplete(root)).reverse();
  const latest = await readFile(join(root, LATEST_FILE), "utf8").then(
    (t) => t.trim(),
    () => undefined,
  );
  const order = [...complete.filter((c) => c.name === latest), ...complete.filter((c) => c.name !== latest)];
  for (const c of order) {
    const ok = await Checkpoint.open(c.path, opts).then(
      async (ck) => {
        await ck.close();
        return true;
      },
      (err: Error) => {
        opts.onSkip?.(c.path, err);
        return false;
      },
    );
    if (ok) return c.path;
  }
  return undefined;
}
