import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig, parseConfig, type LoadOptions } from "../../runtime/config/index.ts";

// A valid config whose input files exist, in a fresh folder; tests edit its text.
function fixture(): string {
  const dir = mkdtempSync(join(tmpdir(), "tessera-config-"));
  mkdirSync(join(dir, "tok"));
  writeFileSync(join(dir, "tok", "tokenizer.json"), "{}");
  writeFileSync(join(dir, "tok", "tokenizer_config.json"), "{}");
  writeFileSync(join(dir, "train.jsonl"), '{"text":"a"}\n');
  return dir;
}

const base = `job: t
device: cpu
model:
  config:
    model_type: qwen2
    hidden_size: 64
data:
  sources:
    - path: train.jsonl
      format: jsonl
  tokenizer: tok
optimizer:
  lr: 0.001
trainer:
  max_steps: 10
`;

function write(dir: string, text: string, name = "job.yaml"): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

function problems(file: string, opts: LoadOptions = {}): string[] {
  try {
    loadConfig(file, opts);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err.message.split("\n");
  }
  assert.fail("config loaded but should not have");
}

test("a valid config loads with paths resolved against its folder", () => {
  const dir = fixture();
  const c = loadConfig(write(dir, base));
  assert.equal(c.data.sources[0]!.path, join(dir, "train.jsonl"));
  assert.equal(c.data.tokenizer, join(dir, "tok"));
  assert.equal(c.optimizer.lr, 0.001);
});

test("an unknown key is named with its path, file, line and column", () => {
  const dir = fixture();
  const file = write(dir, base.replace("  lr: 0.001\n", "  lr: 0.001\n  lrr: 0.1\n"));
  assert.deepEqual(problems(file), [`${file}:14:3: optimizer.lrr: unknown key (did you mean lr?)`]);
});

test("an unknown top-level section is an error at its line", () => {
  const dir = fixture();
  const file = write(dir, base + "trainr:\n  seed: 1\n");
  assert.deepEqual(problems(file), [`${file}:16:1: trainr: unknown key (did you mean trainer?)`]);
});

test("a wrong type is named with its path, file, line and column", () => {
  const dir = fixture();
  const file = write(dir, base.replace("lr: 0.001", "lr: fast"));
  assert.deepEqual(problems(file), [`${file}:13:3: optimizer.lr: expected number, received string`]);
});

test("every problem is reported at once, in line order, nested in lists too", () => {
  const dir = fixture();
  const text = base
    .replace("format: jsonl", "format: jsonx")
    .replace("lr: 0.001", "lr: [1]")
    .replace("max_steps: 10", "max_steps: 10\n  grad_acum: 2")
    .replace("device: cpu", "device: tpu");
  const file = write(dir, text);
  assert.deepEqual(problems(file), [
    `${file}:2:1: device: expected one of "cpu", "cuda", received "tpu"`,
    `${file}:10:7: data.sources.0.format: expected one of "jsonl", "json", "csv", "arrow", "parquet", received "jsonx"`,
    `${file}:13:3: optimizer.lr: expected number, received array`,
    `${file}:16:3: trainer.grad_acum: unknown key (did you mean grad_accum?)`,
  ]);
});

test("a missing required key points at its section", () => {
  const dir = fixture();
  const file = write(dir, base.replace("  max_steps: 10\n", "  seed: 3\n"));
  assert.deepEqual(problems(file), [`${file}:14:1: trainer.max_steps: required (expected number)`]);
});

test("a YAML syntax error names file:line:col", () => {
  const dir = fixture();
  let file = write(dir, base.replace("  max_steps: 10", "\tmax_steps: 10"));
  assert.deepEqual(problems(file), [`${file}:15:1: YAML TAB_AS_INDENT: Tabs are not allowed as indentation`]);

  // An unclosed flow list is found where the parser gives up (the next key), which still names the file and a line.
  file = write(dir, base.replace("  lr: 0.001", "  betas: [0.9, 0.95\n  lr: 0.001"));
  const ps = problems(file);
  assert.ok(ps.length >= 1);
  for (const p of ps) assert.match(p, /job\.yaml:1[3-6]:\d+: YAML [A-Z_]+: /);
});

test("a duplicate key is a YAML error at its line", () => {
  const dir = fixture();
  const file = write(dir, base.replace("  lr: 0.001", "  lr: 0.001\n  lr: 0.002"));
  const ps = problems(file);
  assert.equal(ps.length, 1);
  assert.match(ps[0]!, new RegExp(`^.*job\\.yaml:14:3: YAML DUPLICATE_KEY: `));
});

