// `tessera train` as users run it: the real bin in a child process, and its config errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { main } from "../../runtime/cli/index.ts";
import { commands } from "../../actors/index.ts";
import { SMALL, tempDir } from "./train-testkit.ts";

const root = join(import.meta.dirname, "..", "..");

async function runMain(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (t) => void (out += t), err: (t) => void (err += t) }, commands);
  return { code, out, err };
}

test("node actors/bin.mjs train configs/tiny.yaml runs three steps, writes metrics and spans, and exits 0", async () => {
  const out = tempDir("tessera-cli-train-");
  const { stderr } = await promisify(execFile)(
    process.execPath,
    // tiny.yaml warms up over 4 steps, and the config rejects warmup_steps > max_steps.
    [join(root, "actors/bin.mjs"), "train", "configs/tiny.yaml", "--set", "trainer.max_steps=3", "--set", "optimizer.schedule.warmup_steps=1",
     "--set", "telemetry.exporter=jsonl", "--output", out],
    { cwd: root, timeout: 120_000 },
  );
  const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { kind: string; step: number; loss: number });
  assert.deepEqual(records.filter((r) => r.kind === "train").map((r) => r.step), [1, 2, 3]);
  assert.match(stderr, /step 3\/3 \| loss \d/);
  assert.match(stderr, /done: max_steps \(3\) reached; 3 steps/);

  // A span per step, and per phase inside it, the rank's across the actor message boundary.
  const spans = readFileSync(join(out, "traces.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { name: string; traceId: string; spanId: string; parentSpanId?: string });
  const byId = new Map(spans.map((sp) => [sp.spanId, sp]));
  const stepOf = (sp: (typeof spans)[number]) => {
    let p: (typeof spans)[number] | undefined = sp;
    while (p && p.name !== "train.step") p = p.parentSpanId ? byId.get(p.parentSpanId) : undefined;
    return p;
  };
  const named = (n: string) => spans.filter((sp) => sp.name === n);
  assert.equal(named("train.step").length, 3);
  for (const phase of ["data_wait", "forward_backward", "optimizer"]) {
    const ps = named(phase);
    assert.ok(ps.length >= 3, `${phase}: ${ps.length} spans`);
    for (const sp of ps) assert.equal(stepOf(sp)?.traceId, sp.traceId, `${phase} span lies inside a train.step span`);
  }
  assert.ok(named("forward_backward").every((sp) => byId.get(sp.parentSpanId!)?.name === "actor rank.0 microStep"));
  assert.equal(named("checkpoint").length, 2, "the coordinator's and the rank's span of the final checkpoint");
});

test("Ctrl-C (SIGINT) finishes the step in progress, writes the final checkpoint and exits 0", async () => {
  const out = tempDir("tessera-cli-sigint-");
  const small = [...SMALL, "trainer.max_steps=500", "trainer.log_every=1"];
  const child = spawn(process.execPath, [join(root, "actors/bin.mjs"), "train", "configs/tiny.yaml", ...small.flatMap((s) => ["--set", s]), "--output", out], {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    const first = !/step +\d+\/500/.test(stderr);
    stderr += d.toString();
    if (first && /step +\d+\/500/.test(stderr)) child.kill("SIGINT");
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  clearTimeout(timer);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /stopped: interrupted \(SIGINT\); (\d+) steps/);
  const steps = Number(/; (\d+) steps/.exec(stderr)![1]);
  assert.ok(steps >= 1 && steps < 500);
  const train = readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .filter((l) => (JSON.parse(l) as { kind: string }).kind === "train");
  assert.equal(train.length, steps);
  assert.ok(readdirSync(join(out, "checkpoints")).includes(`step-${String(steps).padStart(6, "0")}`), "the final checkpoint");
});

test("tessera train: config problems print as config validate does and exit 1; --help exits 0", async () => {
  const bad = await runMain(["train", "configs/tiny.yaml", "--set", "trainer.max_steps=0", "--set", "optimizer.lr=fast"]);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /--set trainer\.max_steps=0: trainer\.max_steps: /);
  assert.match(bad.err, /optimizer\.lr/);
  assert.match(bad.err, /configs\/tiny\.yaml: 2 problems/);

  const out = tempDir("tessera-cli-mesh-");
  const mesh = await runMain(["train", "configs/tiny.yaml", "--set", "mesh.dp=2", "--nproc", "3", "--output", out]);
  assert.equal(mesh.code, 1);
  assert.match(mesh.err, /mesh: dp\*fsdp\*sp = 2\*1\*1 = 2, but the world size is 3/);
  assert.ok(!existsSync(join(out, "metrics.jsonl")));

  const help = await runMain(["train", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.out, /^Usage: tessera train CONFIG \[options\]/);
  assert.match(help.out, /--output DIR/);
  assert.match(help.out, /--set KEY=VALUE/);
});
