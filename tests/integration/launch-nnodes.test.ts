// `tessera launch` over two nodes, on one machine: two launcher processes and one NATS
// server (started by the test, as a cluster would be). Node 1's launcher starts first and
// waits for node 0; node 0 hosts the coordinator and the data; one rank per node under
// fsdp=2. Both exit 0 and the loss curve is the single-rank one on the same global batches.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startNatsServer } from "../helpers/nats-server.ts";
import { ActorSystem, NatsTransport } from "../../runtime/index.ts";
import { ADDRESS, JobProtocol } from "../../actors/index.ts";
import { assertSameCurve, cli, MULTI, referenceRun, sets, TINY, trainRecords } from "./train-multirank-kit.ts";
import { tempDir } from "./train-testkit.ts";

const STEPS = ["trainer.max_steps=3", "checkpoint.every=2", "mesh.fsdp=2"];

test("tessera launch --nnodes 2: node 1 waits for node 0, both run their rank, both exit 0", async () => {
  const server = await startNatsServer();
  try {
    const out = tempDir("tessera-launch-");
    const node = (r: number) =>
      cli(["launch", TINY, "--nnodes", "2", "--node-rank", String(r), "--nproc-per-node", "1", "--nats", server.url, "-o", out, ...sets([...MULTI, ...STEPS])]);
    const n1 = node(1);
    // Most likely node 1 asks to join before node 0 serves the job; either order must work.
    await new Promise((r) => setTimeout(r, 300));
    const n0 = node(0);
    const [r0, r1] = await Promise.all([n0.exit, n1.exit]);
    assert.equal(r0.code, 0, `node 0:\n${r0.stderr}\nnode 1:\n${r1.stderr}`);
    assert.equal(r1.code, 0, `node 1:\n${r1.stderr}`);
    assert.match(r0.stderr, /2 ranks on 2 nodes: mesh dp=1 fsdp=2 sp=1/);
    assert.match(r1.stderr, /node 1: joined the job/);
    assert.match(r0.stderr, /checkpoint at step 3: /);
    const want = await referenceRun(tempDir("tessera-launch-ref-"), ["trainer.max_steps=3", "checkpoint.every=0", "trainer.micro_batch_tokens=128"]);
    assertSameCurve(trainRecords(out), want, 1e-5);
  } finally {
    await server.stop();
  }
});

test("a second node 0 of the same job on one NATS server refuses to start", async () => {
  const server = await startNatsServer();
  const probe = await NatsTransport.connect({ servers: [server.url], job: "tiny", name: "probe" });
  const system = new ActorSystem({ transport: probe, name: "probe" });
  try {
    // The first node 0 of a 2-node job serves the job actor and waits for node 1 to join.
    const first = cli(["launch", TINY, "--nnodes", "2", "--node-rank", "0", "--nproc-per-node", "1", "--nats", server.url, "-o", tempDir("tessera-dup-a-"), ...sets([...MULTI, ...STEPS])]);
    const job = system.ref(ADDRESS.job, JobProtocol);
    for (let i = 0; ; i++) {
      const up = await job.ask({ type: "ping" }, { timeoutMs: 1000 }).then(() => true, () => false);
      if (up) break;
      assert.ok(i < 120, "the first launcher never served the job actor");
      await new Promise((r) => setTimeout(r, 250));
    }
    const second = cli(["launch", TINY, "--nnodes", "2", "--node-rank", "0", "--nproc-per-node", "1", "--nats", server.url, "-o", tempDir("tessera-dup-b-"), ...sets([...MULTI, ...STEPS])]);
    const r2 = await second.exit;
    assert.equal(r2.code, 1, r2.stderr);
    assert.match(r2.stderr, /job "tiny" is already running on nats:\/\/127\.0\.0\.1:\d+/);
    process.kill(first.pid, "SIGKILL");
    await first.exit;
  } finally {
    await system.shutdown();
    await probe.close();
    await server.stop();
  }
});
