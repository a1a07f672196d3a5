// The optimizer a job config asks for.
import type { OptimizerSection } from "../../runtime/index.ts";
import { AdamW } from "./adamw.ts";
import { MuonWithAdamW } from "./muon.ts";
import type { OptimParam, Optimizer, ParamPredicate } from "./types.ts";

export interface CreateOptimizerOptions {
  /** Overrides the default decay rule (rules.ts noDecay). */
  noDecay?: ParamPredicate;
  /** Overrides the default Muon routing (rules.ts usesMuon). */
  usesMuon?: ParamPredicate;
}

/** AdamW, or Muon on the hidden matrices with AdamW on the rest (`optimizer.name: muon`); the LR comes per step from the schedule. */
export function createOptimizer(
  c: Pick<OptimizerSection, "name" | "betas" | "eps" | "weight_decay" | "muon">,
  params: readonly OptimParam[],
  o: CreateOptimizerOptions = {},
): Optimizer {
  const common = { betas: c.betas, eps: c.eps, weightDecay: c.weight_decay, ...(o.noDecay ? { noDecay: o.noDecay } : {}) };
  switch (c.name) {
    case "adamw":
      return new AdamW(params, common);
    case "muon":
      return new MuonWithAdamW(params, {
        ...common,
        momentum: c.muon.momentum,
        nesterov: c.muon.nesterov,
        nsSteps: c.muon.ns_steps,
        ...(o.usesMuon ? { usesMuon: o.usesMuon } : {}),
      });
  }
}
