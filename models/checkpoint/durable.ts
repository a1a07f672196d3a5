// File-system steps whose order makes a checkpoint crash-safe: data reaches the disk (fsync)
// before the name that publishes it (rename), and the rename itself is made durable by
// syncing the folder that holds the name.
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";

/** Reads per call: large, so that the disk streams and the hash (not syscalls) sets the pace. */
const READ_BYTES = 16 << 20;

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The file's sha256 in one pass: the next chunk is being read while this one is hashed. */
export async function sha256File(path: string): Promise<string> {
  const fh = await open(path, "r");
  try {
    const h = createHash("sha256");
    const bufs = [Buffer.allocUnsafeSlow(READ_BYTES), Buffer.allocUnsafeSlow(READ_BYTES)];
    let pos = 0;
    let k = 0;
    let next = fh.read(bufs[0]!, 0, READ_BYTES, 0);
    for (;;) {
      const { bytesRead } = await next;
      if (bytesRead === 0) break;
      const cur = bufs[k]!;
      pos += bytesRead;
      k ^= 1;
      next = fh.read(bufs[k]!, 0, READ_BYTES, pos);
      h.update(cur.subarray(0, bytesRead));
    }
    return h.digest("hex");
  } finally {
    // Waits for a read still in flight (FileHandle.close does) if hashing threw.
    await fh.close();
  }
}
