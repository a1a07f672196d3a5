// sha256 of several large files at once. One file's hash is sequential (1.5 GB/s on one core
// of a 2-core Xeon VM with SHA instructions), so the shards of a multi-rank checkpoint (the
// commit of other ranks' shards, a resume's verification) are hashed in worker threads, one
// file each, as many at once as there are spare cores. Small jobs stay on this thread: a
// worker takes about 0.15 s to start on that VM (tsx's loader registers in each).
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { sha256File } from "./durable.ts";

/** Below this many bytes in all, files are hashed here, one after another. */
const WORKERS_FROM_BYTES = 512 << 20;
const MAX_WORKERS = 8;

export interface HashFilesOptions {
  /** Worker threads at most; default: the spare cores, up to 8. */
  workers?: number;
  /** Use workers only from this many bytes in all (default 512 MiB). */
  workersFromBytes?: number;
}

/** The sha256 of each file, in the order given. */
export async function sha256Files(files: readonly { path: string; bytes: number }[], opts: HashFilesOptions = {}): Promise<string[]> {
  const total = files.reduce((a, f) => a + f.bytes, 0);
  const workers = Math.min(files.length, opts.workers ?? Math.min(MAX_WORKERS, availableParallelism() - 1));
  if (workers < 2 || total < (opts.workersFromBytes ?? WORKERS_FROM_BYTES)) {
    const out: string[] = [];
    for (const f of files) out.push(await sha256File(f.path));
    return out;
  }
  const out = new Array<string>(files.length);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < files.length; i = next++) out[i] = await inWorker(files[i]!.path);
  };
  await Promise.all(Array.from({ length: workers }, lane));
  return out;
}

function inWorker(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL("./hash-worker.mjs", import.meta.url), { workerData: { path } });
    let result: string | undefined;
    w.once("message", (m: string) => (result = m));
    w.once("error", (err) => reject(new Error(`checkpoint: hashing ${path}: ${err.message}`)));
    w.once("exit", (code) => (result !== undefined ? resolve(result) : reject(new Error(`checkpoint: the worker hashing ${path} exited (code ${code}) without a result`))));
  });
}
