// A tiny run with a Prometheus endpoint, scraped after the run as Prometheus would: the
// trainer's gauges hold the last step's figures, the counter the run's tokens, and
// metrics.jsonl's records carry MFU (a peak is configured) and memory.
import { test } from "node:test";
import assert from "node:assert/strict";
import { get } from "node:http";
import { join } from "node:path";
import { loadConfig, setupTelemetry } from "../../runtime/index.ts";
import { startTraining } from "../../actors/index.ts";
import { trainRecords } from "./train-multirank-kit.ts";
import { SMALL, tempDir } from "./train-testkit.ts";

const root = join(import.meta.dirname, "..", "..");

function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get({ host: "127.0.0.1", port, path: "/metrics", timeout: 10_000, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve(body));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("scrape timed out")));
    req.on("error", reject);
  });
}

const value = (body: string, series: string): number => {
  const line = body.split("\n").find((l) => l.startsWith(`${series} `));
  assert.ok(line, `${series} in\n${body}`);
  return Number(line.slice(series.length + 1));
};

test("three steps with prometheus_port 0: the endpoint shows the last step's loss, the run's tokens, MFU and memory", async () => {
  const out = tempDir("tessera-train-metrics-");
  const cfg = loadConfig(join(root, "configs/tiny.yaml"), {
    overrides: [`output_dir=${JSON.stringify(out)}`, ...SMALL, "trainer.max_steps=3", "optimizer.schedule.warmup_steps=1", "trainer.eval_every=0", "telemetry.prometheus_port=0", "telemetry.peak_tflops=0.5"],
  });
  const tel = await setupTelemetry(cfg.telemetry);
  try {
    let err = "";
    const run = await startTraining(cfg, { stderr: { write: (t: string) => void (err += t), isTTY: false } });
    const summary = await run.done;
    assert.equal(summary.state, "done", `${summary.reason}\n${err}`);

    const records = trainRecords(out);
    assert.deepEqual(records.map((r) => r.step), [1, 2, 3]);
    for (const r of records) {
      assert.ok(typeof r.mfu === "number" && r.mfu > 0 && r.mfu < 1, `step ${r.step}: mfu ${r.mfu}`);
      assert.equal(r.memory.live_bytes, r.live_bytes);
      assert.ok(r.memory.live_bytes > 0);
      assert.equal(r.memory.cuda, null, "ranks run on cpu");
    }
    const last = records.at(-1)!;
    const body = await scrape(tel.prometheusPort!);
    const job = `{job="${cfg.job}"}`;
    assert.equal(value(body, `tessera_train_loss${job}`), last.loss);
    assert.equal(value(body, `tessera_train_step${job}`), 3);
    assert.equal(value(body, `tessera_train_lr${job}`), last.lr);
    assert.equal(value(body, `tessera_train_mfu${job}`), last.mfu);
    assert.equal(value(body, `tessera_train_tokens_total${job}`), summary.tokens);
    assert.equal(value(body, `tessera_train_step_seconds_count${job}`), 3);
    assert.equal(value(body, `tessera_memory_live_tensor_bytes${job}`), last.memory.live_bytes);
  } finally {
    await tel.shutdown();
  }
});
