// The host collectives with several ranks in one process (InProcTransport): every op against a
// plain reference over a real DeviceMesh's groups, determinism under shuffled arrival,
// mismatch detection, deadlines and abort.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DeviceMesh } from "../../mesh/index.ts";
import {
  CollectiveAbortedError,
  CollectiveError,
  CollectiveMismatchError,
  CollectiveTimeoutError,
  HostCollectives,
  SMALL_ALLREDUCE_BYTES,
  startInProcessCollectives,
  type HostBuffer,
  type ReduceOp,
} from "../../mesh/collectives/index.ts";
import { mulberry32 as rng } from "../../models/index.ts";
import { InProcTransport, type Delivery, type Headers, type Reply, type Served, type Transport } from "../../runtime/index.ts";


/** Values spread over many magnitudes, so that the order of a float sum shows in its bits. */
function wideFloats(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() - 0.5) * 10 ** Math.floor(r() * 12 - 6));
}

/**
 * Rank r's part of data whose float64 sum depends on the order of the parts: per element, one
 * rank holds +2^60 and another -2^60, so small values added between them are lost and those
 * added outside them are kept.
 */
function orderSensitive(len: number, r: number, n: number, seed: number): Float32Array {
  const small = wideFloats(len, seed + r);
  return small.map((v, i) => (i % n === r ? 2 ** 60 : (i + 2) % n === r ? -(2 ** 60) : v));
}

function ints(n: number, seed: number): Int32Array {
  const r = rng(seed);
  // Near the int32 limits, so that sums wrap.
  return Int32Array.from({ length: n }, () => Math.floor((r() - 0.5) * 2 ** 32));
}

/** Reference reduction: plain numbers in group order, rounded to the type once. */
function refReduce(parts: HostBuffer[], op: ReduceOp, kind: "float32" | "float64" | "int32"): number[] {
  const len = parts[0]!.length;
  const out: number[] = [];
  for (let i = 0; i < len; i++) {
    let v = parts[0]![i]!;
    for (let k = 1; k < parts.length; k++) {
      const x = parts[k]![i]!;
      v = op === "max" ? Math.max(v, x) : op === "min" ? Math.min(v, x) : v + x;
    }
    if (op === "avg") v /= parts.length;
    out.push(kind === "float32" ? Math.fround(v) : kind === "int32" ? v | 0 : v);
  }
  return out;
}

function bits(a: HostBuffer): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function assertSameBits(a: HostBuffer, b: HostBuffer, what: string): void {
  assert.equal(a.constructor, b.constructor, `${what}: type`);
  assert.ok(Buffer.compare(bits(a), bits(b)) === 0, `${what}: bitwise equal`);
}

const mesh = new DeviceMesh({ dp: 2, fsdp: 2, sp: 2 }, 8);
const layouts = mesh.layouts();

