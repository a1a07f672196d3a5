// The per-parameter updates, each a native in-place kernel over the parameter, its gradient
// and its state buffers.
import { ops, type Tensor } from "../ops.ts";
import type { Algorithm } from "./types.ts";

export interface UpdateRule {
  readonly algorithm: Algorithm;
  /** The state buffers, by torch's names, each shaped like the parameter. */
  readonly buffers: readonly string[];
  /** `step` counts this parameter's updates from 1; `weightDecay` is 0 where the decay rule says so. */
  apply(value: Tensor, grad: Tensor, state: readonly Tensor[], o: UpdateOptions): void;
  /**
   * The same update over many tensors at once, checked and laid out now and launched by the
   * returned step, each gradient multiplied by its gradScale (one launch on cuda, and the
   * clipping scale needs no pass of its own). Rules without it are applied per tensor after the
   * gradient is scaled in place.
   */
  prepareMany?(updates: readonly Update[]): PreparedUpdates;
}

/** Updates made ready by prepareMany (native's PreparedAdamWStep): `launch` once, or `drop` to let go of what they hold. */
export interface PreparedUpdates {
  launch(gradScale: number): void;
  drop(): void;
}

export interface UpdateOptions {
  lr: number;
  step: number;
  weightDecay: number;
  computeCopy?: Tensor | undefined;
}

export interface Update {
  value: Tensor;
  grad: Tensor;
  state: readonly Tensor[];
  o: UpdateOptions;
}

export interface AdamWHyper {
  betas: readonly [number, number];
  eps: number;
}

/** torch.optim.AdamW (decoupled decay, bias correction, eps outside the corrected sqrt). */
export function adamwRule(h: AdamWHyper): UpdateRule {
  return {
    algorithm: "adamw",
    buffers: ["exp_avg", "exp_avg_sq"],
    apply(value, grad, [m, v], o) {
      // The compute copy is written by the same pass (one read of the updated weights).
      const copy = o.computeCopy ? { bf16Copy: o.computeCopy } : {};
      ops.adamwStep(value, grad, m!, v!, { lr: o.lr, beta1: h.betas[0], beta2: h.betas[1], eps: h.eps, weightDecay: o.weightDecay, step: o.step, ...copy });
    },
    prepareMany(updates) {
      return ops.prepareAdamWStepMany(
        updates.map((u) => ({ param: u.value, grad: u.grad, m: u.state[0]!, v: u.state[1]!, bf16Copy: u.o.computeCopy, lr: u.o.lr, weightDecay: u.o.weightDecay, step: u.o.step })),
        { beta1: h.betas[0], beta2: h.betas[1], eps: h.eps },
      );
    },
  };
}

export interface MuonHyper {
  momentum: number;
  nesterov: boolean;
  nsSteps: number;
}

/**
 * Muon as in Moonlight: buf = mu*buf + g; u = NS5(nesterov ? g + mu*buf : buf);
 * p = p*(1 - lr*wd) - lr*0.2*sqrt(max(M,N))*u. The 0.2*sqrt(max(M,N)) factor gives the
 * update AdamW's typical RMS, so Muon shares AdamW's learning rate and weight decay.
 */
export function muonRule(h: MuonHyper): UpdateRule {
  return {
    algorithm: "muon",
    buffers: ["momentum_buffer"],
    apply(value, grad, [buf], o) {
      // On cuda the compute copy is written by the update's pass, as AdamW's.
      const copy = o.computeCopy ? { bf16Copy: o.computeCopy } : {};
      ops.muonStep(value, grad, buf!, { lr: o.lr, momentum: h.momentum, nesterov: h.nesterov, weightDecay: o.weightDecay, nsSteps: h.nsSteps, ...copy });
    },
  };
}
