import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { ActorSystem, defineActor, defineProtocol, type ActorSystemEvents, type Logger } from "../../runtime/actors/index.ts";
import { InProcTransport } from "../../runtime/transport/inproc.ts";
import { encode } from "../../runtime/codec.ts";
import { AskTimeoutError, CodecError, HandlerError, InvalidMessageError, NoResponderError } from "../../runtime/errors.ts";
import { H } from "../../runtime/transport/types.ts";

const quiet: Logger = () => {};

const Worker = defineProtocol("worker", {
  push: { msg: z.object({ seq: z.number().int() }) },
  slow: { msg: z.object({ ms: z.number() }), reply: z.number() },
  seen: { msg: z.object({}), reply: z.array(z.number()) },
  boom: { msg: z.object({ why: z.string() }) },
  add: { msg: z.object({ a: z.number(), b: z.number() }), reply: z.number() },
  count: { msg: z.object({}), reply: z.object({ adds: z.number(), maxInFlight: z.number() }) },
});

/** A worker that records what it saw and how many of its handlers ran at once. */
const worker = defineActor(Worker, () => {
  const seen: number[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  let adds = 0;
  const enter = () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
  };
  return {
    push: async (m) => {
      enter();
      // Yield to the event loop in the middle of the handler: a second concurrent run would show.
      await sleep(0);
      seen.push(m.seq);
      inFlight--;
    },
    slow: async (m) => {
      enter();
      await sleep(m.ms);
      inFlight--;
      return m.ms;
    },
    seen: () => [...seen],
    boom: (m) => {
      throw new Error(`boom: ${m.why}`);
    },
    add: async (m) => {
      enter();
      adds++;
      await sleep(30);
      inFlight--;
      return m.a + m.b;
    },
    count: () => ({ adds, maxInFlight }),
  };
});

/** A fresh system with a worker, torn down when the test ends (whether it passed or not). */
async function setup(t: TestContext, opts: { dedupeCapacity?: number } = {}) {
  const transport = new InProcTransport();
  const system = new ActorSystem({ transport, name: "test", log: quiet, askTimeoutMs: 5_000, ...opts });
  t.after(async () => {
    await system.shutdown();
    await transport.close();
  });
  const ref = await system.spawn("worker", worker);
  return { transport, system, ref };
}

test("tells from one sender are handled in order, one at a time", async (t) => {
  const { ref } = await setup(t);
  const n = 500;
  for (let i = 0; i < n; i++) void ref.tell({ type: "push", seq: i });
  // Asks interleaved with the tells must not overlap them either.
  const slow = Promise.all([ref.ask({ type: "slow", ms: 5 }), ref.ask({ type: "slow", ms: 1 })]);
  assert.deepEqual(await slow, [5, 1]);
  const seen = await ref.ask({ type: "seen" });
  assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i));
  assert.equal((await ref.ask({ type: "count" })).maxInFlight, 1);
});

test("an ask that gets no reply in time rejects with AskTimeoutError", async (t) => {
  const { ref } = await setup(t);
  await assert.rejects(ref.ask({ type: "slow", ms: 300 }, { timeoutMs: 50 }), AskTimeoutError);
});

test("an ask to an address nobody serves rejects with NoResponderError", async (t) => {
  const { system } = await setup(t);
  await assert.rejects(system.ref("nobody", Worker).ask({ type: "seen" }, { timeoutMs: 2_000 }), NoResponderError);
});

test("a handler that throws answers the asker with a HandlerError and the actor serves on", async (t) => {
  const { system, ref } = await setup(t);
  const errors: string[] = [];
  system.on("messageError", (e) => errors.push(e.type));
  await assert.rejects(ref.ask({ type: "boom", why: "on purpose" }), (err: unknown) => {
    assert.ok(err instanceof HandlerError);
    assert.match(err.message, /boom: on purpose/);
    return true;
  });
  assert.equal(await ref.ask({ type: "add", a: 2, b: 3 }), 5);
  assert.deepEqual(errors, ["boom"]);
  assert.equal(system.stats("worker")?.handlerErrors, 1);
});