test("every op matches the reference over a 2x2x2 mesh, with groups of different dims running concurrently", async () => {
  const world = await startInProcessCollectives(8, { timeoutMs: 20_000 });
  try {
    const small = 37; // under SMALL_ALLREDUCE_BYTES: one round of whole buffers
    const large = SMALL_ALLREDUCE_BYTES / 4 + 13; // reduce-scatter + all-gather, uneven blocks
    const input = (r: number, len: number, salt: number) => wideFloats(len, 1000 * salt + r);
    const f64 = (r: number) => Float64Array.from(wideFloats(29, 77 + r), (x) => x * Math.PI);
    const results = await Promise.all(
      world.ranks.map(async (ep, r) => {
        const l = layouts[r]!;
        const dp = ep.group(l.dpGroup, "dp");
        const shard = ep.group(l.shardGroup, "shard");
        const fsdp = ep.group(l.fsdpGroup, "fsdp");
        const sp = ep.group(l.spGroup, "sp");
        const all = ep.group(l.lossGroup, "loss");
        const [arSmall, arLarge, rsSum, rsMax, ag, a2a, bc, arMin, arAvg64, arInt, rsInt] = await Promise.all([
          dp.allReduce(input(r, small, 1), "sum"),
          dp.allReduce(input(r, large, 2), "sum"),
          shard.reduceScatter(input(r, 4 * 10, 3), "sum"),
          shard.reduceScatter(input(r, 4 * 10, 4), "max"),
          fsdp.allGather(input(r, 6, 5)),
          sp.allToAll(input(r, 2 * 7, 6)),
          shard.broadcast(input(r, 9, 7), l.shardGroup[2]!),
          all.allReduce(input(r, large, 8), "min"),
          all.allReduce(f64(r), "avg"),
          all.allReduce(ints(50, r), "sum"),
          sp.reduceScatter(ints(2 * 5, 300 + r), "sum"),
        ]);
        await all.barrier();
        return { arSmall, arLarge, rsSum, rsMax, ag, a2a, bc, arMin, arAvg64, arInt, rsInt };
      }),
    );
    for (let r = 0; r < 8; r++) {
      const l = layouts[r]!;
      const got = results[r]!;
      const idx = (g: number[]) => g.indexOf(r);
      const check = (name: string, actual: HostBuffer, expected: number[]) => {
        assert.equal(actual.length, expected.length, `${name} at rank ${r}: length`);
        assert.deepEqual(Array.from(actual), expected, `${name} at rank ${r}`);
      };
      check("allReduce small", got.arSmall, refReduce(l.dpGroup.map((m) => input(m, small, 1)), "sum", "float32"));
      check("allReduce large", got.arLarge, refReduce(l.dpGroup.map((m) => input(m, large, 2)), "sum", "float32"));
      const i = idx(l.shardGroup);
      check("reduceScatter sum", got.rsSum, refReduce(l.shardGroup.map((m) => input(m, 40, 3).subarray(i * 10, i * 10 + 10)), "sum", "float32"));
      check("reduceScatter max", got.rsMax, refReduce(l.shardGroup.map((m) => input(m, 40, 4).subarray(i * 10, i * 10 + 10)), "max", "float32"));
      check("allGather", got.ag, l.fsdpGroup.flatMap((m) => Array.from(input(m, 6, 5))));
      const j = idx(l.spGroup);
      check("allToAll", got.a2a, l.spGroup.flatMap((m) => Array.from(input(m, 14, 6).subarray(j * 7, j * 7 + 7))));
      check("broadcast", got.bc, Array.from(input(l.shardGroup[2]!, 9, 7)));
      check("allReduce min", got.arMin, refReduce(l.lossGroup.map((m) => input(m, large, 8)), "min", "float32"));
      check("allReduce avg float64", got.arAvg64, refReduce(l.lossGroup.map(f64), "avg", "float64"));
      check("allReduce sum int32 (wraps)", got.arInt, refReduce(l.lossGroup.map((m) => ints(50, m)), "sum", "int32"));
      const k = idx(l.spGroup);
      check("reduceScatter int32", got.rsInt, refReduce(l.spGroup.map((m) => ints(10, 300 + m).subarray(k * 5, k * 5 + 5)), "sum", "int32"));
      assert.ok(got.arAvg64 instanceof Float64Array && got.arInt instanceof Int32Array, "types are kept");
      // allReduce: every member holds the same bits.
      assertSameBits(got.arLarge, results[l.dpGroup[0]!]!.arLarge, `allReduce large at rank ${r}`);
      assertSameBits(got.arMin, results[0]!.arMin, `allReduce min at rank ${r}`);
    }
  } finally {
    await world.close();
  }
});

