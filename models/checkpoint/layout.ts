// Names in a checkpoint root: `step-000120/` (complete), `step-000120.tmp-<hex>/` (being
// written, or left by a crash), `latest` (the name of the newest complete one).
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { MANIFEST_FILE } from "./manifest.ts";

export const LATEST_FILE = "latest";
const COMPLETE = /^step-(\d+)$/;
const TMP = /^step-\d+\.tmp-[0-9a-z-]+$/;

export function stepDirName(step: number): string {
  if (!Number.isSafeInteger(step) || step < 0) throw new Error(`checkpoint: step must be a non-negative integer, got ${step}`);
  return `step-${String(step).padStart(6, "0")}`;
}

export function rankFileName(rank: number): string {
  return `rank-${String(rank).padStart(5, "0")}.safetensors`;
}

/** The complete name a temporary folder will be renamed to, or undefined when `name` is not one. */
export function completeNameOfTmp(name: string): string | undefined {
  return TMP.test(name) ? name.slice(0, name.indexOf(".tmp-")) : undefined;
}

/** A save's temporary folder, or the temporary file of a `latest` update (atomicWrite's naming). */
export function isTmpName(name: string): boolean {
  return TMP.test(name) || name.startsWith(`.${LATEST_FILE}.tmp-`);
}

export interface CheckpointListing {
  name: string;
  path: string;
  step: number;
}

/** Folders with a manifest under their complete name, oldest step first. */
export async function listComplete(root: string): Promise<CheckpointListing[]> {
  const names = await readdir(root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [] as string[];
    throw err;
  });
  const out: CheckpointListing[] = [];
  for (const name of names) {
    const m = COMPLETE.exec(name);
    if (!m) continue;
    const ok = await stat(join(root, name, MANIFEST_FILE)).then(
      (s) => s.isFile(),
      () => false,
    );
    if (ok) out.push({ name, path: join(root, name), step: Number(m[1]) });
  }
  return out.sort((a, b) => a.step - b.step || (a.name < b.name ? -1 : 1));
}
