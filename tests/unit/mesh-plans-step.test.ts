// What the plans rely on in models/: the async step (lossAsync) is the sync step's twin,
// awaits its hooks before going on, and frees everything but the gradients without a
// scope; a Param keeps its logical shape while its value is released.
import { test } from "node:test";
import assert from "node:assert/strict";
import { liveTensors, tensor } from "../../native/index.ts";
import type { Param } from "../../models/index.ts";
import { batchOf, makeModel, tinyConfigs } from "./mesh-plans-kit.ts";

const grads = (ps: readonly Param[]) => ps.map((p) => Array.from(p.grad!.toFloat64Array()));

for (const family of ["qwen3", "gpt2"] as const) {
  test(`${family}: lossAsync gives loss() bit for bit and leaves only the gradients live (with and without recompute)`, async () => {
    for (const recompute of [false, true]) {
      const batch = batchOf([6, 4, 5], 3);
      const a = makeModel(tinyConfigs[family]!, "float64", recompute);
      const b = makeModel(tinyConfigs[family]!, "float64", recompute);
      const ra = a.loss(batch, { gradScale: 0.1 });
      const before = liveTensors().count;
      const rb = await b.lossAsync(batch, { gradScale: 0.1 });
      assert.equal(liveTensors().count - before, b.params().length, "one gradient per parameter, nothing else");
      assert.deepEqual(rb, ra);
      assert.deepEqual(grads(b.params()), grads(a.params()));
      a.dispose();
      b.dispose();
    }
  });
}

test("lossAsync awaits each hook: a block's weights may be released and only set again after an await", async () => {
  const model = makeModel(tinyConfigs.qwen2!, "float64");
  const ref = makeModel(tinyConfigs.qwen2!, "float64");
  const batch = batchOf([6, 4, 5], 3);
  const stash = new Map<Param, Float64Array>();
  const unitParams = (u: number | "outer") =>
    u === "outer" ? model.params().filter((p) => !model.blocks.some((b) => b.params().includes(p))) : model.blocks[u]!.params();
  const release = (u: number | "outer") => {
    for (const p of unitParams(u)) {
      stash.set(p, p.value.toArray() as Float64Array);
      p.release();
    }
  };
  const restore = async (u: number | "outer") => {
    await new Promise((r) => setTimeout(r, 1));
    for (const p of unitParams(u)) if (!p.held) p.set(tensor(stash.get(p)!, p.shape, { dtype: p.dtype }));
  };
  for (const u of [0, 1, "outer"] as const) release(u);
  const order: string[] = [];
  const r = await model.lossAsync(batch, {
    hooks: {
      preForward: async (u) => {
        order.push(`f:${u}`);
        await restore(u);
      },
      preBackward: (u) => void order.push(`b:${u}`),
      postBackward: (u) => void order.push(`B:${u}`),
    },
  });
  assert.deepEqual(order, ["f:outer", "f:0", "f:1", "b:1", "B:1", "b:0", "B:0", "b:outer", "B:outer"]);
  assert.deepEqual(r, ref.loss(batch));
  assert.deepEqual(grads(model.params()), grads(ref.params()));
  model.dispose();
  ref.dispose();
});

test("a released Param keeps name, shape and dtype, refuses reads with a clear error, and takes a value again", () => {
  const model = makeModel(tinyConfigs.gpt2!, "float64");
  const p = model.blocks[0]!.attn.q.weight;
  const data = p.value.toArray();
  p.release();
  assert.equal(p.held, false);
  assert.deepEqual(p.shape, [16, 16]);
  assert.equal(p.dtype, "float64");
  assert.throws(() => p.value, /transformer\.h\.0\.attn\.c_attn\.q\.weight: its value is released/);
  assert.throws(() => p.set(tensor(new Float64Array(4), [4], { dtype: "float64" })), /shape \[4\] given for \[16, 16\]/);
  p.set(tensor(data, [16, 16], { dtype: "float64" }));
  assert.deepEqual(p.value.toFloat64Array(), Float64Array.from(data as Float64Array));
  model.dispose();
});
