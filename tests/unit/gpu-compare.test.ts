// The GPU tests' comparisons (tests/gpu/compare.ts) run here too: their NaN handling is what
// makes the debug fill catch an element a kernel never wrote, wherever that element is, and
// the strict form must neither pass an all-zero reference nor lend absolute slack.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor } from "../../native/index.ts";
import { assertClose, assertRelClose, assertTensorClose } from "../gpu/compare.ts";

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

test("assertRelClose judges on the reference's scale alone and refuses an all-zero reference", () => {
  const ref = [1e-3, -2e-3, 4e-3];
  // assertClose's absolute slack (1e-6) would pass this 5e-7 difference; rel 1e-5 of 4e-3 does not.
  assert.doesNotThrow(() => assertClose([1e-3, -2e-3, 4e-3 + 5e-7], ref, 1e-5, "t"));
  assert.throws(() => assertRelClose([1e-3, -2e-3, 4e-3 + 5e-7], ref, 1e-5, "t"), /t: max \|diff\| 5\.000e-7 at 2/);
  assert.equal(assertRelClose([1e-3, -2e-3, 4e-3 + 2e-8], ref, 1e-5, "t").toFixed(6), (2e-8 / 4e-3).toFixed(6));
  assert.throws(() => assertRelClose([0, 0], [0, -0], 1e-2, "t"), /t: the reference is all zeros/);
  assert.throws(() => assertRelClose([NaN, 1], [1, 1], 1e-2, "t"), /t: element 0 is NaN/);
});

test("assertTensorClose wants the result on cuda", () => {
  const t = tensor(Float32Array.of(1, 2), [2]);
  assert.throws(() => assertTensorClose(t, t, 1e-2, "t"), /t: result should stay on cuda/);
  t.dispose();
});
