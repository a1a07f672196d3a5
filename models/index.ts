// The public face of models/: Hugging Face interop (safetensors, config.json), model
// families, layers with explicit forward and backward, generation.
import "./families/builtin.ts";
export { SafetensorsReader, DTYPE_BYTES, type SafetensorsDtype, type TensorInfo } from "./hf/safetensors-read.ts";
export { writeSafetensors, atomicWrite, atomicWriteText, type TensorToWrite, type WriteOptions, type WriteDtype } from "./hf/safetensors-write.ts";
export { bf16ToF32, f32ToBf16, f16ToF32, roundToBf16 } from "./hf/half.ts";
export {
  registerModel,
  registeredModelTypes,
  configFromHF,
  configToHF,
  type ConfigCodec,
  type DecoderConfig,
  type Gpt2Config,
  type ModelConfig,
  type HFConfigJson,
  type RopeScaling,
  type LayerType,
} from "./config.ts";
export { CausalLM, packSequences, checkBatch, IGNORE_INDEX, type PackedBatch, type LossResult, type LossOptions, type StepHooks, type AsyncStepHooks, type AsyncLossOptions, type AttentionExchange, type AttentionGrads, type SaveSlot, type HFTensor, type ModelOptions } from "./causal-lm.ts";
export { DecoderLM } from "./decoder.ts";
export { Gpt2LM } from "./gpt2.ts";
export { createModel, loadHF, saveHF, readHFConfig, type LoadResult, type SaveOptions } from "./hf/io.ts";
export { Param } from "./layers/param.ts";
export { Ctx, type BatchTensors } from "./layers/ctx.ts";
export { Linear, LinearGroup, RMSNorm, LayerNorm, Embedding, type Layer, type NormLayer } from "./layers/basic.ts";
export { Attention, type AttentionSpec } from "./layers/attention.ts";
export { SwiGLU, GeluMLP } from "./layers/mlp.ts";
export { Block } from "./layers/block.ts";
export { Init } from "./layers/init.ts";
export { generate, pick, mulberry32, type GenerateOptions, type GenerateResult } from "./generate.ts";
export * from "./optim/index.ts";
export * from "./checkpoint/index.ts";
