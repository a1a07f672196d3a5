// What one rank's collectives endpoint sends another. One message carries one block of one
// phase of one collective; it is matched by (group, sequence number, phase, sender), so
// arrival order does not matter. `sig` describes the sender's call (op, dtype, length, root)
// so that a member calling something else at the same sequence number is caught at once.
import { z } from "zod";
import type { HostBuffer } from "./types.ts";

export interface Envelope {
  /** Group key: its name with its ranks, e.g. `dp[0,4]`. */
  readonly g: string;
  /** The group's sequence number of the collective. */
  readonly s: number;
  /** Phase within the collective (0, or 1 for the gather half of a large allReduce). */
  readonly p: number;
  /** Sender's global rank. */
  readonly f: number;
  readonly sig: string;
  readonly d: HostBuffer;
}

export const EnvelopeSchema = z.object({
  g: z.string().min(1),
  s: z.number().int().nonnegative(),
  p: z.number().int().min(0).max(1),
  f: z.number().int().nonnegative(),
  sig: z.string(),
  d: z.union([z.instanceof(Float32Array), z.instanceof(Float64Array), z.instanceof(Int32Array)]),
});

/** The address of a rank's collectives endpoint. */
export function collectivesAddress(rank: number): string {
  return `rank.${rank}.coll`;
}
