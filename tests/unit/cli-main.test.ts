import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { main } from "../../runtime/cli/main.ts";
import { commands } from "../../runtime/cli/commands.ts";
import type { Command } from "../../runtime/cli/command.ts";

const root = join(import.meta.dirname, "..", "..");

/** Runs the real `tessera` bin in a child process. */
async function bin(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(root, "actors/bin.mjs"), ...args], {
      cwd: root,
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout: string; stderr: string };
    assert.equal(typeof e.code, "number", `bin did not exit normally: ${String(err)}`);
    return { code: e.code!, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Runs main() in this process, capturing what it prints. */
async function run(argv: string[], table?: readonly Command[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (t) => void (out += t), err: (t) => void (err += t) }, table);
  return { code, out, err };
}

test("the bin prints top-level help and exits 0", async () => {
  const r = await bin("--help");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Usage: tessera <command> \[options\]/);
  for (const c of commands) assert.ok(r.stdout.includes(`  ${c.path.join(" ")} `), `lists ${c.path.join(" ")}`);
});

test("every command, and every group, has --help that exits 0 with its usage", async () => {
  for (const c of commands) {
    for (const flag of ["--help", "-h"]) {
      const r = await run([...c.path, flag]);
      assert.equal(r.code, 0, r.err);
      assert.ok(r.out.startsWith(`Usage: tessera ${c.path.join(" ")}`), r.out);
      for (const o of c.options) assert.ok(r.out.includes(`--${o.name}`), `help shows --${o.name}`);
    }
    for (let n = 1; n < c.path.length; n++) {
      const group = c.path.slice(0, n);
      const r = await run([...group, "--help"]);
      assert.equal(r.code, 0, r.err);
      assert.ok(r.out.startsWith(`Usage: tessera ${group.join(" ")} <command>`), r.out);
      assert.ok(r.out.includes(c.path.join(" ")));
    }
  }
});

test("help of a command lists its arguments and options", async () => {
  const r = await run(["config", "validate", "--help"]);
  assert.match(r.out, /^Usage: tessera config validate FILE \[options\]\n/);
  assert.match(r.out, /\n {2}FILE {2}the job config/);
  assert.match(r.out, /--set KEY=VALUE +override a value/);
  assert.match(r.out, /-h, --help/);
});

test("unknown commands and options are usage errors: exit 2, a message on stderr", async () => {
  let r = await run(["trian"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /^tessera: unknown command "trian"\n/);
  assert.equal(r.out, "");

  r = await run(["config", "check"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /^tessera config: unknown command "check"\n[^]*config validate/);

  r = await run(["--verbose"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /^tessera: unknown option --verbose\n/);

  r = await run([]);
  assert.equal(r.code, 2);
  assert.match(r.err, /^tessera: missing command\n/);

  r = await run(["config", "validate", "configs/tiny.yaml", "--strict"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /^tessera config validate: unknown option --strict\nUsage: tessera config validate FILE/);

  r = await run(["config", "validate"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /^tessera config validate: missing FILE\n/);

  r = await run(["config", "validate", "a.yaml", "b.yaml"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /unexpected argument "b\.yaml"/);

  r = await run(["config", "validate", "a.yaml", "--set"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /option --set needs a value \(KEY=VALUE\)/);

  r = await run(["config", "validate", "a.yaml", "--json=yes"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /option --json takes no value/);
});

test("options parse in either form, repeat, and `--` ends them", async () => {
  const seen: unknown[] = [];
  const probe: Command = {
    path: ["probe"],
    summary: "test command",
    args: [{ name: "A", help: "a" }, { name: "B", help: "b", optional: true }],
    options: [
      { name: "set", kind: "list", help: "s" },
      { name: "out", short: "o", kind: "value", help: "o" },
      { name: "dry", kind: "flag", help: "d" },
    ],
    async run(p) {
      seen.push([p.args, p.list("set"), p.value("out"), p.flag("dry")]);
      return 0;
    },
  };
  assert.equal((await run(["probe", "--set", "a=1", "x", "--set=b=2", "-o", "f1", "--out=f2", "--dry"], [probe])).code, 0);
  assert.equal((await run(["probe", "--", "--dash", "-"], [probe])).code, 0);
  assert.deepEqual(seen, [
    [{ A: "x", B: undefined }, ["a=1", "b=2"], "f2", true],
    [{ A: "--dash", B: "-" }, [], undefined, false],
  ]);
});

test("config validate: OK and a summary for a good file, exit 0", async () => {
  const r = await bin("config", "validate", "configs/tiny.yaml");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^OK configs\/tiny\.yaml\n/);
  assert.match(r.stdout, /mesh +dp=1 fsdp=1 sp=1/);
});

test("config validate --json prints the resolved config, with overrides", async () => {
  const r = await run(["config", "validate", "configs/tiny.yaml", "--json", "--set", "optimizer.lr=0.01", "--set=trainer.max_steps=12"]);
  assert.equal(r.code, 0, r.err);
  const c = JSON.parse(r.out);
  assert.equal(c.optimizer.lr, 0.01);
  assert.equal(c.trainer.max_steps, 12);
  assert.equal(c.job, "tiny");
});

test("config validate: every problem at file:line:col, exit 1", async () => {
  const dir = mkdtempSync(join(tmpdir(), "tessera-cli-"));
  const file = join(dir, "bad.yaml");
  writeFileSync(file, "job: bad\nmodel:\n  path: /nonexistent-model\ndata:\n  sources: []\noptimizer:\n  lr: high\n  sgd: true\ntrainer: {}\n");
  const r = await bin("config", "validate", file, "--set", "mesh.dp=zero");
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.deepEqual(r.stderr.trimEnd().split("\n"), [
    `${file}:5:3: data.sources: expected at least 1 item, received array of 0`,
    `${file}:7:3: optimizer.lr: expected number, received string`,
    `${file}:8:3: optimizer.sgd: unknown key`,
    `${file}:9:1: trainer.max_steps: required (expected number)`,
    "--set mesh.dp=zero: mesh.dp: expected number, received string",
    `${file}: 5 problems`,
  ]);
});

test("config validate: an unreadable file is a failure, not a crash", async () => {
  const r = await run(["config", "validate", "/nonexistent/job.yaml"]);
  assert.equal(r.code, 1);
  assert.match(r.err, /^\/nonexistent\/job\.yaml: file not found\n/);
});
