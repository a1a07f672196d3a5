// The trainer's actors with every message over a real NATS server (one process): batches,
// commands, replies and errors survive the codec and the schemas on the wire, so that
// spreading the actors over processes is a change of transport, not of protocol.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig, NatsTransport } from "../../runtime/index.ts";
import { startTraining, type TrainRecord } from "../../actors/index.ts";
import { startNatsServer } from "../helpers/nats-server.ts";
import { SMALL, tempDir } from "./train-testkit.ts";

const root = join(import.meta.dirname, "..", "..");

test("three steps and an eval of a small tiny.yaml with every actor message over NATS", async () => {
  const server = await startNatsServer();
  const transport = await NatsTransport.connect({ servers: server.url, job: "train-nats" });
  try {
    const out = tempDir("tessera-nats-train-");
    const cfg = loadConfig(join(root, "configs/tiny.yaml"), {
      overrides: [
        `output_dir=${JSON.stringify(out)}`,
        ...SMALL,
        "trainer.max_steps=3",
        "trainer.eval_every=3",
        "data.eval.max_batches=1",
        "optimizer.schedule.warmup_steps=1",
      ],
    });
    let err = "";
    const run = await startTraining(cfg, { transport, stderr: { write: (t: string) => void (err += t), isTTY: false } });
    const summary = await run.done;
    assert.equal(summary.state, "done", `${summary.reason}\n${err}`);
    const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as TrainRecord & { eval_loss?: number });
    assert.deepEqual(records.map((r) => [r.kind, r.step]), [["train", 1], ["train", 2], ["train", 3], ["eval", 3]]);
    assert.ok(records.every((r) => Number.isFinite(r.kind === "train" ? r.loss : r.eval_loss)));
    assert.match(err, /checkpoint at step 3: .*step-000003/);
  } finally {
    await transport.close();
    await server.stop();
  }
});
