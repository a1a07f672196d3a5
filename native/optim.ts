// Optimizer kernels (in place). The optimizer classes that own state live in models/optim.
import { loadAddon, type Handle as H } from "./addon.ts";
import { Tensor, castInto } from "./tensor.ts";
import { scale } from "./ops.ts";
import { cudaFn, deviceOfInputs } from "./cuda.ts";
import { fail, needDtype, needFinite, needFloat, needLive, needRank, needSameDtype, needSameShape, sameShape } from "./check.ts";

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1 on the first update (bias correction). */
  step: number;
  /** A bfloat16 tensor of the param's shape that receives the updated weights (the compute copy of fp32 master weights). */
  bf16Copy?: Tensor;
}

/**
 * torch.optim.AdamW's update: p *= 1 - lr*wd; moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
 * On cuda: param, m and v float32 (master weights and state), grad float32 or bfloat16, and
 * bf16Copy written in the same pass.
 */
export function adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
  const op = "adamwStep";
  needFloat(op, "param", param);
  const inputs: [string, Tensor][] = [["param", param], ["grad", grad], ["m", m], ["v", v]];
  if (o.bf16Copy) inputs.push(["bf16Copy", o.bf16Copy]);
  const cuda = deviceOfInputs(op, ...inputs) === "cuda";
  for (const [name, t] of [["grad", grad], ["m", m], ["v", v]] as const) {
    if (cuda && name === "grad") needFloat(op, name, t);
    else needSameDtype(op, ["param", param], [name, t]);
    needSameShape(op, ["param", param], [name, t]);
  }
  if (cuda) needDtype(op, "param", param, "float32");
  if (o.bf16Copy) {
    needDtype(op, "bf16Copy", o.bf16Copy, "bfloat16");
    needSameShape(op, ["param", param], ["bf16Copy", o.bf16Copy]);
  }
  for (const k of ["lr", "beta1", "beta2", "eps", "weightDecay", "step"] as const) needFinite(op, k, o[k]);
  if (!Number.isInteger(o.step) || o.step < 1) fail(op, `step must be an integer >= 1, got ${o.step}`);
  const args = [param.handle(op, "param"), grad.handle(op, "grad"), m.handle(op, "m"), v.handle(op, "v"), o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.step] as const;
  // The CUDA kernel writes the bf16 copy in the same pass; on CPU it is a cast after the step.
  if (cuda) return cudaFn(op, "adamwStep")(...args, o.bf16Copy?.handle(op, "bf16Copy"));
  loadAddon().adamwStep(...args);
  if (o.bf16Copy) castInto(o.bf16Copy, param);
}

/** One tensor of adamwStepMany: its own learning rate, decay and step count (torch counts per parameter). */
export interface AdamWItem {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
  bf16Copy?: Tensor | undefined;
  lr: number;
  weightDecay: number;
  step: number;
}

/**
 * adamwStep over many tensors; every gradient is taken times gradScale (the clipping factor, so
 * clipped gradients need no pass of their own). The gradients themselves are never changed. On
 * cuda, fp32 gradients go in one launch for up to 384 tensors (the items are checked before any
 * changes); elsewhere, and for bf16 gradients, it is adamwStep per tensor on a scaled copy of
 * its gradient (one tensor's copy at a time).
 */
export function adamwStepMany(items: readonly AdamWItem[], o: { beta1: number; beta2: number; eps: number; gradScale?: number }): void {
  prepareAdamWStepMany(items, o).launch(o.gradScale ?? 1);
}

/** An adamwStepMany whose items are checked (and on cuda laid out for the kernel), launched once by `launch`. */
export interface PreparedAdamWStep {
  launch(gradScale: number): void;
  /** Lets go of a step that will not run (on cuda the tensors' storage it holds); a later launch is refused, and after a launch it does nothing. */
  drop(): void;
}

/**
 * adamwStepMany in two halves: the checks and the items' layout now, the update at `launch`,
 * when the clipping scale is known. A trainer prepares while the device sums the gradients'
 * squares, so the device does not wait on the host between the norm and the update. The items'
 * tensors must stay as they are until the launch (a param, m, v or copy disposed since is
 * refused there; the gradient's storage is held, so it may go). Only the
 * fused path (cuda, fp32 gradients) checks the items here; the per-tensor path's adamwStep checks
 * each at the launch, after the items before it were updated.
 */
