import { test } from "node:test";
import assert from "node:assert/strict";
import { MuonWithAdamW, createOptimizer, isEmbeddingOrHead, usesMuon } from "../../models/optim/index.ts";
import { configFromHF, createModel } from "../../models/index.ts";
import type { DType } from "../../native/index.ts";
import { adamwRef, assertNear, muonRef, newtonSchulz5Ref, param, rand, setGrad, toF32, values } from "./optim-reference.ts";

const muonConfig = {
  name: "muon" as const,
  betas: [0.9, 0.95] as [number, number],
  eps: 1e-8,
  weight_decay: 0.1,
  muon: { momentum: 0.95, nesterov: true, ns_steps: 5 },
};

test("the reference Newton-Schulz pushes singular values into the quintic's band (sanity of the reference itself)", () => {
  const [m, n] = [6, 10];
  const X = newtonSchulz5Ref(rand(m * n, 7), m, n);
  // X X^T should be near I: diagonal within [0.5, 1.5]^2, off-diagonal small.
  for (let i = 0; i < m; i++)
    for (let j = 0; j < m; j++) {
      let d = 0;
      for (let k = 0; k < n; k++) d += X[i * n + k]! * X[j * n + k]!;
      if (i === j) assert.ok(d > 0.25 && d < 2.25, `diag ${i}: ${d}`);
      else assert.ok(Math.abs(d) < 0.5, `offdiag ${i},${j}: ${d}`);
    }
});

// Wide and tall hidden matrices through Muon, and a norm weight through the internal AdamW,
// over 4 steps with a changing lr, against Moonlight's algorithm in float64.
function runAgainstReference(dtype: DType, muonTol: { rtol: number; atol: number }, adamTol: { rtol: number; atol: number }) {
  const round = dtype === "float32" ? toF32 : (a: Float64Array) => a;
  const spec: [string, number[]][] = [
    ["model.layers.0.mlp.up_proj.weight", [6, 10]],
    ["model.layers.0.mlp.down_proj.weight", [12, 4]],
    ["model.layers.0.input_layernorm.weight", [10]],
  ];
  const params = spec.map(([name, s], i) => param(name, round(rand(s.reduce((a, b) => a * b, 1), 20 + i)), s, dtype));
  const ref = params.map((p) => ({ p: values(p.value), buf: new Float64Array(p.value.numel), m: new Float64Array(p.value.numel), v: new Float64Array(p.value.numel), step: 0 }));
  const opt = createOptimizer(muonConfig, params);
  try {
    assert.deepEqual([...opt.algorithms().values()], ["muon", "muon", "adamw"]);
    for (let step = 1; step <= 4; step++) {
      const lr = 0.02 / step;
      params.forEach((p, i) => {
        const g = round(rand(p.value.numel, 100 * step + i));
        setGrad(p, g);
        const r = ref[i]!;
        if (p.shape.length === 2) muonRef(r.p, g, r.buf, p.shape[0]!, p.shape[1]!, { lr, momentum: 0.95, nesterov: true, weightDecay: 0.1 });
        else adamwRef(r.p, g, r, { lr, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0 });
      });
      opt.step(lr);
    }
    params.forEach((p, i) => assertNear(values(p.value), ref[i]!.p, p.shape.length === 2 ? muonTol : adamTol, `${dtype} ${p.name}`));
    const st = opt.stateDict();
    assertNear(st.params["model.layers.0.mlp.up_proj.weight"]!.buffers["momentum_buffer"]!, ref[0]!.buf, adamTol, "momentum_buffer");
  } finally {
    opt.dispose();
    for (const p of params) p.dispose();
  }
}

test("Muon + AdamW equal Moonlight's algorithm in float64 over 4 steps (rtol 1e-10)", () => {
  runAgainstReference("float64", { rtol: 1e-10, atol: 1e-12 }, { rtol: 1e-12, atol: 1e-14 });
});

