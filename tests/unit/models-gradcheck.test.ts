// Every layer's backward, and every family's whole-model backward, against central finite
// differences in float64. Tolerances: |analytic - numeric| <= 1e-7 + 1e-5 * |numeric|
// (float64 with eps 1e-5: truncation error ~1e-10, rounding ~1e-11).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Attention,
  Block,
  Ctx,
  Embedding,
  GeluMLP,
  Init,
  LayerNorm,
  Linear,
  RMSNorm,
  SwiGLU,
  createModel,
  type BatchTensors,
  type Layer,
} from "../../models/index.ts";
import { liveTensors, randn, tensor, type Tensor } from "../../native/index.ts";
import { assertClose, checkModelGradients, numericGrad, randomizeParams, sampleIndices, tinyBatch, tinyConfigs, values } from "./models-testkit.ts";

const RTOL = 1e-5;
const ATOL = 1e-7;
const F64 = "float64" as const;

function batchTensors(cu: number[]): BatchTensors {
  const T = cu[cu.length - 1]!;
  const positions: number[] = [];
  for (let b = 0; b + 1 < cu.length; b++) for (let i = 0; i < cu[b + 1]! - cu[b]!; i++) positions.push(i);
  return {
    tokens: tensor(new Int32Array(T), [T], { dtype: "int32" }),
    positions: tensor(Int32Array.from(positions), [T], { dtype: "int32" }),
    cuSeqlens: tensor(Int32Array.from(cu), [cu.length], { dtype: "int32" }),
    numTokens: T,
  };
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** L = sum(layer(x) * G) for a fixed random G: checks dL/dx and dL/dparams. */
function checkLayer(layer: Layer, x: Tensor, bt: BatchTensors): void {
  const ctx = new Ctx(bt);
  const y = layer.forward(x, ctx);
  const g = randn(y.shape, { seed: 99, dtype: F64 });
  const gv = values(g);
  const dx = values(layer.backward(g, ctx));
  ctx.free(new Set([x]));
  const L = (xx: Tensor) => {
    const c = new Ctx(bt);
    const yy = layer.forward(xx, c);
    const v = dot(values(yy), gv);
    c.free(new Set([xx]));
    yy.dispose();
    return v;
  };
  const xv = values(x);
  for (const i of sampleIndices(x.numel, 6, 3)) {
    const eps = 1e-5;
    const up = Float64Array.from(xv);
    up[i]! += eps;
    const down = Float64Array.from(xv);
    down[i]! -= eps;
    const xu = tensor(up, x.shape, { dtype: F64 });
    const xd = tensor(down, x.shape, { dtype: F64 });
    const num = (L(xu) - L(xd)) / (2 * eps);
    xu.dispose();
    xd.dispose();
    assertClose(dx[i]!, num, `dL/dx[${i}]`, RTOL, ATOL);
  }
  layer.params().forEach((p, k) => {
    const grad = values(p.grad!);
    for (const i of sampleIndices(p.value.numel, 4, k + 5)) assertClose(grad[i]!, numericGrad(p, i, () => L(x)), `dL/d${p.name}[${i}]`, RTOL, ATOL);
  });
}

function input(shape: number[], seed: number): Tensor {
  return randn(shape, { seed, std: 1, dtype: F64 });
}

const init = () => new Init(7, 0.3, F64);

test("Linear (with bias), RMSNorm and LayerNorm backward match finite differences", () => {
  const bt = batchTensors([0, 5]);
  const x = input([5, 6], 1);
  for (const layer of [new Linear(init(), "l", 6, 4, true), new RMSNorm(init(), "n", 6, 1e-6), new LayerNorm(init(), "ln", 6, 1e-5)]) {
    randomizeParams(layer.params(), 11);
    checkLayer(layer, x, bt);
  }
});

test("SwiGLU and GELU MLPs backward match finite differences", () => {
  const bt = batchTensors([0, 4]);
  const x = input([4, 6], 2);
  for (const layer of [new SwiGLU(init(), "mlp", 6, 10, true), new GeluMLP(init(), "mlp", 6, 10)]) {
    randomizeParams(layer.params(), 12);
    checkLayer(layer, x, bt);
  }
});

test("attention backward: GQA, q/k norm, biases, llama3 RoPE, sliding window, several sequences", () => {
  const bt = batchTensors([0, 3, 8]);
  const x = input([8, 8], 3);
  const attn = new Attention(init(), {
    hidden: 8,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 4,
    qkvBias: true,
    oBias: true,
    qkNormEps: 1e-6,
    rope: { theta: 100, scaling: { type: "llama3", factor: 4, lowFreqFactor: 1, highFreqFactor: 2, originalMaxPositionEmbeddings: 8 } },
    window: 2,
    names: { q: "q", k: "k", v: "v", o: "o" },
  });
  randomizeParams(attn.params(), 13);
  checkLayer(attn, x, bt);
  // GPT-2 style: no RoPE, no norm, full causal.
  const plain = new Attention(init(), { hidden: 8, numHeads: 2, numKvHeads: 2, headDim: 4, qkvBias: true, oBias: true, names: { q: "q", k: "k", v: "v", o: "o" } });
  randomizeParams(plain.params(), 14);
  checkLayer(plain, x, bt);
});

test("a block's backward matches finite differences, and recomputation gives the same gradients", () => {
  const bt = batchTensors([0, 2, 6]);
  const x = input([6, 8], 4);
  const make = (recompute: boolean) => {
    const i = init();
    const b = new Block(
      new RMSNorm(i, "n1", 8, 1e-6),
      new Attention(i, { hidden: 8, numHeads: 2, numKvHeads: 1, headDim: 4, qkvBias: false, oBias: false, rope: { theta: 1e4 }, names: { q: "q", k: "k", v: "v", o: "o" } }),
      new RMSNorm(i, "n2", 8, 1e-6),
      new SwiGLU(i, "mlp", 8, 12, false),
      recompute,
    );
    randomizeParams(b.params(), 15);
    return b;
  };
  const plain = make(false);
  checkLayer(plain, x, bt);
  const re = make(true);
  const g = randn([6, 8], { seed: 5, dtype: F64 });
  const c1 = new Ctx(bt);
  const c2 = new Ctx(bt);
  plain.params().forEach((p) => p.zeroGrad());
  const y1 = plain.forward(x, c1);
  const y2 = re.forward(x, c2);
  assert.deepEqual(values(y2), values(y1));
  assert.deepEqual(values(re.backward(g, c2)), values(plain.backward(g, c1)));
  re.params().forEach((p, k) => assert.deepEqual(values(p.grad!), values(plain.params()[k]!.grad!), p.name));
});

test("embedding backward scatters rows (repeated ids add up)", () => {
  const emb = new Embedding(init(), "e", 5, 3);
  const ids = tensor(Int32Array.from([1, 3, 1]), [3], { dtype: "int32" });
  const dy = tensor(Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]), [3, 3], { dtype: F64 });
  assert.deepEqual(values(emb.forward(ids)), Float64Array.from([...values(emb.weight.value).slice(3, 6), ...values(emb.weight.value).slice(9, 12), ...values(emb.weight.value).slice(3, 6)]));
  emb.backward(dy, ids);
  assert.deepEqual(Array.from(values(emb.weight.grad!)), [0, 0, 0, 8, 10, 12, 0, 0, 0, 4, 5, 6, 0, 0, 0]);
});

