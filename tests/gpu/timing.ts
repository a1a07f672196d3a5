// Timing for the GPU benchmarks (tests/gpu/*.bench.ts): each figure the median of 5 rounds after
// a warm-up round, each round inside a scope so its tensors are freed.
import { cudaSynchronize, scope } from "../../native/index.ts";
import { loadAddon } from "../../native/addon.ts";

// The raw addon for timed events (as the tests reach it): the public CudaEvent does not time.
const raw = () => loadAddon().cuda!;

/** The median of 5 rounds after a warm-up one. */
function median(round: () => number): number {
  scope(round);
  return Array.from({ length: 5 }, () => scope(round)).sort((a, b) => a - b)[2]!;
}

/** Wall seconds per call: reps back to back, then one wait (the host's per-call cost included, as in a step). */
function wallRound(fn: () => void, reps: number): number {
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) fn();
  cudaSynchronize();
  return (performance.now() - t0) / 1000 / reps;
}

/** Device seconds per call: timed events around each call (the kernels alone). */
function deviceRound(fn: () => void, reps: number): number {
  const spans = Array.from({ length: reps }, () => {
    const start = raw().recordEvent(0, true);
    fn();
    return [start, raw().recordEvent(0, true)] as const;
  });
  cudaSynchronize();
  return spans.reduce((acc, [a, b]) => acc + raw().eventElapsedMs(a, b), 0) / 1000 / reps;
}

export const wallSeconds = (fn: () => void, reps = 20): number => median(() => wallRound(fn, reps));
export const deviceSeconds = (fn: () => void, reps = 20): number => median(() => deviceRound(fn, reps));
/** Both figures, each its own median. */
export const timed = (fn: () => void, reps = 20): { wall: number; device: number } => ({ wall: wallSeconds(fn, reps), device: deviceSeconds(fn, reps) });

/**
 * Device microseconds per call of a short kernel: `blocker` (a few ms of GEMM) first, then reps
 * calls between two events, so the host queues them all while the blocker runs and the events
 * time the kernels back to back, not the host's per-call cost.
 */
export function kernelUs(fn: (i: number) => void, blocker: () => void, reps = 20): number {
  return median(() => {
    blocker();
    const start = raw().recordEvent(0, true);
    for (let i = 0; i < reps; i++) fn(i);
    const end = raw().recordEvent(0, true);
    cudaSynchronize();
    return (raw().eventElapsedMs(start, end) * 1000) / reps;
  });
}