// Newton-Schulz amplifies float32 rounding (it is an iteration over products of the matrix),
// hence a looser bound for Muon's matrices than for AdamW's vector.
test("Muon + AdamW in float32 stay within 1e-4 (Muon) and 1e-5 (AdamW) of the float64 reference", () => {
  runAgainstReference("float32", { rtol: 1e-4, atol: 1e-4 }, { rtol: 1e-5, atol: 1e-6 });
});

test("without Nesterov the momentum buffer itself is orthogonalised", () => {
  const p = param("h.weight", rand(15, 3), [3, 5], "float64");
  const want = values(p.value);
  const buf = new Float64Array(15);
  const opt = new MuonWithAdamW([p], { nesterov: false, momentum: 0.9, weightDecay: 0 });
  try {
    for (let step = 1; step <= 3; step++) {
      const g = rand(15, 40 + step);
      setGrad(p, g);
      muonRef(want, g, buf, 3, 5, { lr: 0.05, momentum: 0.9, nesterov: false, weightDecay: 0 });
      opt.step(0.05);
    }
    assertNear(values(p.value), want, { rtol: 1e-10, atol: 1e-12 }, "h.weight");
  } finally {
    opt.dispose();
    p.dispose();
  }
});

test("the split rule: Muon for 2-D hidden weights; AdamW for embeddings, the LM head, norms and biases", () => {
  const cases: [string, number[], boolean][] = [
    ["model.layers.0.self_attn.q_proj.weight", [16, 16], true],
    ["model.layers.3.mlp.down_proj.weight", [16, 24], true],
    ["transformer.h.0.attn.c_attn.q.weight", [16, 16], true],
    ["model.layers.0.self_attn.q_proj.bias", [16], false],
    ["model.layers.0.input_layernorm.weight", [16], false],
    ["model.embed_tokens.weight", [40, 16], false],
    ["lm_head.weight", [40, 16], false],
    ["transformer.wte.weight", [40, 16], false],
    ["transformer.wpe.weight", [32, 16], false],
    ["gpt_neox.embed_in.weight", [40, 16], false],
    ["output.weight", [40, 16], false],
    ["model.layers.0.conv.weight", [4, 4, 3], false],
  ];
  for (const [name, shape, want] of cases) assert.equal(usesMuon(name, shape), want, name);
  assert.equal(isEmbeddingOrHead("model.layers.0.attention.output.dense.weight"), false);
});

test("on real models the split sends every block matrix to Muon and nothing else", () => {
  const models = [
    createModel(
      configFromHF({ model_type: "qwen2", vocab_size: 40, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: false }),
    ),
    createModel(configFromHF({ model_type: "gpt2", vocab_size: 40, n_positions: 32, n_embd: 16, n_layer: 2, n_head: 4 })),
  ];
  try {
    for (const model of models) {
      const opt = new MuonWithAdamW(model.params());
      try {
        for (const [name, algo] of opt.algorithms()) {
          const p = model.params().find((q) => q.name === name)!;
          const hiddenMatrix = p.shape.length === 2 && /\.(layers|h)\.\d+\./.test(name);
          assert.equal(algo, hiddenMatrix ? "muon" : "adamw", name);
        }
        const names = [...opt.algorithms().keys()];
        assert.ok(names.some((n) => /embed_tokens|wte/.test(n)) && [...opt.algorithms().values()].includes("muon"));
      } finally {
        opt.dispose();
      }
    }
  } finally {
    for (const m of models) m.dispose();
  }
});

test("a custom Muon rule that picks a non-matrix is refused at construction, naming the parameter", () => {
  const b = param("x.bias", rand(4, 1), [4]);
  try {
    assert.throws(() => new MuonWithAdamW([b], { usesMuon: () => true }), /Muon: parameter "x.bias" is 1-D; Muon updates 2-D matrices only/);
    assert.throws(() => new MuonWithAdamW([b], { momentum: 1 }), /momentum must lie in \[0, 1\)/);
  } finally {
    b.dispose();
  }
});
