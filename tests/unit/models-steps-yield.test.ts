import { test } from "node:test";
import assert from "node:assert/strict";
import { runAsync, type Steps } from "../../models/layers/steps.ts";

// A rank's heartbeats are timers on its main thread: a long step run through runAsync with
// hooks that resolve at once (the replicated plan) must still let them fire.
test("runAsync gives the event loop turns during a long synchronous step", async () => {
  function* longStep(): Steps<number> {
    for (let block = 0; block < 12; block++) {
      const until = performance.now() + 40; // 40 ms of "compute" per block, ~480 ms in all
      while (performance.now() < until);
      yield { op: "hook", point: "preForward", block };
    }
    return 7;
  }
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const result = await runAsync(longStep(), { preForward: async () => {}, preBackward: async () => {}, postBackward: async () => {} });
  clearInterval(timer);
  assert.equal(result, 7);
  // 480 ms of compute with a turn at least every ~100 ms: several ticks got through.
  assert.ok(ticks >= 2, `the timer fired ${ticks} times during the step`);
});
