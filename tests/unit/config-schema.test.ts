import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, natsServers, parseConfig, type JobConfigInput } from "../../runtime/config/index.ts";

const job = (mesh: unknown): JobConfigInput => ({
  job: "m",
  model: { config: { model_type: "llama" } },
  data: { sources: [{ path: "/d.jsonl", format: "jsonl" }], tokenizer: "/tok" },
  trainer: { max_steps: 1 },
  mesh: mesh as JobConfigInput["mesh"],
});

const messages = (fn: () => unknown): string[] => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
  assert.fail("expected a ConfigError");
};

test("mesh dims are integers >= 1 or -1", () => {
  assert.deepEqual(parseConfig(job({ dp: 2, fsdp: -1, sp: 4 })).mesh, { dp: 2, fsdp: -1, sp: 4 });
  assert.deepEqual(messages(() => parseConfig(job({ dp: 0, sp: -2, fsdp: 1.5 }))), [
    "mesh.dp: expected an integer >= 1, or -1 to infer",
    "mesh.fsdp: expected integer, received 1.5",
    "mesh.sp: expected an integer >= 1, or -1 to infer",
  ]);
  assert.deepEqual(messages(() => parseConfig(job({ tp: 2 }))), ["mesh.tp: unknown key (did you mean dp?)"]);
});

test("at most one mesh dim may be -1", () => {
  assert.deepEqual(messages(() => parseConfig(job({ dp: -1, fsdp: -1, sp: 1 }))), [
    "mesh: at most one of mesh.dp, mesh.fsdp, mesh.sp may be -1 (inferred); got -1 for mesh.dp, mesh.fsdp",
  ]);
});

test("nats.url takes one URL or a comma-separated list", () => {
  const withUrl = (url: string) => parseConfig({ ...job({}), nats: { url } }).nats;
  assert.deepEqual(natsServers(withUrl("nats://a:4222")), ["nats://a:4222"]);
  assert.deepEqual(natsServers(withUrl("nats://a:4222,nats://b:4222")), ["nats://a:4222", "nats://b:4222"]);
  assert.equal(natsServers(parseConfig(job({})).nats), undefined);
  assert.deepEqual(messages(() => withUrl("nats://a:4222, nats://b:4222")), [
    "nats.url: expected a URL or comma-separated URLs without spaces: nats://host:4222,nats://host2:4222",
  ]);
});

test("telemetry.peak_tflops: optional, a positive number", () => {
  assert.equal(parseConfig(job({})).telemetry.peak_tflops, undefined);
  assert.equal(parseConfig({ ...job({}), telemetry: { peak_tflops: 312 } }).telemetry.peak_tflops, 312);
  assert.deepEqual(messages(() => parseConfig({ ...job({}), telemetry: { peak_tflops: 0 } })), ["telemetry.peak_tflops: expected > 0, received 0"]);
});
