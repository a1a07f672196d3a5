// The example NATS cluster in deploy/nats parses with the real server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

const dir = join(import.meta.dirname, "..", "..", "deploy", "nats");
const nodes = readdirSync(dir).filter((f) => /^node-\d+\.conf$/.test(f));

test("deploy/nats has three servers, and nats-server accepts each config", async () => {
  assert.deepEqual(nodes.sort(), ["node-1.conf", "node-2.conf", "node-3.conf"]);
  for (const f of nodes) {
    // nats-server -t exits 1 with the problem on stderr when a file is invalid.
    const { stderr } = await promisify(execFile)("nats-server", ["-t", "-c", join(dir, f)], { timeout: 30_000 });
    assert.match(stderr, /is valid/);
  }
});
