import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import {
  ActorSystem,
  defineActor,
  defineProtocol,
  EscalatedFailure,
  type ActorSystemEvents,
  type SupervisionPolicy,
} from "../../runtime/actors/index.ts";
import { InProcTransport } from "../../runtime/transport/inproc.ts";
import { ActorStoppedError, HandlerError, NoResponderError } from "../../runtime/errors.ts";

const Child = defineProtocol("child", {
  inc: { msg: z.object({}) },
  get: { msg: z.object({}), reply: z.object({ n: z.number(), incarnation: z.number() }) },
  crash: { msg: z.object({}) },
  throw: { msg: z.object({}) },
});

const Parent = defineProtocol("parent", {
  whoami: { msg: z.object({}), reply: z.number() },
});

/** Shared across incarnations so the test can see what each lifecycle did. */
interface Journal {
  starts: number;
  cleanups: number;
  failStartFrom?: number;
}

function childDef(journal: Journal) {
  return defineActor(Child, (ctx) => {
    journal.starts++;
    if (journal.failStartFrom !== undefined && ctx.incarnation >= journal.failStartFrom) {
      throw new Error(`start ${ctx.incarnation} refused`);
    }
    ctx.onStop(() => {
      journal.cleanups++;
    });
    let n = 0;
    return {
      inc: () => {
        n++;
      },
      get: () => ({ n, incarnation: ctx.incarnation }),
      crash: () => ctx.fail(new Error("lost my device")),
      throw: () => {
        throw new Error("bad request");
      },
    };
  });
}

function parentDef(childPolicy: SupervisionPolicy, journal: Journal) {
  return defineActor(Parent, async (ctx) => {
    await ctx.spawn("child", childDef(journal), { supervision: childPolicy });
    return { whoami: () => ctx.incarnation };
  });
}

type EventName = keyof ActorSystemEvents;

function record(system: ActorSystem) {
  const log: string[] = [];
  const names: EventName[] = ["failed", "restarted", "stopped", "escalated"];
  for (const name of names) {
    system.on(name, (e: { address: string; directive?: string; reason?: string; incarnation?: number }) => {
      const detail = e.directive ?? e.reason ?? (e.incarnation !== undefined ? String(e.incarnation) : "");
      log.push(`${name} ${e.address}${detail ? ` ${detail}` : ""}`);
    });
  }
  return log;
}

function next<E extends EventName>(system: ActorSystem, name: E, address: string, timeoutMs = 3_000) {
  return new Promise<ActorSystemEvents[E][0]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${name}" for ${address} within ${timeoutMs} ms`)), timeoutMs);
    const on = (e: { address: string }) => {
      if (e.address !== address) return;
      clearTimeout(timer);
      system.off(name, on as never);
      resolve(e as ActorSystemEvents[E][0]);
    };
    system.on(name, on as never);
  });
}

function newSystem(t: TestContext) {
  const transport = new InProcTransport();
  const system = new ActorSystem({ transport, name: "test", log: () => {} });
  t.after(async () => {
    await system.shutdown();
    await transport.close();
  });
  return system;
}

/** A parent that spawns "child" with `childPolicy`, torn down when the test ends. */
async function setup(
  t: TestContext,
  childPolicy: SupervisionPolicy,
  parentPolicy: SupervisionPolicy = { strategy: "stop" },
  journal: Journal = { starts: 0, cleanups: 0 },
) {
  const system = newSystem(t);
  const log = record(system);
  const parent = await system.spawn("parent", parentDef(childPolicy, journal), { supervision: parentPolicy });
  return { system, log, parent, child: system.ref("child", Child), journal };
}

test("a handler that throws fails only its message, not the actor", async (t) => {
  const { child, log, journal } = await setup(t, { strategy: "restart" });
  await child.tell({ type: "inc" });
  await assert.rejects(child.ask({ type: "throw" }), HandlerError);
  assert.deepEqual(await child.ask({ type: "get" }), { n: 1, incarnation: 0 });
  assert.deepEqual(log, []);
  assert.equal(journal.starts, 1);
});

test("restart: a failed child starts again with fresh state, its cleanups run and its mailbox waits", async (t) => {
  const { system, child, log, journal } = await setup(t, { strategy: "restart" });
  await child.tell({ type: "inc" });
  await child.tell({ type: "inc" });
  assert.deepEqual(await child.ask({ type: "get" }), { n: 2, incarnation: 0 });
  const restarted = next(system, "restarted", "child");
  await child.tell({ type: "crash" });
  // Sent right behind the crash: it waits in the mailbox and the new incarnation answers it.
  const after = child.ask({ type: "get" });
  await restarted;
  assert.deepEqual(await after, { n: 0, incarnation: 1 });
  assert.deepEqual(log, ["failed child restart", "restarted child 1"]);
  assert.equal(journal.starts, 2);
  assert.equal(journal.cleanups, 1);
});

