// `tessera generate`: load a Hugging Face folder and continue a prompt with the KV cache.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError, type Command } from "../../runtime/index.ts";
import { generate, loadHF, type GenerateOptions } from "../../models/index.ts";
import { TesseraTokenizer } from "../../data/index.ts";

export const generateCommand: Command = {
  path: ["generate"],
  summary: "continue a prompt with a model folder (Hugging Face layout)",
  description: [
    "Loads config.json + safetensors from --model and generates up to --max-new-tokens tokens",
    "with a KV cache: greedy by default (or with --greedy), sampled with --temperature, --top-k,",
    "--top-p and --seed. --prompt needs tokenizer.json + tokenizer_config.json in the model folder",
    "(or in --tokenizer); --input-ids takes token ids. --json prints",
    '{"input_ids": [...], "output_ids": [...], "logprobs": [...]} (logprobs: the log-probability',
    "of each generated token under the model's unmodified distribution).",
  ].join("\n"),
  args: [],
  options: [
    { name: "model", kind: "value", valueName: "DIR", help: "model folder: config.json + model.safetensors (or shards)" },
    { name: "prompt", kind: "value", valueName: "TEXT", help: "prompt text (needs tokenizer files)" },
    { name: "input-ids", kind: "value", valueName: "IDS", help: "prompt as comma-separated token ids: 1,2,3" },
    { name: "tokenizer", kind: "value", valueName: "DIR", help: "tokenizer folder when it is not the model folder" },
    { name: "max-new-tokens", kind: "value", valueName: "N", help: "how many tokens to generate at most (default 32)" },
    { name: "greedy", kind: "flag", help: "always take the most likely token (the default)" },
    { name: "temperature", kind: "value", valueName: "T", help: "sample at temperature T (> 0)" },
    { name: "top-k", kind: "value", valueName: "K", help: "sample among the K most likely tokens" },
    { name: "top-p", kind: "value", valueName: "P", help: "sample among the most likely tokens whose probability reaches P" },
    { name: "seed", kind: "value", valueName: "S", help: "random seed for sampling (default 0)" },
    { name: "json", kind: "flag", help: "print input_ids, output_ids and logprobs as JSON" },
  ],
  async run(input, io) {
    const modelDir = input.value("model");
    if (!modelDir) throw new UsageError("--model DIR is required");
    const prompt = input.value("prompt");
    const idsText = input.value("input-ids");
    if ((prompt === undefined) === (idsText === undefined)) throw new UsageError("give exactly one of --prompt TEXT or --input-ids 1,2,3");
    const sampling = ["temperature", "top-k", "top-p"].filter((o) => input.value(o) !== undefined);
    if (input.flag("greedy") && sampling.length) throw new UsageError(`--greedy excludes --${sampling.join(", --")}`);

    const opts: GenerateOptions = { maxNewTokens: intOption(input.value("max-new-tokens"), "max-new-tokens", 32, 1) };
    if (!input.flag("greedy")) {
      const t = numberOption(input.value("temperature"), "temperature");
      if (t !== undefined && !(t > 0)) throw new UsageError("--temperature must be > 0 (use --greedy for greedy decoding)");
      if (t !== undefined) opts.temperature = t;
      else if (sampling.length) opts.temperature = 1;
      const k = input.value("top-k");
      if (k !== undefined) opts.topK = intOption(k, "top-k", 0, 1);
      const p = numberOption(input.value("top-p"), "top-p");
      if (p !== undefined && !(p > 0 && p <= 1)) throw new UsageError("--top-p must be in (0, 1]");
      if (p !== undefined) opts.topP = p;
      opts.seed = intOption(input.value("seed"), "seed", 0, 0);
    }

    const tokDir = input.value("tokenizer") ?? modelDir;
    const hasTokenizer = existsSync(join(tokDir, "tokenizer.json")) && existsSync(join(tokDir, "tokenizer_config.json"));
    if (prompt !== undefined && !hasTokenizer) {
      throw new Error(`--prompt needs tokenizer.json and tokenizer_config.json in ${tokDir} (or pass --input-ids)`);
    }
    const tokenizer = hasTokenizer ? TesseraTokenizer.load(tokDir) : undefined;
    const inputIds = prompt !== undefined ? tokenizer!.encode(prompt) : parseIds(idsText!);

    const { model } = await loadHF(modelDir);
    try {
      const out = generate(model, inputIds, opts);
      if (input.flag("json")) {
        io.out(JSON.stringify({ input_ids: inputIds, output_ids: out.outputIds, logprobs: out.logprobs }) + "\n");
      } else if (tokenizer && prompt !== undefined) {
        io.out(prompt + tokenizer.decode(out.outputIds) + "\n");
      } else {
        io.out(out.outputIds.join(",") + "\n");
      }
    } finally {
      model.dispose();
    }
    return 0;
  },
};

function parseIds(text: string): number[] {
  const ids = text.split(",").map((s) => s.trim());
  if (ids.some((s) => !/^\d+$/.test(s))) throw new UsageError(`--input-ids: expected comma-separated non-negative integers, got ${JSON.stringify(text)}`);
  return ids.map(Number);
}

function numberOption(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name}: expected a number, got ${JSON.stringify(v)}`);
  return n;
}

function intOption(v: string | undefined, name: string, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name}: expected an integer >= ${min}, got ${JSON.stringify(v)}`);
  return n;
}
