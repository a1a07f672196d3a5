// Random inputs for the GPU tests that compare the CUDA backend with the CPU's. Each test file
// runs in its own process, so each draws its own base seed: fresh inputs every run, and the
// seed named in failure messages (seeded) replays one.
import { randomInt } from "node:crypto";
import { type Tensor, cast, randn } from "../../native/index.ts";

export const BASE_SEED = randomInt(1, 2 ** 40);
let seedCounter = 0;

/** A seed not used before in this run. */
export const nextSeed = (): number => BASE_SEED + seedCounter++;

/** A failure message's label with the run's base seed. */
export const seeded = (what: string): string => `${what} [seed ${BASE_SEED}]`;

/** The same random values on both backends: cpu float32, gpu in dtype (bf16-rounded for both when bf16). */
export function pairOf(shape: number[], dtype: "float32" | "bfloat16", std = 1): { cpu: Tensor; gpu: Tensor } {
  const host = randn(shape, { seed: nextSeed(), std, dtype });
  const cpu = cast(host, "float32");
  const gpu = host.to("cuda");
  host.dispose();
  return { cpu, gpu };
}
