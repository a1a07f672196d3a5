// The GPU tests' array comparison (tests/gpu/compare.ts) runs here too: its NaN handling is what
// makes the debug fill catch an element a kernel never wrote, wherever that element is.
import { test } from "node:test";
import assert from "node:assert/strict";
import { assertClose } from "../gpu/compare.ts";

test("assertClose fails on a NaN or infinity in any position, and on a difference over the tolerance", () => {
  const ref = [1, -2, 3, 0.5];
  for (let at = 0; at < ref.length; at++) {
    for (const bad of [NaN, Infinity]) {
      const ours = [...ref];
      ours[at] = bad;
      assert.throws(() => assertClose(ours, ref, 1e-2, "t"), new RegExp(`t: element ${at} is`), `${bad} at ${at}`);
    }
  }
  assert.throws(() => assertClose([1, -2, 3.1, 0.5], ref, 1e-2, "t"), /t: max \|diff\| 1\.000e-1 at 2/);
  assert.equal(assertClose([1, -2, 3.01, 0.5], ref, 1e-2, "t").toFixed(6), (0.01 / 3).toFixed(6));
});
