// Throughput of the CUDA kernels at the Qwen2.5-1.5B step's shapes (T = 8192, D = 1536,
// FFN 8960, 12 q heads of 128): GB/s for the memory-bound ones (bytes as in native/NOTES.md:
// what the kernel must move, re-reads counted where it re-reads) beside the floor at 3 TB/s,
// TFLOP/s for the GEMMs (cuBLASLt, the default where built in, beside the tiled reference) at
// the step's projection shapes, the fused linear cross-entropy beside its three GEMMs, and the
// GEMMs into fp32 / with a bias. Fills the "measured" column of native/NOTES.md.
//
//   node --import tsx tests/gpu/cuda-ops.bench.ts      (on the GPU machine; not a test)
//   node --import tsx tests/gpu/cuda-ops.bench.ts --optimizer    (the optimizer rows alone)
//   node --import tsx tests/gpu/cuda-ops.bench.ts --step-gemms   (every projection GEMM of a 0.5B / 1.5B step)
//
// Each row: `us`, the wall time per call (REPS calls back to back, then one wait: the host's
// per-call cost included, as in a step), and `deviceUs`, the device time per call (timed events
// around each call), of which GB/s and TFLOP/s are computed; the median of 5 rounds after a warm-up.
import {
  addBias, addInto, adamwStep, adamwStepMany, buildInfo, cast, cudaMemoryStats, cudaSynchronize, embedding, embeddingBackward, globalNorm,
  linearCrossEntropy, matmul, matmulInto, muonStep, randn, rmsnorm, rmsnormBackward, rmsnormResidual, rope, ropeTable, ropeWithTable, scope, sumRows, swiglu,
  sumSquaresOf, swigluBackward, tensor, zeros, type Tensor,
} from "../../native/index.ts";
import { loadAddon, type Handle as H } from "../../native/addon.ts";
import { timed, wallSeconds } from "./timing.ts";

const REPS = 20;
const T = 8192;
const D = 1536;
const F = 8960;
const V = 151_936;
const N_OPT = 100_000_000; // elements for the optimizer-sized kernels (GB/s does not depend on n at this size)

// The raw addon (the prepared AdamW's launch, as the tests reach it).
const raw = loadAddon().cuda!;

type Row = { kernel: string; shape: string; us: number; deviceUs?: number; gbs?: number; floorUs?: number; tflops?: number; stepMs?: number };
const rows: Row[] = [];
const COPY_BYTES_PER_S = 3.0e12; // the floor's bandwidth (native/NOTES.md)
/** Each row is printed as it is measured, so a run cut short still reports what it measured. */
function record(row: Row): void {
  rows.push(row);
  console.log(JSON.stringify(row));
}
/** GB/s and TFLOP/s are of the device time (the kernels'); us is the wall time per call. */
function bytes(kernel: string, shape: string, moved: number, fn: () => void): void {
  const { wall, device } = timed(fn);
  record({ kernel, shape, us: wall * 1e6, deviceUs: device * 1e6, gbs: moved / device / 1e9, floorUs: (moved / COPY_BYTES_PER_S) * 1e6 });
}
function flops(kernel: string, shape: string, n: number, fn: () => void): void {
  const { wall, device } = timed(fn);
  record({ kernel, shape, us: wall * 1e6, deviceUs: device * 1e6, tflops: n / device / 1e12 });
}

const bf = (shape: number[], seed: number): Tensor => randn(shape, { seed, dtype: "bfloat16", device: "cuda" }).keep();

if (process.argv.includes("--optimizer")) {
  optimizerRows();
  printRows();
  process.exit(0);
}

if (process.argv.includes("--step-gemms")) {
  stepGemmRows();
  printRows();
  process.exit(0);
}

/**
 * Every projection GEMM of a training step at the Qwen2.5 0.5B and 1.5B shapes, as the layers
 * call them (models/layers/basic.ts): forward y = x W^T (+ bias for q, k, v), backward
 * dx (+)= dy W (accumulating where a layer's input feeds several projections) and the weight
 * gradient dW += dy^T x into fp32. Each row's shape says where a step's GEMM time goes (the
 * `stepMs` column: device time times the layer count).
 */
