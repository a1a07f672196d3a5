// Muon for the hidden matrices, AdamW for everything else (Moonlight's arrangement): one
// learning rate and one weight decay for both, since Muon's update is scaled to AdamW's RMS.
import { ParamOptimizer } from "./param-optimizer.ts";
import { noDecay as defaultNoDecay, usesMuon as defaultUsesMuon } from "./rules.ts";
import { adamwRule, muonRule } from "./update-rules.ts";
import { adamwHyper, type AdamWOptimizerOptions } from "./adamw.ts";
import type { OptimParam, ParamPredicate } from "./types.ts";

export interface MuonOptimizerOptions extends AdamWOptimizerOptions {
  /** Momentum of Muon's buffer (default 0.95). */
  momentum?: number;
  /** Nesterov momentum (default true). */
  nesterov?: boolean;
  /** Newton-Schulz iterations (default 5). */
  nsSteps?: number;
  /** The parameters Muon updates; default: 2-D and not an embedding or the LM head (see usesMuon). */
  usesMuon?: ParamPredicate;
}

/** Defaults are Moonlight's: momentum 0.95 Nesterov, 5 NS steps, weight decay 0.1, AdamW betas (0.9, 0.95), eps 1e-8. */
export class MuonWithAdamW extends ParamOptimizer {
  constructor(params: readonly OptimParam[], o: MuonOptimizerOptions = {}) {
    const momentum = o.momentum ?? 0.95;
    const nsSteps = o.nsSteps ?? 5;
    if (!(momentum >= 0 && momentum < 1)) throw new Error(`Muon: momentum must lie in [0, 1), got ${momentum}`);
    if (!Number.isInteger(nsSteps) || nsSteps < 1) throw new Error(`Muon: nsSteps must be an integer >= 1, got ${nsSteps}`);
    const muon = muonRule({ momentum, nesterov: o.nesterov ?? true, nsSteps });
    const adamw = adamwRule(adamwHyper(o, [0.9, 0.95]));
    const pick = o.usesMuon ?? defaultUsesMuon;
    super(params, {
      route: (p) => {
        if (!pick(p.name, p.value.shape)) return adamw;
        if (p.value.shape.length !== 2) throw new Error(`Muon: parameter "${p.name}" is ${p.value.shape.length}-D; Muon updates 2-D matrices only`);
        return muon;
      },
      weightDecay: o.weightDecay ?? 0.1,
      noDecay: o.noDecay ?? defaultNoDecay,
    });
  }
}
