// `tessera export CKPT OUT`: a training checkpoint to a Hugging Face folder.
import { exportHF } from "../../models/index.ts";
import type { Command } from "../../runtime/index.ts";

export const exportCommand: Command = {
  path: ["export"],
  summary: "write a checkpoint as a Hugging Face model folder (safetensors + config.json)",
  description: [
    "CKPT is a checkpoint folder (step-NNNNNN) or a checkpoint root, whose `latest` is taken.",
    "Shards from any mesh are assembled into whole tensors; OUT gets config.json,",
    "generation_config.json and model.safetensors (or shards), and the tokenizer files when",
    "--tokenizer names a folder that has them. `transformers` loads OUT with from_pretrained.",
  ].join("\n"),
  args: [
    { name: "CKPT", help: "checkpoint folder or root" },
    { name: "OUT", help: "output folder" },
  ],
  options: [
    { name: "tokenizer", kind: "value", valueName: "DIR", help: "copy tokenizer.json / tokenizer_config.json from DIR" },
    { name: "bf16", kind: "flag", help: "write bfloat16 weights (default float32)" },
  ],
  async run(input, io) {
    const tokenizerDir = input.value("tokenizer");
    await exportHF(input.args.CKPT!, input.args.OUT!, {
      ...(tokenizerDir ? { tokenizerDir } : {}),
      dtype: input.flag("bf16") ? "bfloat16" : "float32",
    });
    io.out(`exported ${input.args.CKPT} to ${input.args.OUT}\n`);
    return 0;
  },
};