function stepGemmRows(): void {
  const models = [
    { name: "0.5B", layers: 24, d: 896, dq: 896, dkv: 128, f: 4864 },
    { name: "1.5B", layers: 28, d: D, dq: D, dkv: 256, f: F },
  ];
  for (const m of models) {
    const projections = [
      { name: "q", k: m.d, n: m.dq, bias: true, accumulateDx: false },
      { name: "k", k: m.d, n: m.dkv, bias: true, accumulateDx: true },
      { name: "v", k: m.d, n: m.dkv, bias: true, accumulateDx: true },
      { name: "o", k: m.dq, n: m.d, bias: false, accumulateDx: false },
      { name: "gate", k: m.d, n: m.f, bias: false, accumulateDx: false },
      { name: "up", k: m.d, n: m.f, bias: false, accumulateDx: true },
      { name: "down", k: m.f, n: m.d, bias: false, accumulateDx: false },
    ];
    for (const [i, p] of projections.entries()) {
      const x = bf([T, p.k], 60 + i);
      const w = bf([p.n, p.k], 70 + i);
      const dy = bf([T, p.n], 80 + i);
      const bias = p.bias ? bf([p.n], 90 + i) : undefined;
      const dx = zeros([T, p.k], "bfloat16", "cuda").keep();
      const dw = zeros([p.n, p.k], "float32", "cuda").keep();
      const n = 2 * T * p.k * p.n;
      const shape = `T ${T}, in ${p.k}, out ${p.n}`;
      const row = (what: string, fn: () => void) => {
        const { wall, device } = timed(fn);
        record({ kernel: `${m.name} ${p.name} ${what}`, shape, us: wall * 1e6, deviceUs: device * 1e6, tflops: n / device / 1e12, stepMs: (device * 1e3 * m.layers) });
      };
      row(p.bias ? "fwd (bias epilogue)" : "fwd", () => matmul(x, w, { transB: true, bias }).dispose());
      row(p.accumulateDx ? "dx (accumulate)" : "dx", () => matmulInto(dx, dy, w, { accumulate: p.accumulateDx }));
      row("dW (fp32, accumulate)", () => matmulInto(dw, dy, x, { transA: true, accumulate: true }));
      for (const t of [x, w, dy, dx, dw, bias]) t?.dispose();
    }
  }
}

const x = bf([T, D], 1);
const w = bf([D], 2);
const dy = bf([T, D], 3);
const { rstd } = rmsnorm(x, w, 1e-6);
rstd.keep();
bytes("rmsnorm fwd", `[${T}, ${D}] bf16`, 2 * T * D * 2, () => void rmsnorm(x, w, 1e-6));
// The fused backward reads dy and x once and writes dx (dw's partials are 1.6 MB): 3 tensors.
bytes("rmsnorm bwd", `[${T}, ${D}] bf16`, 3 * T * D * 2, () => void rmsnormBackward(dy, x, w, rstd));
// With the residual stream's gradient added into dx in the same pass: a fourth tensor read.
const dres = bf([T, D], 18);
bytes("rmsnorm bwd + residual grad", `[${T}, ${D}] bf16`, 4 * T * D * 2, () => void rmsnormBackward(dy, x, w, rstd, dres));
bytes("rmsnorm + residual fwd", `[${T}, ${D}] bf16`, 4 * T * D * 2, () => void rmsnormResidual(x, dy, w, 1e-6));

const QKV = D + 2 * 2 * 128;
const qkvOut = bf([T, QKV], 9);
const qkvBias = bf([QKV], 10);
bytes("addBias", `[${T}, ${QKV}] bf16`, 2 * T * QKV * 2, () => void addBias(qkvOut, qkvBias));
bytes("sumRows (bias grad)", `[${T}, ${QKV}] bf16 -> fp32`, T * QKV * 2, () => void sumRows(qkvOut));
// The step's calls: q's bias gradient and k's (v's alike); lm-head-rope.bench.ts times them behind a full queue.
bytes("sumRows (q bias grad)", `[${T}, ${D}] bf16 -> fp32`, T * D * 2, () => void sumRows(dy));
const dyK = bf([T, 256], 19);
bytes("sumRows (k bias grad)", `[${T}, 256] bf16 -> fp32`, T * 256 * 2, () => void sumRows(dyK));

