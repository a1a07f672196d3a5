// The TypeScript face of the native addon. Everything outside native/ imports from here.
export { buildInfo, cpuThreads, cachedBytes, emptyCache, type BuildInfo, type CudaMatmulCounts, type CudaMemoryStats } from "./addon.ts";
export {
  cudaAvailable,
  cudaAttentionKernels,
  cudaAttentionFamilies,
  cudaMatmulCounts,
  cudaMemoryStats,
  cudaResetPeak,
  cudaEmptyCache,
  cudaSetDebugFill,
  cudaSynchronize,
  startCudaProfile,
  stopCudaProfile,
  summarizeCudaProfile,
  type CudaProfileSummary,
  CudaEvent,
  type CudaStream,
} from "./cuda.ts";
export type { DType, Device } from "./dtype.ts";
export { dtypeBytes } from "./dtype.ts";
export { sameShape } from "./check.ts";
export { Tensor, tensor, zeros, empty, randn, cast, castInto, copyInto, scope, keep, liveTensors, type TensorOptions, type LiveTensors } from "./tensor.ts";
export { matmul, add, mul, scale, scaleInPlace, addInto, addBias, sumRows, splitColumns, catColumns, catRows, splitRows, sumSquares, sumSquaresOf, sumSquaresOfQueued, globalNorm, type MatmulOptions, type PendingSum } from "./ops.ts";
export { matmulInto, type MatmulIntoOptions } from "./ops.ts";
export {
  embedding,
  embeddingBackward,
  embeddingBackwardInto,
  rmsnorm,
  rmsnormBackward,
  rmsnormResidual,
  layernorm,
  layernormBackward,
  swiglu,
  swigluBackward,
  swigluPacked,
  swigluPackedBackward,
  gelu,
  geluBackward,
  softmax,
  softmaxBackward,
} from "./nn.ts";
export { rope, ropeBackward, ropeFrequencies, type RopeOptions, type RopeScaling, type RopeFrequencies } from "./rope.ts";
export { ropeTable, ropeWithTable, ropeBackwardWithTable, ropeQKWithTable, ropeQKBackwardWithTable, ropeQKVSplit, ropeQKVBackwardCat, type RopeQKVBackwardCatOptions, type RopeTableDtype } from "./rope.ts";
export { attention, attentionBackward, type AttentionOptions } from "./attention.ts";
export { linearCrossEntropy, linearCrossEntropyLoss, type LinearCrossEntropyOptions } from "./loss.ts";
export { adamwStep, adamwStepMany, prepareAdamWStepMany, newtonSchulz5, muonStep, type AdamWOptions, type AdamWItem, type PreparedAdamWStep, type MuonOptions, type NewtonSchulzOptions } from "./optim.ts";
