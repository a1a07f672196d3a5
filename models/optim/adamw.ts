// AdamW with torch.optim.AdamW's semantics over a model's parameters.
import { ParamOptimizer } from "./param-optimizer.ts";
import { noDecay as defaultNoDecay } from "./rules.ts";
import { adamwRule, type AdamWHyper } from "./update-rules.ts";
import type { OptimParam, ParamPredicate } from "./types.ts";

export interface AdamWOptimizerOptions {
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
  /** Parameters that get no weight decay; default: those under 2-D (norms, biases). */
  noDecay?: ParamPredicate;
}

export function adamwHyper(o: AdamWOptimizerOptions, defaultBetas: readonly [number, number]): AdamWHyper {
  const betas = o.betas ?? defaultBetas;
  const eps = o.eps ?? 1e-8;
  for (const b of betas) if (!(b >= 0 && b < 1)) throw new Error(`AdamW: betas must lie in [0, 1), got [${betas.join(", ")}]`);
  if (!(eps > 0 && Number.isFinite(eps))) throw new Error(`AdamW: eps must be a finite number > 0, got ${eps}`);
  return { betas: [betas[0], betas[1]], eps };
}

/** Defaults are torch's: betas (0.9, 0.999), eps 1e-8, weight decay 0.01. */
export class AdamW extends ParamOptimizer {
  constructor(params: readonly OptimParam[], o: AdamWOptimizerOptions = {}) {
    const rule = adamwRule(adamwHyper(o, [0.9, 0.999]));
    super(params, { route: () => rule, weightDecay: o.weightDecay ?? 0.01, noDecay: o.noDecay ?? defaultNoDecay });
  }
}
