#!/usr/bin/env node
// Runs the test suite with node:test under tsx. With no argument: every *.test.ts under
// tests/ except tests/gpu (GPU machine only) and tests/bench (benchmarks are not tests).
// With folders or files as arguments: just those.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const skip = new Set(["tests/gpu", "tests/bench", "tests/fixtures"]);

function collect(path, explicit, out) {
  if (statSync(path).isDirectory()) {
    if (!explicit && skip.has(path)) return;
    for (const name of readdirSync(path).sort()) collect(join(path, name), false, out);
  } else if (path.endsWith(".test.ts")) {
    out.push(path);
  }
}

const args = process.argv.slice(2);
const files = [];
for (const a of args.length ? args : ["tests"]) collect(a.replace(/\/$/, ""), args.length > 0, files);
if (files.length === 0) {
  console.error("no test files found");
  process.exit(1);
}
const concurrency = process.env.TESSERA_TEST_CONCURRENCY ?? "2";
const r = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", `--test-concurrency=${concurrency}`, ...files],
  { stdio: "inherit" },
);
process.exit(r.status ?? 1);