export function prepareAdamWStepMany(items: readonly AdamWItem[], o: { beta1: number; beta2: number; eps: number }): PreparedAdamWStep {
  const op = "adamwStepMany";
  for (const k of ["beta1", "beta2", "eps"] as const) needFinite(op, k, o[k]);
  let state: "prepared" | "launched" | "dropped" = "prepared";
  // Checks the scale and marks the step launched: every launch path calls it before any update.
  const beginLaunch = (gradScale: number) => {
    needFinite(op, "gradScale", gradScale);
    if (state !== "prepared") fail(op, state === "launched" ? "a prepared step is launched once" : "this prepared step was dropped");
    state = "launched";
  };
  const drop = () => {
    if (state === "prepared") state = "dropped";
  };
  if (items.length === 0) return { launch: beginLaunch, drop };
  const fused = items.every((it) => it.param.device === "cuda" && it.grad.dtype === "float32");
  if (!fused) {
    return {
      launch(gradScale) {
        beginLaunch(gradScale);
        for (const it of items) {
          const grad = gradScale !== 1 ? scale(it.grad, gradScale) : it.grad;
          try {
            adamwStep(it.param, grad, it.m, it.v, { lr: it.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: it.weightDecay, step: it.step, ...(it.bf16Copy ? { bf16Copy: it.bf16Copy } : {}) });
          } finally {
            if (grad !== it.grad) grad.dispose();
          }
        }
      },
      drop,
    };
  }
  const raw = items.map((it, i): [H, H, H, H, H | null, number, number, number] => {
    // A sound item costs no error text (the step's host time); a faulty one is explained by checkAdamWItem.
    if (!adamWItemSound(it)) checkAdamWItem(it, `items[${i}]`);
    const { param, grad, m, v, bf16Copy } = it;
    return [param.handle(op), grad.handle(op), m.handle(op), v.handle(op), bf16Copy?.handle(op) ?? null, it.lr, it.weightDecay, it.step];
  });
  const prepared = cudaFn(op, "adamwStepManyPrepare")(raw, o.beta1, o.beta2, o.eps);
  return {
    launch(gradScale) {
      // The prepared step keeps its tensors' storage: a gradient disposed since is still read
      // whole, but a param, m, v or copy disposed since would be written where no one reads it
      // (a lost update): refused, and nothing changes.
      for (let i = 0; i < items.length; i++) {
        const it = items[i]!;
        if (it.param.disposed || it.m.disposed || it.v.disposed || it.bf16Copy?.disposed) {
          fail(op, `items[${i}]: a tensor it updates was disposed after the step was prepared`);
        }
      }
      beginLaunch(gradScale);
      cudaFn(op, "adamwStepManyLaunch")(prepared, gradScale);
    },
    drop() {
      if (state !== "prepared") return;
      drop();
      cudaFn(op, "adamwStepManyDrop")(prepared);
    },
  };
}

const live = (t: Tensor | undefined): t is Tensor => t instanceof Tensor && !t.disposed;

/** checkAdamWItem's conditions without building its messages. */
function adamWItemSound(it: AdamWItem): boolean {
  const { param, grad, m, v, bf16Copy } = it;
  if (!live(param) || !live(grad) || !live(m) || !live(v)) return false;
  if (param.dtype !== "float32" || m.dtype !== "float32" || v.dtype !== "float32") return false;
  if (!sameShape(param.shape, grad.shape) || !sameShape(param.shape, m.shape) || !sameShape(param.shape, v.shape)) return false;
  if (bf16Copy && (!live(bf16Copy) || bf16Copy.dtype !== "bfloat16" || !sameShape(param.shape, bf16Copy.shape))) return false;
  return Number.isFinite(it.lr) && Number.isFinite(it.weightDecay) && Number.isInteger(it.step) && it.step >= 1;
}

