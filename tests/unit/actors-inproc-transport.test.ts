import { test } from "node:test";
import assert from "node:assert/strict";
import { InProcTransport } from "../../runtime/transport/inproc.ts";
import { NoResponderError, TransportClosedError } from "../../runtime/errors.ts";
import type { Delivery } from "../../runtime/transport/types.ts";

test("the in-process transport hands the value itself over, in order", async (tc) => {
  const t = new InProcTransport();
  tc.after(() => t.close());
  const got: Delivery[] = [];
  await t.serve("a", (d) => got.push(d));
  const big = { w: new Float32Array(1 << 20) };
  for (let i = 0; i < 3; i++) await t.send("a", i === 1 ? big : i, { n: String(i) });
  await Promise.resolve();
  assert.deepEqual(got.map((d) => d.headers.n), ["0", "1", "2"]);
  assert.equal(got[1]!.body(), big, "the body is the sender's object, not a copy");
  assert.equal(got[0]!.reply, undefined);
});

test("request/reply, no responder, a second server, and close", async (tc) => {
  const t = new InProcTransport();
  tc.after(() => t.close());
  const served = await t.serve("echo", (d) => d.reply?.({ echoed: d.body() }, { via: "echo" }));
  assert.deepEqual(await t.request("echo", 7, {}, 1_000), { body: { echoed: 7 }, headers: { via: "echo" } });
  await assert.rejects(t.serve("echo", () => {}), /already served/);
  await assert.rejects(t.request("nobody", 1, {}, 1_000), NoResponderError);
  // A tell to nobody is dropped, like a publish nobody subscribed to.
  await t.send("nobody", 1, {});

  await t.serve("silent", () => {});
  const pending = t.request("silent", 1, {}, 60_000);
  await served.close();
  await assert.rejects(t.request("echo", 1, {}, 1_000), NoResponderError);
  await t.close();
  await assert.rejects(pending, TransportClosedError);
  await assert.rejects(t.send("echo", 1, {}), TransportClosedError);
});
