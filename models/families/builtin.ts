// The families that ship with Tessera, registered under their HF model_types.
import { registerModel } from "../config.ts";
import { DECODER_MODEL_TYPES, decoderCodec } from "./decoder-config.ts";
import { gpt2Codec } from "./gpt2-config.ts";

for (const t of DECODER_MODEL_TYPES) registerModel(t, decoderCodec);
registerModel("gpt2", gpt2Codec);
