#!/usr/bin/env node
// The registry mirror this project installs from lacks the non-Linux builds of some optional
// platform packages (msgpackr-extract's darwin/win32 binaries). `npm install` then leaves them
// out of package-lock.json and `npm ci` refuses the lock as out of sync. This re-adds the
// missing optional entries (never installed on Linux, so nothing is fetched).
// Run after every `npm install` that changes the lock: `node .ci/patch-lock.mjs`.
import { readFileSync, writeFileSync } from "node:fs";

const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
const pkgs = lock.packages;
const platform = { "darwin-arm64": ["darwin", "arm64"], "darwin-x64": ["darwin", "x64"], "linux-arm": ["linux", "arm"], "linux-arm64": ["linux", "arm64"], "linux-x64": ["linux", "x64"], "win32-x64": ["win32", "x64"] };
let added = 0;
for (const [path, entry] of Object.entries({ ...pkgs })) {
  for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const where = `node_modules/${dep}`;
    if (pkgs[where] || pkgs[`${path}/node_modules/${dep}`]) continue;
    const suffix = Object.keys(platform).find((p) => dep.endsWith(p));
    if (!suffix) continue;
    const [os, cpu] = platform[suffix];
    pkgs[where] = { version, cpu: [cpu], license: "MIT", optional: true, os: [os] };
    added++;
  }
}
lock.packages = Object.fromEntries(Object.entries(pkgs).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1)));
writeFileSync("package-lock.json", JSON.stringify(lock, null, 2) + "\n");
console.log(`patch-lock: added ${added} optional platform entries`);
