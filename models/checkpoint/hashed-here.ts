// Shard files whose sha256 this process knows first-hand: it wrote them (hashing the bytes as
// they went out) or read and hashed them whole; with each, the file's identity at that time.
// `verify: "local"` (commitCheckpoint, Checkpoint.open) trusts such a file without reading it
// again while it is still the same file, unchanged: same device and inode (not replaced),
// same size, same mtime and ctime to the nanosecond (not written to since). Reading it again
// would mostly read this process's own page cache back; files with no entry here (written
// by other processes or hosts, or before this process started) are re-hashed in full.
//
// Another process on the same host can be told what this one knows (knownUnder, then vouch
// there): the rank processes of a resumed job then take the coordinator's verification instead
// of each hashing every shard again. A record counts only while the file's identity is as
// recorded (device, inode, size, times), so a file replaced or written since is hashed as before.
//
// Limit: an in-place overwrite of the same size within the file system's timestamp tick
// (a few ms on Linux) keeps mtime and ctime, as would a replacement in that tick that reuses
// the inode number; `verify: "full"` catches those too.
import { stat } from "node:fs/promises";
import { join, relative, resolve, sep } from "node:path";
import { sha256Files } from "./hash-files.ts";

interface Known {
  sha256: string;
  identity: string;
}

const known = new Map<string, Known>();

async function identityOf(path: string): Promise<string | undefined> {
  const st = await stat(path, { bigint: true }).catch(() => undefined);
  if (!st?.isFile()) return undefined;
  return [st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join(":");
}

/** Records that `path`, as it is now, hashes to `sha256` (this process wrote it whole, or hashed it whole). */
export async function rememberHash(path: string, sha256: string): Promise<void> {
  const identity = await identityOf(path);
  if (identity) known.set(resolve(path), { sha256, identity });
}

/** How shard files are checked against their recorded sha256 (OpenOptions, CommitOptions). */
export type VerifyMode = "full" | "local" | "size";

/**
 * The files whose bytes do not hash to their recorded sha256, in the order given: "full" reads
 * and hashes every one, "local" every one this process does not know unchanged, "size" none.
 */
export async function failingHashes<T extends { path: string; bytes: number; sha256: string }>(files: readonly T[], verify: VerifyMode): Promise<T[]> {
  if (verify === "size") return [];
  const toHash: T[] = [];
  for (const f of files) if (verify === "full" || !(await knownUnchanged(f.path, f.sha256))) toHash.push(f);
  const hashes = await hashAndRemember(toHash);
  return toHash.filter((f, i) => hashes[i] !== f.sha256);
}

/** Each file's sha256, read whole (several at once); remembered for each file that did not change while it was read. */
async function hashAndRemember(files: readonly { path: string; bytes: number }[]): Promise<string[]> {
  const before = await Promise.all(files.map((f) => identityOf(f.path)));
  const hashes = await sha256Files(files);
  const after = await Promise.all(files.map((f) => identityOf(f.path)));
  files.forEach((f, i) => {
    if (before[i] !== undefined && before[i] === after[i]) known.set(resolve(f.path), { sha256: hashes[i]!, identity: before[i]! });
  });
  return hashes;
}

/** True when this process knows `path` hashes to `sha256` and the file is unchanged since. */
async function knownUnchanged(path: string, sha256: string): Promise<boolean> {
  const k = known.get(resolve(path));
  return k !== undefined && k.sha256 === sha256 && k.identity === (await identityOf(path));
}

/** What this process knows of a file under a folder, to pass to another process (vouch). */
export interface HashRecord {
  /** The path relative to the folder. */
  file: string;
  sha256: string;
  identity: string;
}

/** The records of the files under `dir` that this process knows, relative to `dir`. */
export function knownUnder(dir: string): HashRecord[] {
  const root = resolve(dir);
  const prefix = root + sep;
  return [...known]
    .filter(([p]) => p.startsWith(prefix))
    .map(([p, k]) => ({ file: relative(root, p), sha256: k.sha256, identity: k.identity }));
}

/** Takes another process's records (knownUnder) of files under `dir` as this process's own. */
export function vouch(dir: string, records: readonly HashRecord[]): void {
  const root = resolve(dir);
  for (const r of records) {
    const p = resolve(root, r.file);
    if (!p.startsWith(root + sep)) throw new Error(`checkpoint: a hash record names ${r.file}, outside ${dir}`);
    known.set(p, { sha256: r.sha256, identity: r.identity });
  }
}

/** The records of files under `from` now hold for the same files under `to` (a folder renamed: its files keep their identity). */
export function moveKnown(from: string, to: string): void {
  const prefix = resolve(from) + sep;
  for (const [p, k] of [...known]) {
    if (!p.startsWith(prefix)) continue;
    known.delete(p);
    known.set(join(resolve(to), relative(resolve(from), p)), k);
  }
}

/** Drops the records of files under `dir` (a folder removed). */
export function forgetUnder(dir: string): void {
  const prefix = resolve(dir) + sep;
  for (const p of known.keys()) if (p.startsWith(prefix)) known.delete(p);
}