const gate = bf([T, F], 4);
const up = bf([T, F], 5);
bytes("swiglu fwd", `[${T}, ${F}] bf16`, 3 * T * F * 2, () => void swiglu(gate, up));
bytes("swiglu bwd", `[${T}, ${F}] bf16`, 5 * T * F * 2, () => void swigluBackward(gate, gate, up));

const q = bf([T, 12, 128], 6);
const pos = tensor(Int32Array.from({ length: T }, (_, i) => i % 2048), [T], { dtype: "int32", device: "cuda" }).keep();
bytes("rope fwd (q)", `[${T}, 12, 128] bf16`, 2 * T * 12 * 128 * 2, () => void rope(q, pos, { theta: 1e6 }));
const kHeads = bf([T, 2, 128], 11);
bytes("rope fwd (k)", `[${T}, 2, 128] bf16`, 2 * T * 2 * 128 * 2, () => void rope(kHeads, pos, { theta: 1e6 }));
// Through the per-batch cos/sin table (made once per batch, read by every layer): x in and out only.
const ropeTab = ropeTable(pos, 128, { theta: 1e6 }).keep();
bytes("rope fwd (q), per-batch table", `[${T}, 12, 128] bf16`, 2 * T * 12 * 128 * 2, () => void ropeWithTable(q, ropeTab));
bytes("rope fwd (k), per-batch table", `[${T}, 2, 128] bf16`, 2 * T * 2 * 128 * 2, () => void ropeWithTable(kHeads, ropeTab));
bytes("ropeTable (once per batch)", `[${T}] -> [${T}, 2, 64] fp32`, T * 128 * 4, () => void ropeTable(pos, 128, { theta: 1e6 }));

const emb = bf([V, D], 7);
const ids = tensor(Int32Array.from({ length: T }, (_, i) => (i * 7919) % V), [T], { dtype: "int32", device: "cuda" }).keep();
bytes("embedding fwd", `${T} ids x ${D} bf16`, 2 * T * D * 2, () => void embedding(emb, ids));
bytes("embedding bwd", `dW [${V}, ${D}] fp32`, T * D * 2 + V * D * 4 + 2 * T * D * 4, () => void embeddingBackward(dy, ids, V));

optimizerRows();

/**
 * The optimizer's kernels: per tensor at N_OPT elements, then over the Qwen2.5-1.5B parameter
 * list as the trainer calls them (adamwStepMany with fp32 gradients and bf16 copies, the global
 * norm's sumSquaresOf), each against its floor.
 */
function optimizerRows(): void {
  const p = zeros([N_OPT], "float32", "cuda").keep();
  const g = bf([N_OPT], 8);
  const m = zeros([N_OPT], "float32", "cuda").keep();
  const v = zeros([N_OPT], "float32", "cuda").keep();
  const copy = zeros([N_OPT], "bfloat16", "cuda").keep();
  let step = 0;
  bytes("AdamW + bf16 copy (bf16 grad)", `${N_OPT}`, N_OPT * 28, () =>
    adamwStep(p, g, m, v, { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: ++step, bf16Copy: copy }),
  );
  bytes("cast fp32 -> bf16", `${N_OPT}`, N_OPT * 6, () => void cast(p, "bfloat16"));
  bytes("addInto fp32 += bf16", `${N_OPT}`, N_OPT * 10, () => addInto(p, g, 1e-3));
  {
    const s = wallSeconds(() => void globalNorm([p]));
    record({ kernel: "globalNorm (fp32, host read)", shape: `${N_OPT}`, us: s * 1e6, gbs: (N_OPT * 4) / s / 1e9 });
  }
  for (const t of [p, g, m, v, copy]) t.dispose();
  modelRows();
}

/** The Qwen2.5-1.5B parameter list: the tied embedding, 28 layers of q/k/v (with biases), o, gate, up, down and two norms, the final norm. */
function qwen15bShapes(): number[][] {
  const KV = 2 * 128;
  const layer = [[D], [D, D], [D], [KV, D], [KV], [KV, D], [KV], [D, D], [D], [F, D], [F, D], [D, F]];
  return [[V, D], ...Array.from({ length: 28 }, () => layer).flat(), [D]];
}