/** Throws the Error that names what is wrong with the item (fused path: float32 param, grad, m and v of one shape). */
function checkAdamWItem(it: AdamWItem, where: string): void {
  const op = "adamwStepMany";
  for (const [name, t] of [["grad", it.grad], ["m", it.m], ["v", it.v]] as const) needSameShape(op, [`${where}.param`, it.param], [`${where}.${name}`, t]);
  for (const [name, t] of [["param", it.param], ["m", it.m], ["v", it.v]] as const) needDtype(op, `${where}.${name}`, t, "float32");
  if (it.bf16Copy) {
    needDtype(op, `${where}.bf16Copy`, it.bf16Copy, "bfloat16");
    needSameShape(op, [`${where}.param`, it.param], [`${where}.bf16Copy`, it.bf16Copy]);
  }
  for (const k of ["lr", "weightDecay", "step"] as const) needFinite(op, `${where}.${k}`, it[k]);
  if (!Number.isInteger(it.step) || it.step < 1) fail(op, `${where}.step must be an integer >= 1, got ${it.step}`);
}

export interface NewtonSchulzOptions {
  /** cuda only: the tiled reference GEMM instead of cuBLASLt (tests of the fallback path). */
  reference?: boolean;
}

/**
 * Keller Jordan's quintic Newton-Schulz orthogonalisation of g[M,N] (5 steps by default), in g's
 * dtype. On cuda (g float32 or bfloat16) it runs in bf16 with fp32 accumulation, as his reference
 * does; on the CPU in g's precision (float32 or float64).
 */
export function newtonSchulz5(g: Tensor, steps = 5, o: NewtonSchulzOptions = {}): Tensor {
  const op = "newtonSchulz5";
  needFloat(op, "g", g);
  needRank(op, "g", g, [2]);
  if (!Number.isInteger(steps) || steps < 0) fail(op, `steps must be a non-negative integer, got ${steps}`);
  const h = g.handle(op, "g");
  const out = g.device === "cuda" ? cudaFn(op, "newtonSchulz5")(h, steps, o.reference ?? false) : loadAddon().newtonSchulz5(h, steps);
  return new Tensor(out, g.dtype, g.shape);
}

export interface MuonOptions {
  lr: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  nsSteps?: number;
  /** A bfloat16 tensor of the param's shape that receives the updated weights (the compute copy of fp32 master weights). */
  bf16Copy?: Tensor;
}

/**
 * Muon in Moonlight's form, in place: buf = mu*buf + g; u = NS5(nesterov ? g + mu*buf : buf);
 * p = p*(1 - lr*wd) - lr * 0.2*sqrt(max(M,N)) * u. On cuda: param, grad and momentum float32,
 * Newton-Schulz in bf16 (see newtonSchulz5), and bf16Copy written in the update's pass.
 */
export function muonStep(param: Tensor, grad: Tensor, momentumBuf: Tensor, o: MuonOptions): void {
  const op = "muonStep";
  const inputs: [string, Tensor][] = [["param", param], ["grad", grad], ["momentum", momentumBuf]];
  if (o.bf16Copy) inputs.push(["bf16Copy", o.bf16Copy]);
  for (const [name, t] of inputs) needLive(op, name, t);
  const cuda = deviceOfInputs(op, ...inputs) === "cuda";
  needFloat(op, "param", param);
  if (cuda) needDtype(op, "param", param, "float32");
  needRank(op, "param", param, [2]);
  for (const [name, t] of [["grad", grad], ["momentum", momentumBuf]] as const) {
    needSameDtype(op, ["param", param], [name, t]);
    needSameShape(op, ["param", param], [name, t]);
  }
  if (o.bf16Copy) {
    needDtype(op, "bf16Copy", o.bf16Copy, "bfloat16");
    needSameShape(op, ["param", param], ["bf16Copy", o.bf16Copy]);
  }
  const mu = o.momentum ?? 0.95;
  const wd = o.weightDecay ?? 0;
  const nsSteps = o.nsSteps ?? 5;
  needFinite(op, "lr", o.lr);
  needFinite(op, "momentum", mu);
  needFinite(op, "weightDecay", wd);
  if (!Number.isInteger(nsSteps) || nsSteps < 0) fail(op, `nsSteps must be a non-negative integer, got ${nsSteps}`);
  const args = [param.handle(op, "param"), grad.handle(op, "grad"), momentumBuf.handle(op, "momentum"), o.lr, mu, o.nesterov ?? true, wd, nsSteps] as const;
  // The CUDA update writes the bf16 copy in the same pass; on CPU it is a cast after the step.
  if (cuda) return cudaFn(op, "muonStep")(...args, o.bf16Copy?.handle(op, "bf16Copy"));
  loadAddon().muonStep(...args);
  if (o.bf16Copy) castInto(o.bf16Copy, param);
}