test("stop: a failed child is stopped and its address goes silent; the parent lives on", async (t) => {
  const { system, parent, child, log } = await setup(t, { strategy: "stop" });
  const stopped = next(system, "stopped", "child");
  await child.tell({ type: "crash" });
  assert.equal((await stopped).reason, "failed");
  await assert.rejects(child.ask({ type: "get" }), (e: unknown) => e instanceof NoResponderError || e instanceof ActorStoppedError);
  assert.equal(await parent.ask({ type: "whoami" }), 0);
  assert.deepEqual(log, ["failed child stop", "stopped child failed"]);
});

test("escalate: a failed child fails its parent, whose own policy (restart) rebuilds both", async (t) => {
  const { system, parent, child, log, journal } = await setup(t, { strategy: "escalate" }, { strategy: "restart" });
  await child.tell({ type: "inc" });
  const parentFailed = next(system, "failed", "parent");
  const parentRestarted = next(system, "restarted", "parent");
  await child.tell({ type: "crash" });
  const failure = await parentFailed;
  assert.ok(failure.error instanceof EscalatedFailure);
  assert.equal(failure.error.child, "child");
  assert.match(failure.error.message, /lost my device/);
  await parentRestarted;
  assert.equal(await parent.ask({ type: "whoami" }), 1);
  // The parent's new incarnation spawned a new child: fresh state, first incarnation.
  assert.deepEqual(await child.ask({ type: "get" }), { n: 0, incarnation: 0 });
  assert.deepEqual(log, [
    "failed child escalate",
    "stopped child escalated",
    "failed parent restart",
    "restarted parent 1",
  ]);
  assert.equal(journal.starts, 2);
});

test("a child that keeps failing exhausts its restart budget and escalates; at the root, the system hears of it", async (t) => {
  // The child's restarts throw in `start` (a lifecycle crash), so each restart is itself a failure.
  const journal: Journal = { starts: 0, cleanups: 0, failStartFrom: 1 };
  const childPolicy = { strategy: "restart", maxRestarts: 2, withinMs: 60_000 } as const;
  const { system, log } = await setup(t, childPolicy, { strategy: "escalate" }, journal);
  const escalated = next(system, "escalated", "parent");
  await system.ref("child", Child).tell({ type: "crash" });
  const e = await escalated;
  assert.ok(e.error instanceof EscalatedFailure);
  assert.match(e.error.message, /start 2 refused/);
  assert.equal(journal.starts, 3);
  assert.deepEqual(log, [
    "failed child restart",
    "failed child restart",
    "failed child escalate",
    "stopped child escalated",
    "failed parent escalate",
    "stopped parent escalated",
    "escalated parent",
  ]);
  assert.deepEqual(system.addresses(), []);
});

test("a first start that throws rejects the spawn and leaves nothing behind", async (t) => {
  const system = newSystem(t);
  const journal: Journal = { starts: 0, cleanups: 0, failStartFrom: 0 };
  await assert.rejects(system.spawn("child", childDef(journal)), /start 0 refused/);
  assert.deepEqual(system.addresses(), []);
  // The address is free again.
  await system.spawn("child", childDef({ starts: 0, cleanups: 0 }));
});

const Slow = defineProtocol("slow", {
  failThenFinish: { msg: z.object({}), reply: z.number() },
  probe: { msg: z.object({}), reply: z.object({ incarnation: z.number(), overlapped: z.boolean() }) },
});

test("a restart does not overlap the failed incarnation's running handler with the new one's", async (t) => {
  const system = newSystem(t);
  let inFlight = 0;
  let overlapped = false;
  const enter = () => {
    if (inFlight++ > 0) overlapped = true;
  };
  const ref = await system.spawn(
    "slow",
    defineActor(Slow, (ctx) => ({
      failThenFinish: async () => {
        enter();
        ctx.fail(new Error("fails mid-handler"));
        // The restart completes while this handler still runs.
        await new Promise((r) => setTimeout(r, 100));
        inFlight--;
        return ctx.incarnation;
      },
      probe: () => {
        enter();
        inFlight--;
        return { incarnation: ctx.incarnation, overlapped };
      },
    })),
  );
  const restarted = next(system, "restarted", "slow");
  const first = ref.ask({ type: "failThenFinish" });
  const probe = ref.ask({ type: "probe" });
  await restarted;
  // The old incarnation's handler still answers its asker.
  assert.equal(await first, 0);
  assert.deepEqual(await probe, { incarnation: 1, overlapped: false });
});