function modelRows(): void {
  const shapes = qwen15bShapes();
  const n = shapes.reduce((acc, s) => acc + s.reduce((a, b) => a * b, 1), 0);
  // Random gradients are drawn on the host, so tensors of one shape share one (read-only here;
  // a layer's 1.4 GB of traffic lies between two reads of it, so L2 does not serve the second).
  const gradOf = new Map<string, Tensor>();
  const items = shapes.map((shape, i) => ({
    param: zeros(shape, "float32", "cuda").keep(),
    grad: gradOf.get(`${shape}`) ?? gradOf.set(`${shape}`, randn(shape, { seed: 1000 + i, device: "cuda" }).keep()).get(`${shape}`)!,
    m: zeros(shape, "float32", "cuda").keep(),
    v: zeros(shape, "float32", "cuda").keep(),
    bf16Copy: zeros(shape, "bfloat16", "cuda").keep(),
    lr: 1e-4,
    weightDecay: shape.length > 1 ? 0.1 : 0,
    step: 0,
  }));
  const tag = `Qwen2.5-1.5B: ${shapes.length} tensors, ${(n / 1e9).toFixed(3)}B`;
  // 30 bytes a parameter: p, g, m, v read; p, m, v and the bf16 copy written.
  const step = () => {
    for (const it of items) it.step++;
    adamwStepMany(items, { beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 0.5 });
  };
  bytes("adamwStepMany (fp32 grad, bf16 copy, clip scale)", tag, n * 30, step);
  {
    // The host's share of a call (checks in TypeScript and the binding, the launch), while the
    // device is still busy with the calls before: it adds to a step only where it exceeds the
    // device time or the device waits for it (after the clipping norm's host read).
    const host = Array.from({ length: 11 }, () => {
      const t0 = performance.now();
      step();
      return performance.now() - t0;
    }).sort((a, b) => a - b)[5]!;
    cudaSynchronize();
    record({ kernel: "  adamwStepMany host time a call", shape: tag, us: host * 1e3 });
    // Of which the binding (reading the item table, its checks, the launch): the table built once.
    const table = items.map((it): [H, H, H, H, H | null, number, number, number] => [
      it.param.handle("bench"), it.grad.handle("bench"), it.m.handle("bench"), it.v.handle("bench"), it.bf16Copy.handle("bench"), it.lr, it.weightDecay, 1,
    ]);
    const binding = Array.from({ length: 11 }, () => {
      const t0 = performance.now();
      raw.adamwStepManyLaunch(raw.adamwStepManyPrepare(table, 0.9, 0.95, 1e-8), 0.5);
      return performance.now() - t0;
    }).sort((a, b) => a - b)[5]!;
    cudaSynchronize();
    record({ kernel: "  of which the binding", shape: tag, us: binding * 1e3 });
  }
  // The sum is read by the host in each call, so the device time includes that copy's wait.
  bytes("sumSquaresOf (fp32 grads, host read)", tag, n * 4, () => void sumSquaresOf(items.map((it) => it.grad)));
  for (const it of items) for (const t of [it.param, it.m, it.v, it.bf16Copy]) t.dispose();
  for (const t of gradOf.values()) t.dispose();
}

// The lm head's fused cross-entropy at the step's shape beside the three GEMMs it is made of,
// each at full size through cuBLASLt (the fused op runs them per chunk of tokens).
{
  const labels = tensor(Int32Array.from({ length: T }, (_, i) => (i * 104729) % V), [T], { dtype: "int32", device: "cuda" }).keep();
  const hidden = bf([T, D], 12);
  flops("linearCrossEntropy (fwd + bwd)", `x [${T},${D}], w [${V},${D}] bf16`, 3 * 2 * T * D * V, () => void linearCrossEntropy(hidden, emb, labels, { gradScale: 1 / T }));
  const dlogits = bf([T, V], 13);
  flops("  logits = x w^T", `[${T},${D}]x[${V},${D}]^T bf16`, 2 * T * D * V, () => matmul(hidden, emb, { transB: true }).dispose());
  flops("  dx = dlogits w", `[${T},${V}]x[${V},${D}] bf16`, 2 * T * D * V, () => matmul(dlogits, emb).dispose());
  const dW = zeros([V, D], "float32", "cuda").keep();
  flops("  dw += dlogits^T x (fp32 out)", `[${T},${V}]^T x [${T},${D}] -> fp32`, 2 * T * D * V, () => matmulInto(dW, dlogits, hidden, { transA: true, accumulate: true }));
  for (const t of [labels, hidden, dlogits, dW]) t.dispose();
}

