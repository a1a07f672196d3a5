import { test } from "node:test";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import {
  Tensor, tensor, zeros, randn, cast, scope, keep, liveTensors, matmul, add, buildInfo, cpuThreads, cachedBytes, emptyCache,
} from "../../native/index.ts";

const nums = (t: Tensor): unknown[] => Array.from(t.toArray() as ArrayLike<unknown>);

test("tensor round-trips typed arrays per dtype", () => {
  scope(() => {
    const f = tensor([1.5, -2, 3], [3]);
    assert.equal(f.dtype, "float32");
    assert.deepEqual(nums(f), [1.5, -2, 3]);
    const d = tensor(new Float64Array([Math.PI, 1e-300]), [2, 1]);
    assert.equal(d.dtype, "float64");
    assert.deepEqual(nums(d), [Math.PI, 1e-300]);
    const i = tensor([7, -1, 2 ** 31 - 1], [3], { dtype: "int32" });
    assert.ok(i.toArray() instanceof Int32Array);
    assert.deepEqual(nums(i), [7, -1, 2 ** 31 - 1]);
    const l = tensor([2 ** 40, -3], [2], { dtype: "int64" });
    assert.deepEqual(nums(l), [2n ** 40n, -3n]);
    assert.equal(tensor([4.25], [1, 1]).item(), 4.25);
    assert.deepEqual(zeros([2, 2], "float64").toArray(), new Float64Array(4));
  });
});

test("bf16 round trip rounds to nearest even and casts agree", () => {
  scope(() => {
    // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even mantissa (1).
    // 1 + 3*2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even give 1 + 2^-6.
    const vals = [1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -0.1, 65504, 3e38, Infinity, -Infinity];
    const want = [1, 1, 1 + 2 ** -6, 1 + 2 ** -7, -0.10009765625, 65536, 1.765625 * 2 ** 127, Infinity, -Infinity];
    const b = tensor(vals, [vals.length], { dtype: "bfloat16" });
    assert.equal(b.dtype, "bfloat16");
    assert.ok(b.toArray() instanceof Float32Array);
    const back = b.toFloat64Array();
    want.forEach((w, i) => assert.ok(Math.abs(back[i]! - w) <= Math.abs(w) * 1e-7 || back[i] === w, `${vals[i]} -> ${back[i]}, want ${w}`));
    const viaCast = cast(tensor(vals, [vals.length]), "bfloat16").toFloat64Array();
    assert.deepEqual(viaCast, back);
    assert.ok(Number.isNaN(cast(tensor([NaN], [1]), "bfloat16").toArray()[0]));
    const f64 = cast(b, "float64");
    assert.equal(f64.dtype, "float64");
    assert.deepEqual(nums(f64), nums(b));
    assert.deepEqual(nums(cast(tensor([1.7, -2.2], [2]), "int32")), [1, -2]);
  });
});

test("scope frees everything but what is returned or kept; counts return to start", () => {
  const start = liveTensors();
  let kept: Tensor | undefined;
  const out = scope(() => {
    const a = randn([64, 32], { seed: 1 });
    const b = randn([32, 16], { seed: 2 });
    const c = matmul(a, b);
    kept = keep(add(c, c));
    const inner = scope(() => ({ pair: [matmul(a, b), c] as const, n: 3 }));
    assert.equal(a.disposed, false, "inner scope must not free outer tensors");
    return { c: inner.pair[0], n: inner.n };
  });
  assert.equal(out.n, 3);
  assert.equal(out.c.disposed, false);
  assert.equal(kept!.disposed, false);
  assert.equal(liveTensors().count, start.count + 2);
  assert.equal(liveTensors().bytes, start.bytes + 2 * 64 * 16 * 4);
  out.c.dispose();
  kept!.dispose();
  assert.deepEqual(liveTensors(), start);
});

test("scope keeps tensors reachable through class instances, Maps and Sets", () => {
  const start = liveTensors();
  class Layer {
    constructor(readonly weight: Tensor) {}
  }
  const out = scope(() => {
    randn([3], { seed: 9 });
    return { layer: new Layer(randn([2], { seed: 1 })), m: new Map([["a", randn([2], { seed: 2 })]]), s: new Set([randn([2], { seed: 3 })]) };
  });
  assert.equal(liveTensors().count, start.count + 3);
  assert.equal(out.layer.weight.disposed, false);
  out.layer.weight.dispose();
  out.m.get("a")!.dispose();
  for (const t of out.s) t.dispose();
  assert.deepEqual(liveTensors(), start);
});

test("scope frees its tensors when fn throws", () => {
  const start = liveTensors();
  assert.throws(
    () =>
      scope(() => {
        randn([10], { seed: 3 });
        throw new Error("boom");
      }),
    /boom/,
  );
  assert.deepEqual(liveTensors(), start);
});

