// Learning-rate schedules, indexed by the optimizer step about to be taken (0 for the first).
//
// Warmup (every schedule): lr * (s + 1) / warmup_steps for s < warmup_steps, so the first
// update already moves (no wasted step at lr 0) and step warmup_steps - 1 reaches lr.
// cosine: from lr at s = warmup_steps to min_lr = min_lr_ratio * lr at the last step
// (s = max_steps - 1), half a cosine between.
// wsd (warmup-stable-decay, MiniCPM): lr until the last D = ceil(decay_fraction * max_steps)
// steps, then the "1-sqrt" cooldown of Hägele et al. 2024 (which beat linear and cosine
// cooldowns there): lr_min + (lr - lr_min) * (1 - sqrt(k / D)) at the k-th decay step
// (k = 1..D), reaching min_lr at the last step.
// constant: lr after warmup. Past max_steps every schedule holds its last value.
import type { ScheduleSection } from "../../runtime/index.ts";

export type LrSchedule = (step: number) => number;

export interface ScheduleTarget {
  /** The peak learning rate. */
  lr: number;
  /** The steps the run will take (trainer.max_steps). */
  maxSteps: number;
}

export function createSchedule(s: ScheduleSection, t: ScheduleTarget): LrSchedule {
  const { lr, maxSteps } = t;
  const W = s.warmup_steps;
  if (!(lr > 0 && Number.isFinite(lr))) throw new Error(`schedule: lr must be a finite number > 0, got ${lr}`);
  if (!Number.isInteger(maxSteps) || maxSteps < 1) throw new Error(`schedule: maxSteps must be an integer >= 1, got ${maxSteps}`);
  if (!Number.isInteger(W) || W < 0 || W > maxSteps) throw new Error(`schedule: warmup_steps must be an integer in [0, ${maxSteps}], got ${W}`);
  if (!(s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1)) throw new Error(`schedule: min_lr_ratio must lie in [0, 1], got ${s.min_lr_ratio}`);
  const minLr = s.min_lr_ratio * lr;
  const last = maxSteps - 1;

  let after: (step: number) => number;
  switch (s.name) {
    case "constant":
      after = () => lr;
      break;
    case "cosine":
      after = (step) => {
        const span = last - W;
        const progress = span <= 0 ? 1 : Math.min(1, (step - W) / span);
        return minLr + (lr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
      };
      break;
    case "wsd": {
      if (!(s.decay_fraction > 0 && s.decay_fraction <= 1)) throw new Error(`schedule: decay_fraction must lie in (0, 1], got ${s.decay_fraction}`);
      const D = Math.ceil(s.decay_fraction * maxSteps);
      if (W + D > maxSteps) throw new Error(`schedule: warmup_steps + ceil(decay_fraction * maxSteps) exceeds maxSteps (${W} + ${D} > ${maxSteps})`);
      const decayStart = maxSteps - D;
      after = (step) => {
        if (step < decayStart) return lr;
        const k = Math.min(D, step - decayStart + 1);
        return minLr + (lr - minLr) * (1 - Math.sqrt(k / D));
      };
      break;
    }
  }
  return (step) => {
    if (!Number.isInteger(step) || step < 0) throw new Error(`schedule: step must be an integer >= 0, got ${step}`);
    return step < W ? (lr * (step + 1)) / W : after(step);
  };
}
