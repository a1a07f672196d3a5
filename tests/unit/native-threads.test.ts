import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

// Every kernel splits work so that no summation order depends on how many threads run it;
// results must be bitwise identical for any TESSERA_CPU_THREADS.
const script = `
  import { createHash } from "node:crypto";
  import * as n from "./native/index.ts";
  const h = createHash("sha256");
  const add = (t) => h.update(Buffer.from(t.toFloat64Array().buffer));
  const r = (shape, seed) => n.randn(shape, { seed });
  const a = r([150, 300], 1), b = r([300, 170], 2);
  add(n.matmul(a, b));
  add(n.matmul(a, b.reshape([170, 300]), { transB: true }));
  const x = r([700, 48], 3), w = r([48], 4);
  const { rstd } = n.rmsnorm(x, w, 1e-6);
  const g = n.rmsnormBackward(r([700, 48], 5), x, w, rstd);
  add(g.dx); add(g.dw);
  add(n.sumRows(x));
  add(n.embeddingBackward(r([700, 16], 6), n.tensor(Int32Array.from({ length: 700 }, (_, i) => (i * 31) % 50), [700], { dtype: "int32" }), 50));
  const cu = n.tensor(Int32Array.from([0, 1, 100, 230, 700]), [5], { dtype: "int32" });
  const q = r([700, 4, 16], 7), k = r([700, 2, 16], 8), v = r([700, 2, 16], 9);
  const { o, lse } = n.attention(q, k, v, cu, { causal: true, window: 90 });
  add(o); add(lse);
  const d = n.attentionBackward(r([700, 4, 16], 10), q, k, v, o, lse, cu, { causal: true, window: 90 });
  add(d.dq); add(d.dk); add(d.dv);
  const ce = n.linearCrossEntropy(r([700, 48], 11), r([97, 48], 12), n.tensor(Int32Array.from({ length: 700 }, (_, i) => (i % 9 ? i % 97 : -100)), [700], { dtype: "int32" }), { chunkSize: 64, gradScale: 0.01 });
  h.update(String(ce.loss)); add(ce.dx); add(ce.dw);
  h.update(String(n.sumSquares(r([300000], 13))));
  console.log(h.digest("hex"));`;

function digest(threads: number): string {
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    env: { ...process.env, TESSERA_CPU_THREADS: String(threads) },
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test("kernel results are bitwise identical for 1, 2 and 5 threads", () => {
  const one = digest(1);
  assert.match(one, /^[0-9a-f]{64}$/);
  assert.equal(digest(2), one);
  assert.equal(digest(5), one);
});

test("thousands of back-to-back parallel ops of changing sizes, with more threads than cores, finish and are right", () => {
  // Jobs of different chunk counts in quick succession are where a worker that wakes late
  // could claim work of the next job; a hang here would hit the timeout.
  const stress = `
    import * as n from "./native/index.ts";
    const small = n.tensor(new Float32Array(1 << 16).fill(1), [1 << 16]);
    const big = n.tensor(new Float32Array(1 << 20).fill(1), [1 << 20]);
    let ok = true;
    for (let i = 0; i < 3000; i++) {
      n.scope(() => {
        n.add(small, small);
        if (i % 3 === 0) ok &&= n.sumSquares(n.add(big, big)) === 4 * (1 << 20);
      });
    }
    console.log(ok);`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", stress], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    env: { ...process.env, TESSERA_CPU_THREADS: "8" },
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.signal, null, "the stress run hung");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), "true");
});