for (const [family, config] of Object.entries(tinyConfigs)) {
  test(`${family}: whole-model gradients match finite differences (float64)`, () => {
    const model = createModel(config, { seed: 3, dtype: F64 });
    randomizeParams(model.params(), 21, 0.4);
    const checked = checkModelGradients(model, tinyBatch(), 2, RTOL, ATOL);
    assert.ok(checked >= 2 * model.params().length - 2);
    model.dispose();
  });
}

test("a training step frees everything it made: only the gradients stay", () => {
  const model = createModel(tinyConfigs.qwen3!, { seed: 1 });
  const before = liveTensors().count;
  model.loss(tinyBatch());
  assert.equal(liveTensors().count, before + model.params().length);
  model.loss(tinyBatch());
  assert.equal(liveTensors().count, before + model.params().length, "a second step adds nothing");
  model.zeroGrad();
  assert.equal(liveTensors().count, before);
  model.recompute = true;
  model.loss(tinyBatch());
  model.evalLoss(tinyBatch());
  model.logits(tinyBatch()).dispose();
  model.zeroGrad();
  assert.equal(liveTensors().count, before);
  model.dispose();
  assert.equal(liveTensors().count, before - model.params().length);
});

test("whole-model recomputation gives bit-identical loss and gradients", () => {
  for (const family of ["qwen3", "gpt2"]) {
    const a = createModel(tinyConfigs[family]!, { seed: 6, dtype: F64 });
    const b = createModel(tinyConfigs[family]!, { seed: 6, dtype: F64, recompute: true });
    const ra = a.loss(tinyBatch());
    const rb = b.loss(tinyBatch());
    assert.equal(rb.lossSum, ra.lossSum);
    b.params().forEach((p, k) => assert.deepEqual(values(p.grad!), values(a.params()[k]!.grad!), `${family} ${p.name}`));
    a.dispose();
    b.dispose();
  }
});