test("--set overrides are typed YAML values, nested, applied in order", () => {
  const dir = fixture();
  const c = loadConfig(write(dir, base), {
    overrides: [
      "mesh.fsdp=2",
      "optimizer.betas=[0.8,0.9]",
      "optimizer.lr=1e-4",
      "optimizer.lr=2e-4",
      "nats.url=nats://10.0.0.1:4222",
      "optimizer.schedule.name=wsd",
      "model.recompute=full",
      "data.sources.0.weight=2.5",
    ],
  });
  assert.equal(c.mesh.fsdp, 2);
  assert.deepEqual(c.optimizer.betas, [0.8, 0.9]);
  assert.equal(c.optimizer.lr, 2e-4);
  assert.equal(c.nats.url, "nats://10.0.0.1:4222");
  assert.equal(c.optimizer.schedule.name, "wsd");
  assert.equal(c.model.recompute, "full");
  assert.equal(c.data.sources[0]!.weight, 2.5);
});

test("a --set path is relative to the working directory; a string value stays a string", () => {
  const dir = fixture();
  const other = mkdtempSync(join(tmpdir(), "tessera-cwd-"));
  mkdirSync(join(other, "tok2"));
  writeFileSync(join(other, "tok2", "tokenizer.json"), "{}");
  writeFileSync(join(other, "tok2", "tokenizer_config.json"), "{}");
  const c = loadConfig(write(dir, base), { overrides: ["data.tokenizer=tok2", "job=123abc"], cwd: other });
  assert.equal(c.data.tokenizer, join(other, "tok2"));
  assert.equal(c.job, "123abc");
});

test("--set problems name the override, not a file line", () => {
  const dir = fixture();
  const file = write(dir, base);
  // Problems found while applying overrides come first, in argument order; then schema problems in key order.
  assert.deepEqual(problems(file, { overrides: ["optimizer.lrr=1", "mesh.sp=two", "optimizer.lr.x=1", "noequals"] }), [
    "--set optimizer.lr.x=1: optimizer.lr: is 0.001, not a mapping",
    "--set noequals: expected KEY.PATH=VALUE, e.g. --set optimizer.lr=1e-4",
    "--set mesh.sp=two: mesh.sp: expected number, received string",
    "--set optimizer.lrr=1: optimizer.lrr: unknown key (did you mean lr?)",
  ]);
});

test("defaults are filled and derived values set", () => {
  const dir = fixture();
  writeFileSync(join(dir, "config.json"), "{}");
  writeFileSync(join(dir, "tokenizer.json"), "{}");
  writeFileSync(join(dir, "tokenizer_config.json"), "{}");
  const file = write(dir, "job: small\nmodel:\n  path: .\ndata:\n  sources: [{ path: train.jsonl, format: jsonl }]\ntrainer:\n  max_steps: 100\n  seed: 7\n");
  const c = loadConfig(file);
  assert.equal(c.device, "cuda");
  assert.equal(c.output_dir, "runs/small");
  assert.equal(c.model.dtype, "auto");
  assert.equal(c.model.recompute, "none");
  assert.equal(c.model.init_seed, 7);
  assert.equal(c.data.seed, 7);
  assert.equal(c.data.tokenizer, dir, "tokenizer defaults to model.path");
  assert.equal(c.data.packing_length, 2048);
  assert.equal(c.data.packing_strategy, "ffd");
  assert.equal(c.data.on_bad_record, "skip");
  assert.deepEqual(c.data.sources[0], { path: join(dir, "train.jsonl"), format: "jsonl", weight: 1, text_field: "text" });
  assert.deepEqual(c.mesh, { dp: 1, fsdp: -1, sp: 1 });
  assert.deepEqual(c.optimizer, {
    name: "adamw",
    lr: 3e-4,
    betas: [0.9, 0.95],
    eps: 1e-8,
    weight_decay: 0.1,
    muon: { momentum: 0.95, nesterov: true, ns_steps: 5 },
    schedule: { name: "cosine", warmup_steps: 0, decay_fraction: 0.1, min_lr_ratio: 0.1 },
  });
  assert.equal(c.trainer.grad_accum, 1);
  assert.equal(c.trainer.micro_batch_tokens, 2048);
  assert.equal(c.trainer.clip_grad_norm, 1);
  assert.equal(c.trainer.max_failures, 3);
  assert.deepEqual(c.checkpoint, { dir: "runs/small/checkpoints", every: 500, keep_last: 3, resume: "auto" });
  assert.equal(c.telemetry.exporter, "none");
  assert.equal(c.telemetry.jsonl_path, "runs/small/traces.jsonl");
  assert.deepEqual(c.nats, {});
});

