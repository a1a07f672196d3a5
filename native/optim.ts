// Optimizer kernels (in place). The optimizer classes that own state live in models/optim.
import { loadAddon } from "./addon.ts";
import { Tensor } from "./tensor.ts";
import { fail, needFinite, needFloat, needRank, needSameDtype, needSameShape } from "./check.ts";

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1 on the first update (bias correction). */
  step: number;
}

/** torch.optim.AdamW's update: p *= 1 - lr*wd; moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps). */
export function adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
  const op = "adamwStep";
  needFloat(op, "param", param);
  for (const [name, t] of [["grad", grad], ["m", m], ["v", v]] as const) {
    needSameDtype(op, ["param", param], [name, t]);
    needSameShape(op, ["param", param], [name, t]);
  }
  for (const k of ["lr", "beta1", "beta2", "eps", "weightDecay", "step"] as const) needFinite(op, k, o[k]);
  if (!Number.isInteger(o.step) || o.step < 1) fail(op, `step must be an integer >= 1, got ${o.step}`);
  loadAddon().adamwStep(
    param.handle(op, "param"),
    grad.handle(op, "grad"),
    m.handle(op, "m"),
    v.handle(op, "v"),
    o.lr,
    o.beta1,
    o.beta2,
    o.eps,
    o.weightDecay,
    o.step,
  );
}

/** Keller Jordan's quintic Newton-Schulz orthogonalisation of g[M,N] (5 steps by default). */
export function newtonSchulz5(g: Tensor, steps = 5): Tensor {
  const op = "newtonSchulz5";
  needFloat(op, "g", g);
  needRank(op, "g", g, [2]);
  if (!Number.isInteger(steps) || steps < 0) fail(op, `steps must be a non-negative integer, got ${steps}`);
  return new Tensor(loadAddon().newtonSchulz5(g.handle(op, "g"), steps), g.dtype, g.shape);
}

export interface MuonOptions {
  lr: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  nsSteps?: number;
}

/**
 * Muon in Moonlight's form, in place: buf = mu*buf + g; u = NS5(nesterov ? g + mu*buf : buf);
 * p = p*(1 - lr*wd) - lr * 0.2*sqrt(max(M,N)) * u.
 */
export function muonStep(param: Tensor, grad: Tensor, momentumBuf: Tensor, o: MuonOptions): void {
  const op = "muonStep";
  needFloat(op, "param", param);
  needRank(op, "param", param, [2]);
  for (const [name, t] of [["grad", grad], ["momentum", momentumBuf]] as const) {
    needSameDtype(op, ["param", param], [name, t]);
    needSameShape(op, ["param", param], [name, t]);
  }
  const mu = o.momentum ?? 0.95;
  const wd = o.weightDecay ?? 0;
  needFinite(op, "lr", o.lr);
  needFinite(op, "momentum", mu);
  needFinite(op, "weightDecay", wd);
  loadAddon().muonStep(
    param.handle(op, "param"),
    grad.handle(op, "grad"),
    momentumBuf.handle(op, "momentum"),
    o.lr,
    mu,
    o.nesterov ?? true,
    wd,
    o.nsSteps ?? 5,
  );
}