test("a message of the wrong shape gets an InvalidMessageError; a told one is counted; the actor serves on", async (t) => {
  const { system, ref } = await setup(t);
  const bad = { type: "add", a: "two", b: 3 } as unknown as { type: "add"; a: number; b: number };
  await assert.rejects(ref.ask(bad), (err: unknown) => {
    assert.ok(err instanceof InvalidMessageError);
    assert.match(err.message, /worker\.add/);
    return true;
  });
  const unknownType = { type: "fly" } as unknown as { type: "seen" };
  await assert.rejects(ref.ask(unknownType), /unknown message type "fly"/);

  const told = new Promise<ActorSystemEvents["messageError"][0]>((resolve) => system.once("messageError", resolve));
  await ref.tell({ type: "push", seq: 1.5 });
  const e = await told;
  assert.equal(e.told, true);
  assert.equal(e.type, "push");
  assert.ok(e.error instanceof InvalidMessageError);
  assert.equal(system.stats("worker")?.invalid, 3);
  assert.equal(await ref.ask({ type: "add", a: 1, b: 1 }), 2);
});

test("garbage bytes get a CodecError reply and the actor serves on", async (t) => {
  const { transport, system, ref } = await setup(t);
  const headers = { [H.id]: "garbage-1", [H.type]: "add", [H.from]: "test" };
  const reply = await transport.requestEncoded("worker", new Uint8Array([0xc1, 0xc1, 0xc1]), headers, 2_000);
  assert.deepEqual(Object.keys(reply.body as object).sort(), ["error", "ok"]);
  const body = reply.body as { ok: boolean; error: { code: string; message: string } };
  assert.equal(body.ok, false);
  assert.equal(body.error.code, new CodecError("").code);
  // Well-formed bytes through the same path are handled: the failure above was the bytes.
  const good = await transport.requestEncoded("worker", encode({ type: "add", a: 4, b: 5 }), { ...headers, [H.id]: "good-1" }, 2_000);
  assert.deepEqual(good.body, { ok: true, value: 9 });
  await transport.sendEncoded("worker", new Uint8Array([0xff, 0x00]), { ...headers, [H.id]: "garbage-2" });
  assert.equal(await ref.ask({ type: "add", a: 1, b: 2 }), 3);
  assert.equal(system.stats("worker")?.invalid, 2);
});

test("a duplicate message id runs the handler once and both asks get the same reply", async (t) => {
  const { system, ref } = await setup(t);
  // The second copy arrives while the first is still running (the handler sleeps 30 ms).
  const [a, b] = await Promise.all([
    ref.ask({ type: "add", a: 20, b: 22 }, { id: "cmd-1" }),
    ref.ask({ type: "add", a: 20, b: 22 }, { id: "cmd-1" }),
  ]);
  assert.equal(a, 42);
  assert.equal(b, 42);
  // And a retry long after the first finished, even with a different body, gets the remembered reply.
  assert.equal(await ref.ask({ type: "add", a: 0, b: 0 }, { id: "cmd-1" }), 42);
  assert.equal(await ref.ask({ type: "add", a: 1, b: 0 }, { id: "cmd-2" }), 1);
  assert.equal((await ref.ask({ type: "count" })).adds, 2);
  assert.equal(system.stats("worker")?.duplicates, 2);
});

test("the dedupe memory is bounded: an id evicted from it runs again", async (t) => {
  const { ref } = await setup(t, { dedupeCapacity: 3 });
  await ref.ask({ type: "add", a: 1, b: 1 }, { id: "old" });
  for (let i = 0; i < 3; i++) await ref.ask({ type: "seen" }, { id: `filler-${i}` });
  await ref.ask({ type: "add", a: 1, b: 1 }, { id: "old" });
  assert.equal((await ref.ask({ type: "count" })).adds, 2);
});

test("replies that fail their schema reject at the asker", async (t) => {
  const { system } = await setup(t);
  const Liar = defineProtocol("liar", { get: { msg: z.object({}), reply: z.number() } });
  // A handler returning the wrong type, as a peer on another version of the protocol would.
  const ref = await system.spawn(
    "liar",
    defineActor(Liar, () => ({ get: () => "not a number" as unknown as number })),
  );
  await assert.rejects(ref.ask({ type: "get" }), InvalidMessageError);
});

test("protocols type messages and replies per message type", async (t) => {
  const { ref } = await setup(t);
  const sum: number = await ref.ask({ type: "add", a: 1, b: 2 });
  const seen: number[] = await ref.ask({ type: "seen" });
  assert.equal(sum, 3);
  assert.deepEqual(seen, []);
  // Compile-time checks (npx tsc): a missing field, a wrong field type, an unknown type.
  // @ts-expect-error b is missing
  await assert.rejects(ref.ask({ type: "add", a: 1 }), InvalidMessageError);
  // @ts-expect-error a must be a number
  await assert.rejects(ref.ask({ type: "add", a: "1", b: 2 }), InvalidMessageError);
  // @ts-expect-error no such message type
  await assert.rejects(ref.ask({ type: "nope" }), InvalidMessageError);
});