test("a resolved config validates again to itself", () => {
  const dir = fixture();
  const c = loadConfig(write(dir, base));
  assert.deepEqual(parseConfig(JSON.parse(JSON.stringify(c))), c);
});

test("parseConfig reports problems by key path", () => {
  assert.throws(() => parseConfig({ job: "x" }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(
      err.problems.map((p) => `${p.path}: ${p.message}`),
      ["model: required (expected object)", "data: required (expected object)", "trainer: required (expected object)"],
    );
    return true;
  });
});

test("cross-field checks name the keys they concern", () => {
  const dir = fixture();
  let file = write(dir, base.replace("  lr: 0.001", "  lr: 0.001\n  schedule: { name: cosine, warmup_steps: 11 }"));
  assert.deepEqual(problems(file), [`${file}:14:29: optimizer.schedule.warmup_steps: must be <= trainer.max_steps (11 > 10)`]);

  file = write(dir, base.replace("model:\n", "model:\n  path: /somewhere\n"));
  assert.deepEqual(problems(file), [
    `${file}:3:1: model: give exactly one of model.path (a Hugging Face folder) or model.config (inline config.json fields)`,
  ]);

  file = write(dir, base.replace("  tokenizer: tok\n", ""));
  assert.deepEqual(problems(file), [
    `${file}:7:1: data.tokenizer: required when the model is given inline (model.config): a folder with tokenizer.json`,
  ]);

  file = write(dir, base.replace("max_steps: 10", "max_steps: 10\n  eval_every: 5\n  heartbeat_ms: 5000\n  dead_after_ms: 5000"));
  assert.deepEqual(problems(file), [
    `${file}:16:3: trainer.eval_every: evaluation needs data.eval`,
    `${file}:18:3: trainer.dead_after_ms: must exceed trainer.heartbeat_ms (5000 <= 5000)`,
  ]);
});

test("missing input files are errors at the line that names them", () => {
  const dir = fixture();
  const file = write(dir, base.replace("path: train.jsonl", "path: nope.jsonl"));
  assert.deepEqual(problems(file), [`${file}:9:7: data.sources.0.path: not found: ${join(dir, "nope.jsonl")}`]);
  assert.equal(loadConfig(file, { checkPaths: false }).data.sources[0]!.path, join(dir, "nope.jsonl"));

  const noTok = write(dir, base.replace("tokenizer: tok", "tokenizer: ."));
  assert.deepEqual(problems(noTok), [
    `${noTok}:11:3: data.tokenizer: expected a folder holding tokenizer.json and tokenizer_config.json: ${dir}`,
  ]);
});

test("data.dataset expands into sources relative to the dataset file, with its own positions", () => {
  const dir = fixture();
  mkdirSync(join(dir, "mix"));
  writeFileSync(join(dir, "mix", "a.jsonl"), "{}\n");
  writeFileSync(join(dir, "mix", "b.parquet"), "");
  const ds = join(dir, "mix", "mix.yaml");
  writeFileSync(ds, "sources:\n  - { path: a.jsonl, format: jsonl, weight: 3 }\n  - path: b.parquet\n    format: parquet\n");
  const text = base.replace("  sources:\n    - path: train.jsonl\n      format: jsonl\n", "  dataset: mix/mix.yaml\n");
  const c = loadConfig(write(dir, text));
  assert.deepEqual(
    c.data.sources.map((s) => [s.path, s.format, s.weight]),
    [
      [join(dir, "mix", "a.jsonl"), "jsonl", 3],
      [join(dir, "mix", "b.parquet"), "parquet", 1],
    ],
  );

  writeFileSync(ds, "sources:\n  - { path: a.jsonl, format: jsonl }\n  - path: b.parquet\n    format: parquet\n    wieght: 2\nextra: 1\n");
  const file = write(dir, text);
  assert.deepEqual(problems(file, { cwd: dir }), [
    "mix/mix.yaml:5:5: data.sources.1.wieght: unknown key (did you mean weight?)",
    "mix/mix.yaml:6:1: extra: unknown key (a dataset file holds only sources)",
  ]);

  const both = write(dir, base.replace("  tokenizer: tok\n", "  tokenizer: tok\n  dataset: mix/mix.yaml\n"));
  assert.deepEqual(problems(both), [`${both}:12:3: data.dataset: give either data.sources or data.dataset, not both`]);
});
