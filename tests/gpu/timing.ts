// Timing for the GPU benchmarks (tests/gpu/*.bench.ts): each figure the median of 5 rounds after
// a warm-up round, each round inside a scope so its tensors are freed.
import { cudaSynchronize, scope } from "../../native/index.ts";
import { loadAddon } from "../../native/addon.ts";

// The raw addon for timed events (as the tests reach it): the public CudaEvent does not time.
const raw = () => loadAddon().cuda!;

const middle = (xs: number[]): number => [...xs].sort((a, b) => a - b)[2]!;

/**
 * Wall seconds per call (reps back to back, then one wait: the host's per-call cost included, as
 * in a step) and device seconds per call (timed events around each call: the kernels alone).
 */
export function timed(fn: () => void, reps = 20): { wall: number; device: number } {
  const round = () =>
    scope(() => {
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) fn();
      cudaSynchronize();
      const wall = (performance.now() - t0) / 1000 / reps;
      const spans = Array.from({ length: reps }, () => {
        const start = raw().recordEvent(0, true);
        fn();
        return [start, raw().recordEvent(0, true)] as const;
      });
      cudaSynchronize();
      const device = spans.reduce((acc, [a, b]) => acc + raw().eventElapsedMs(a, b), 0) / 1000 / reps;
      return { wall, device };
    });
  round();
  const samples = Array.from({ length: 5 }, round);
  return { wall: middle(samples.map((s) => s.wall)), device: middle(samples.map((s) => s.device)) };
}

/**
 * Device microseconds per call of a short kernel: `blocker` (a few ms of GEMM) first, then reps
 * calls between two events, so the host queues them all while the blocker runs and the events
 * time the kernels back to back, not the host's per-call cost.
 */
export function kernelUs(fn: (i: number) => void, blocker: () => void, reps = 20): number {
  const round = () =>
    scope(() => {
      blocker();
      const start = raw().recordEvent(0, true);
      for (let i = 0; i < reps; i++) fn(i);
      const end = raw().recordEvent(0, true);
      cudaSynchronize();
      return (raw().eventElapsedMs(start, end) * 1000) / reps;
    });
  round();
  return middle(Array.from({ length: 5 }, round));
}
