// The collectives interface, shared by the host backend (typed arrays over the runtime's
// transport, this folder) and the NCCL backend to come (device tensors over NCCL).
//
// A `Collectives` object serves one process group: a sorted list of global ranks, as the
// DeviceMesh's RankLayout gives them (spGroup, fsdpGroup, dpGroup, shardGroup, lossGroup).
// "Member i" means the i-th rank of that list.
//
// The contract every backend keeps:
// - Every member calls the same sequence of collectives on a group, with the same op, dtype
//   and length (and the same root for broadcast). Each call takes the group's next sequence
//   number; messages are matched by (group, sequence), so collectives on different groups
//   may run concurrently, and several on one group may be in flight at once as long as every
//   member issues them in the same order. A member that calls something else at the same
//   sequence number fails with a CollectiveMismatchError naming both calls.
// - Every call has a deadline; a member that never arrives makes the others reject with a
//   CollectiveTimeoutError naming the group, op, sequence number and the missing ranks.
// - Results are bitwise deterministic for a fixed group: reductions accumulate in group
//   order whatever order messages arrive in, and allReduce gives every member the same bits.
//   The host backend sums float32 in float64 and rounds once (reduce.ts); NCCL sums in the
//   buffer's type in its own fixed order, so the two backends agree closely, not bitwise.
// - Use the returned buffer. Whether the input is also written is the backend's affair: the
//   host backend never modifies its input and returns fresh arrays; NCCL works in place and
//   returns its input. So a caller treats the input as handed over until the call settles.

export type ReduceOp = "sum" | "max" | "min" | "avg";

/** What the host backend carries. */
export type HostBuffer = Float32Array | Float64Array | Int32Array;

export type CollectiveOp = "allReduce" | "reduceScatter" | "allGather" | "allToAll" | "broadcast" | "barrier";

export interface CallOptions {
  /** Deadline of this call, overriding the backend's default (e.g. the trainer's step deadline). */
  timeoutMs?: number;
}

/**
 * Collectives over one process group, generic over the buffer they move: `HostBuffer` for the
 * host backend, the native Tensor for NCCL. `T extends B` keeps the caller's concrete type
 * (a Float32Array in, a Float32Array out).
 */
export interface Collectives<B> {
  /** The group's global ranks in order. */
  readonly ranks: readonly number[];
  /** This process's rank and its index in `ranks`. */
  readonly rank: number;
  readonly index: number;
  /** Name used in errors and spans, e.g. `dp[0,4]`. */
  readonly name: string;

  /** Element-wise reduction over the group; every member gets the same result. */
  allReduce<T extends B>(buf: T, op: ReduceOp, opts?: CallOptions): Promise<T>;
  /**
   * Reduces, then hands block i (of `length / groupSize` elements, in order) to member i.
   * The length must be divisible by the group size.
   */
  reduceScatter<T extends B>(buf: T, op: ReduceOp, opts?: CallOptions): Promise<T>;
  /** Concatenates every member's equal-length shard in group order. */
  allGather<T extends B>(shard: T, opts?: CallOptions): Promise<T>;
  /**
   * Splits `buf` into groupSize equal blocks and sends block j to member j; the result's
   * block j is what member j sent to this one. The length must be divisible by the group size.
   */
  allToAll<T extends B>(buf: T, opts?: CallOptions): Promise<T>;
  /** Every member gets `root`'s buffer (`root` is a global rank in the group); all pass the same length. */
  broadcast<T extends B>(buf: T, root: number, opts?: CallOptions): Promise<T>;
  /** Resolves once every member has called it. */
  barrier(opts?: CallOptions): Promise<void>;
}