test("views share storage and keep it alive; disposal is idempotent", () => {
  const start = liveTensors();
  const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const v = a.reshape([3, -1]);
  assert.deepEqual(v.shape, [3, 2]);
  a.dispose();
  a.dispose();
  assert.equal(liveTensors().bytes, start.bytes + 24, "the view holds the storage");
  assert.deepEqual(nums(v), [1, 2, 3, 4, 5, 6]);
  v.dispose();
  assert.deepEqual(liveTensors(), start);
  assert.throws(() => tensor([1, 2], [2]).reshape([3]), /reshape: shape \[3\] holds 3 elements, the tensor 2/);
});

test("using a disposed tensor throws an error naming the op", () => {
  const a = tensor([1, 2, 3, 4], [2, 2]);
  const b = tensor([1, 2, 3, 4], [2, 2]);
  a.dispose();
  assert.throws(() => matmul(a, b), /matmul: a is a disposed tensor/);
  assert.throws(() => a.toArray(), /toArray: tensor is a disposed tensor/);
  b.dispose();
});

test("bad inputs are errors, not crashes", () => {
  scope(() => {
    assert.throws(() => tensor([1, 2, 3], [2, 2]), /tensor: data has 3 elements but shape \[2, 2\] holds 4/);
    assert.throws(() => tensor([1], [1], { device: "cuda" }), /tensor: device "cuda" is not available/);
    assert.throws(() => randn([2], { seed: -1 }), /randn: seed/);
    const i = tensor([1, 2], [1, 2], { dtype: "int32" });
    assert.throws(() => matmul(i, i), /matmul: a must be float32 or float64, got int32/);
    assert.throws(() => tensor([1], [1]).item() + tensor([1, 2], [2]).item(), /item: tensor has 2 elements/);
    assert.throws(() => matmul({} as Tensor, tensor([1], [1, 1])), /matmul: a must be a Tensor, got object/);
    assert.throws(() => add(tensor([1], [1]), null as unknown as Tensor), /add: b must be a Tensor, got null/);
    assert.throws(() => cast(tensor([1], [1]), "float16" as never), /cast: unknown dtype float16/);
  });
});

test("randn is deterministic per seed and has the requested spread", () => {
  scope(() => {
    const a = randn([5000], { seed: 42, std: 2 }).toFloat64Array();
    const b = randn([5000], { seed: 42, std: 2 }).toFloat64Array();
    const c = randn([5000], { seed: 43, std: 2 }).toFloat64Array();
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    const mean = a.reduce((s, x) => s + x, 0) / a.length;
    const sd = Math.sqrt(a.reduce((s, x) => s + (x - mean) ** 2, 0) / a.length);
    assert.ok(Math.abs(mean) < 0.1 && Math.abs(sd - 2) < 0.1, `mean ${mean}, sd ${sd}`);
  });
});

test("build info reports a CPU backend and a thread pool", () => {
  assert.equal(buildInfo().cpu, true);
  assert.ok(cpuThreads() >= 1);
});

test("freed storage is cached for reuse and the cache can be emptied", () => {
  emptyCache();
  const start = liveTensors();
  const a = zeros([1000, 1000]);
  a.dispose();
  assert.deepEqual(liveTensors(), start, "cached blocks are not live");
  assert.ok(cachedBytes() >= 4e6, `cached ${cachedBytes()}`);
  const b = zeros([1000, 1000]);
  assert.ok(cachedBytes() < 4e6, "the block is reused");
  assert.ok(b.toFloat64Array().every((x) => x === 0), "zeros() clears a reused block");
  b.dispose();
  assert.ok(emptyCache() >= 4e6);
  assert.equal(cachedBytes(), 0);
});

test("the GC backstop frees tensors that were never disposed (between event-loop turns)", () => {
  const script = `
    import { setImmediate as tick } from "node:timers/promises";
    import { zeros, liveTensors } from "./native/index.ts";
    const start = liveTensors();
    (() => { for (let i = 0; i < 50; i++) zeros([1000, 1000]); })();
    const leaked = liveTensors();
    for (let i = 0; i < 5 && liveTensors().count > start.count; i++) { globalThis.gc(); await tick(); await tick(); }
    console.log(JSON.stringify({ start, leaked, end: liveTensors() }));`;
  const r = spawnSync(process.execPath, ["--expose-gc", "--import", "tsx", "--input-type=module", "-e", script], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const { start, leaked, end } = JSON.parse(r.stdout) as Record<"start" | "leaked" | "end", { count: number; bytes: number }>;
  assert.equal(leaked.count, start.count + 50);
  assert.equal(leaked.bytes, start.bytes + 50 * 4e6);
  assert.deepEqual(end, start);
});