/** InProcTransport whose messages arrive after random delays: arrival order is shuffled. */
class ShufflingTransport implements Transport {
  readonly kind = "inproc" as const;
  private readonly inner = new InProcTransport();
  constructor(private readonly rand: () => number) {}
  serve(address: string, onDelivery: (d: Delivery) => void): Promise<Served> {
    return this.inner.serve(address, onDelivery);
  }
  private delay(): Promise<void> {
    return new Promise((r) => setTimeout(r, Math.floor(this.rand() * 8)));
  }
  async send(address: string, body: unknown, headers: Headers): Promise<void> {
    await this.delay();
    await this.inner.send(address, body, headers);
  }
  async request(address: string, body: unknown, headers: Headers, timeoutMs: number): Promise<Reply> {
    await this.delay();
    return this.inner.request(address, body, headers, timeoutMs);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

async function allReduceOnce(transport: Transport, inputs: Float32Array[]): Promise<Float32Array[]> {
  const ranks = await Promise.all(inputs.map((_, rank) => HostCollectives.start({ transport, rank, timeoutMs: 20_000 })));
  try {
    const group = inputs.map((_, r) => r);
    return await Promise.all(ranks.map((ep, r) => ep.group(group, "w").allReduce(inputs[r]!, "sum")));
  } finally {
    await Promise.all(ranks.map((ep) => ep.close()));
    await transport.close();
  }
}

test("shuffled arrival gives bitwise identical sums (small and large paths)", async () => {
  for (const len of [64, SMALL_ALLREDUCE_BYTES / 4 + 101]) {
    const inputs = Array.from({ length: 6 }, (_, r) => orderSensitive(len, r, 6, 5000));
    // The data are such that summing in another order changes bits: the test can fail.
    const forward = refReduce(inputs, "sum", "float32");
    const backward = refReduce([...inputs].reverse(), "sum", "float32");
    assert.ok(forward.some((v, i) => !Object.is(v, backward[i])), "sum order matters for these data");
    const baseline = await allReduceOnce(new InProcTransport(), inputs);
    assert.deepEqual(Array.from(baseline[0]!), forward);
    for (let trial = 0; trial < 3; trial++) {
      const got = await allReduceOnce(new ShufflingTransport(rng(trial + 1)), inputs);
      got.forEach((g, r) => assertSameBits(g, baseline[0]!, `len ${len} trial ${trial} rank ${r}`));
    }
  }
});

test("several collectives in flight on one group match by sequence number", async () => {
  const world = await startInProcessCollectives(3, { timeoutMs: 10_000 });
  try {
    const out = await Promise.all(
      world.ranks.map((ep, r) => {
        const g = ep.group([0, 1, 2], "g");
        // Not awaited one by one: three calls in flight at once, issued in the same order everywhere.
        return Promise.all([g.allGather(new Int32Array([r])), g.allReduce(new Int32Array([r + 1]), "max"), g.allGather(new Int32Array([10 * r]))]);
      }),
    );
    for (const [a, b, c] of out) {
      assert.deepEqual(Array.from(a), [0, 1, 2]);
      assert.deepEqual(Array.from(b), [3]);
      assert.deepEqual(Array.from(c), [0, 10, 20]);
    }
  } finally {
    await world.close();
  }
});

test("a member calling another op or length fails both sides with an error naming both calls, and the group stays failed", async () => {
  const world = await startInProcessCollectives(2, { timeoutMs: 10_000 });
  try {
    const [a, b] = world.ranks.map((ep) => ep.group([0, 1], "dp"));
    const results = await Promise.allSettled([a!.allReduce(new Float32Array(8), "sum"), b!.allGather(new Float32Array(8))]);
    for (const [i, res] of results.entries()) {
      assert.equal(res.status, "rejected");
      const err = (res as PromiseRejectedResult).reason;
      assert.ok(err instanceof CollectiveMismatchError, String(err));
      assert.match(err.message, /allReduce\(sum\) float32\[8\]/u);
      assert.match(err.message, /allGather float32\[8\]/u);
      assert.match(err.message, /dp\[0,1\]/u);
      assert.match(err.message, /#0/u);
      assert.equal(err.otherRank, 1 - i);
    }
    await assert.rejects(a!.barrier(), (err: unknown) => err instanceof CollectiveError && err.code === "MISMATCH");

    const world2 = await startInProcessCollectives(2, { timeoutMs: 10_000 });
    try {
      const [c, d] = world2.ranks.map((ep) => ep.group([0, 1]));
      const res = await Promise.allSettled([c!.allReduce(new Float32Array(8), "sum"), d!.allReduce(new Float32Array(16), "sum")]);
      for (const r of res) {
        assert.equal(r.status, "rejected");
        assert.match(String((r as PromiseRejectedResult).reason.message), /float32\[8\].*float32\[16\]|float32\[16\].*float32\[8\]/u);
      }
    } finally {
      await world2.close();
    }
  } finally {
    await world.close();
  }
});

test("a broadcast root that finished learns of a mismatch from the late message: its next call fails", async () => {
  const world = await startInProcessCollectives(2, { timeoutMs: 10_000 });
  try {
    const [root, other] = world.ranks.map((ep) => ep.group([0, 1], "g"));
    const sent = await root!.broadcast(new Float64Array([1, 2]), 0);
    assert.deepEqual(Array.from(sent), [1, 2]);
    await assert.rejects(other!.allGather(new Float64Array(2)), CollectiveMismatchError);
    await new Promise((r) => setImmediate(r));
    await assert.rejects(root!.barrier(), /broadcast\(root 0\) float64\[2\]/u);
  } finally {
    await world.close();
  }
});

test("a member that never calls makes the others time out with an error naming it", async () => {
  const world = await startInProcessCollectives(4, { timeoutMs: 10_000 });
  try {
    const calls = world.ranks.slice(0, 3).map((ep) => ep.group([0, 1, 2, 3], "shard").allReduce(new Float32Array(1000), "avg", { timeoutMs: 150 }));
    const results = await Promise.allSettled(calls);
    for (const [r, res] of results.entries()) {
      assert.equal(res.status, "rejected");
      const err = (res as PromiseRejectedResult).reason;
      assert.ok(err instanceof CollectiveTimeoutError, String(err));
      assert.deepEqual(err.missing, [3]);
      assert.equal(err.info.seq, 0);
      assert.equal(err.info.rank, r);
      assert.match(err.message, /collective #0 allReduce\(avg\) float32\[1000\] on group shard\[0,1,2,3\] at rank \d: timed out after 150 ms waiting for rank\(s\) 3$/u);
    }
  } finally {
    await world.close();
  }
});

test("a rank whose endpoint starts late still gets its blocks; one that never starts is named", async () => {
  const transport = new InProcTransport();
  const r0 = await HostCollectives.start({ transport, rank: 0, timeoutMs: 10_000 });
  try {
    const first = r0.group([0, 1]).allGather(new Int32Array([7]));
    await new Promise((r) => setTimeout(r, 100));
    const r1 = await HostCollectives.start({ transport, rank: 1, timeoutMs: 10_000 });
    const second = r1.group([0, 1]).allGather(new Int32Array([8]));
    assert.deepEqual([...(await first), ...(await second)], [7, 8, 7, 8]);
    await assert.rejects(
      r0.group([0, 2], "lost").barrier({ timeoutMs: 200 }),
      (err: unknown) =>
        err instanceof CollectiveTimeoutError &&
        err.unreachable.includes(2) &&
        /waiting for rank\(s\) 2 \(no endpoint serves rank\(s\) 2\)/u.test(err.message),
    );
    await r1.close();
  } finally {
    await r0.close();
    await transport.close();
  }
});

test("a garbage message is reported and dropped; the endpoint works on", async () => {
  const errors: string[] = [];
  const world = await startInProcessCollectives(2, { timeoutMs: 10_000, onError: (e) => errors.push(e.message) });
  try {
    await world.transport.request("rank.1.coll", { g: "[0,1]", s: 0, p: 0, f: 0, sig: "barrier", d: [1, 2] }, {}, 1000);
    await world.transport.request("rank.1.coll", "not an envelope", {}, 1000);
    assert.equal(errors.length, 2);
    assert.match(errors[0]!, /invalid collectives message dropped: d:/u);
    const [a, b] = world.ranks.map((ep) => ep.group([0, 1]));
    const got = await Promise.all([a!.allReduce(new Float64Array([1]), "sum"), b!.allReduce(new Float64Array([2]), "sum")]);
    assert.deepEqual(got.map((g) => g[0]), [3, 3]);
  } finally {
    await world.close();
  }
});

test("abort rejects what is pending and every later call", async () => {
  const world = await startInProcessCollectives(2, { timeoutMs: 30_000 });
  try {
    const g = world.ranks[0]!.group([0, 1], "dp");
    const pending = g.allReduce(new Float32Array(4), "sum");
    const gather = world.ranks[0]!.group([0, 1], "other").allGather(new Int32Array(2));
    world.ranks[0]!.abort("rank 1 died; restarting");
    await assert.rejects(pending, (err: unknown) => err instanceof CollectiveAbortedError && /rank 1 died; restarting/u.test(err.message));
    await assert.rejects(gather, CollectiveAbortedError);
    await assert.rejects(g.barrier(), CollectiveAbortedError);
    assert.equal(world.ranks[0]!.aborted, true);
  } finally {
    await world.close();
  }
});

test("invalid calls are refused with the reason", async () => {
  const world = await startInProcessCollectives(2, { timeoutMs: 500 });
  try {
    const g = world.ranks[0]!.group([0, 1], "x");
    await assert.rejects(g.reduceScatter(new Float32Array(5), "sum"), /length 5 is not divisible by the group size 2/u);
    await assert.rejects(g.allToAll(new Float32Array(3)), /not divisible/u);
    await assert.rejects(g.allReduce(new Int32Array(2), "avg"), /avg is not defined for int32/u);
    await assert.rejects(g.broadcast(new Float32Array(2), 7), /root 7 is not a member/u);
    await assert.rejects(g.allGather(new Uint8Array(2) as unknown as Float32Array), /Float32Array, Float64Array or Int32Array/u);
    assert.throws(() => world.ranks[0]!.group([1, 0]), /sorted/u);
    assert.throws(() => world.ranks[0]!.group([1]), /does not contain this rank/u);
    // A group of one needs nobody.
    const solo = world.ranks[1]!.group([1], "solo");
    assert.deepEqual(Array.from(await solo.allReduce(new Float32Array([1.5, 2]), "avg")), [1.5, 2]);
    assert.deepEqual(Array.from(await solo.allGather(new Int32Array([4]))), [4]);
  } finally {
    await world.close();
  }
});

test("inputs are not modified, and reusing an input right after the call does not change what others receive", async () => {
  const world = await startInProcessCollectives(2, { timeoutMs: 10_000 });
  try {
    const [a, b] = world.ranks.map((ep) => ep.group([0, 1]));
    const bufA = new Float32Array([1, 2, 3, 4]);
    // Rank 0 finishes its broadcast at once and overwrites its buffer before rank 1 even calls.
    const sent = await a!.broadcast(bufA, 0);
    bufA.fill(-1);
    const got = await b!.broadcast(new Float32Array(4), 0);
    assert.deepEqual(Array.from(got), [1, 2, 3, 4]);
    assert.deepEqual(Array.from(sent), [1, 2, 3, 4]);
    const x = new Float32Array([1, 2]);
    const y = new Float32Array([3, 4]);
    await Promise.all([a!.allReduce(x, "sum"), b!.allReduce(y, "sum")]);
    assert.deepEqual([...x, ...y], [1, 2, 3, 4]);
  } finally {
    await world.close();
  }
});
