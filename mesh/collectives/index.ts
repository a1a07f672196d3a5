// The public face of mesh/collectives: the Collectives interface (per process group) and its
// host backend over the runtime's transports. See types.ts for the contract every backend
// keeps and host.ts for the host algorithms.
export type { Collectives, CollectiveOp, CallOptions, HostBuffer, ReduceOp } from "./types.ts";
export {
  CollectiveError,
  CollectiveAbortedError,
  CollectiveMismatchError,
  CollectiveTimeoutError,
  type CollectiveErrorCode,
  type CollectiveErrorInfo,
} from "./errors.ts";
export { HostCollectives, SMALL_ALLREDUCE_BYTES, startInProcessCollectives, type HostCollectivesOptions } from "./host.ts";
export { collectivesAddress } from "./wire.ts";
