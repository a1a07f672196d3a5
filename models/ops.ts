// The native op API as models/ uses it (contract: /work/notes/native-api.md). Layers reach
// the addon only through this module.
import * as native from "../native/index.ts";

export const ops = native;
export type { Tensor, DType, Device, RopeOptions, AttentionOptions, PendingSum } from "../native/index.ts";