// Weight-gradient GEMMs accumulated into fp32, beside the same GEMM with a bf16 output; q/k/v with its bias epilogue.
{
  const xIn = bf([T, D], 14);
  const dh = bf([T, F], 15);
  const dWup = zeros([F, D], "float32", "cuda").keep();
  flops("matmulInto mlp up dW += dy^T x (fp32, beta 1)", `[${T},${F}]^T x [${T},${D}]`, 2 * T * D * F, () => matmulInto(dWup, dh, xIn, { transA: true, accumulate: true }));
  flops("matmul mlp up dW (bf16 out)", `[${T},${F}]^T x [${T},${D}]`, 2 * T * D * F, () => matmul(dh, xIn, { transA: true }).dispose());
  const wQkv = bf([QKV, D], 16);
  flops("matmul qkv + bias (epilogue)", `[${T},${D}]x[${QKV},${D}]^T + b`, 2 * T * D * QKV, () => matmul(xIn, wQkv, { transB: true, bias: qkvBias }).dispose());
  flops("matmul qkv (no bias)", `[${T},${D}]x[${QKV},${D}]^T`, 2 * T * D * QKV, () => matmul(xIn, wQkv, { transB: true }).dispose());
  for (const t of [xIn, dh, dWup, wQkv]) t.dispose();
}

// Each product is disposed at once: REPS live lm-head outputs ([T, V] bf16, 2.5 GB each) would not fit.
const gemms: { name: string; m: number; k: number; n: number }[] = [
  { name: "mlp up / gate", m: T, k: D, n: F },
  { name: "mlp down", m: T, k: F, n: D },
  { name: "qkv", m: T, k: D, n: D + 2 * 2 * 128 },
  { name: "lm head", m: T, k: D, n: V },
];
const fastPath = buildInfo().cublasLt ? "cuBLASLt" : "reference (no cuBLASLt in this build)";
for (const [i, { name, m, k, n }] of gemms.entries()) {
  const a = bf([m, k], 20 + i);
  const b = bf([k, n], 30 + i);
  for (const reference of [false, true]) {
    flops(`matmul ${name} (${reference ? "reference" : fastPath})`, `[${m},${k}]x[${k},${n}] bf16`, 2 * m * n * k, () =>
      matmul(a, b, { reference }).dispose(),
    );
  }
  a.dispose();
  b.dispose();
}

printRows();

function printRows(): void {
  console.table(
    rows.map((r) => ({ ...r, us: r.us.toFixed(1), deviceUs: r.deviceUs?.toFixed(1), gbs: r.gbs?.toFixed(0), floorUs: r.floorUs?.toFixed(1), tflops: r.tflops?.toFixed(1) })),
  );
  console.log(JSON.stringify({ device: "cuda", memory: cudaMemoryStats(), rows }));
}

// Muon: one muonStep on the mlp down projection's shape ([1536, 8960] fp32 master with its bf16
// copy; 5 Newton-Schulz steps in bf16), in TFLOP/s of its GEMMs: per step 4 s^2 l (X X^T and
// B X) + 2 s^3 (A A), s = 1536, l = 8960. The elementwise passes (momentum + norm, normalise,
// update + copy: ~30 B/element, ~0.14 ms at the floor) count as time, not FLOPs.
{
  const [s, l] = [1536, 8960];
  const param = randn([s, l], { seed: 40, std: 0.02, device: "cuda" }).keep();
  const grad = randn([s, l], { seed: 41, device: "cuda" }).keep();
  const momentum = zeros([s, l], "float32", "cuda").keep();
  const weights = zeros([s, l], "bfloat16", "cuda").keep();
  flops("muonStep (5 NS steps, bf16 copy)", `[${s}, ${l}] fp32`, 5 * (4 * s * s * l + 2 * s * s * s), () =>
    muonStep(param, grad, momentum, { lr: 1e-3, weightDecay: 0.1, bf16Copy: weights }),
  );
  for (const t of [param, grad, momentum, weights]) t.dispose();
}
