// The tokenizer: tokenizer.json + tokenizer_config.json from a local folder (HF layout),
// @huggingface/tokenizers for ids, @huggingface/jinja for the chat template, and the labels
// of each record (loss on every token of text, on assistant tokens only for chat).
//
// Chat labels: the template's {% generation %} markers give the assistant spans when present.
// Otherwise each assistant message is located in the rendered conversation. It starts where
// the conversation before it, rendered with the generation prompt, ends (so what the template
// writes after that prompt, such as Qwen3's empty think block, is the model's to produce). It
// ends where the conversation through it, rendered alone, ends, less trailing whitespace (the
// turn's end marker is in the loss, the line break after it is not). Where a template renders
// a turn differently once later turns follow (Qwen3 drops earlier reasoning), it ends after
// the message's content and the EOS token, or at the first EOS token after its start.
//
// The whole conversation is tokenized at once, so ids equal transformers'
// `apply_chat_template(tokenize=True)`; character spans map to tokens through each token's
// byte length (byte-level BPE). Tokenizers that are not byte-level, or text that the
// normalizer changes (not NFC for Qwen), fall back to tokenizing span by span (ids may then
// differ from transformers' at span edges; the labels stay aligned with the ids).
import { readFileSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { DataError } from "./errors.ts";
import type { ChatMessage, DataRecord } from "./types.ts";

export const IGNORE_INDEX = -100;

const GEN_START = "\uE000";
const GEN_END = "\uE001";

type TokenizeResult = { tokens: Int32Array; labels: Int32Array } | { error: string };

interface ChatEncoding {
  ids: number[];
  /** 1 where the token is an assistant token (a loss target). */
  mask: Uint8Array;
}

function tokenString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return undefined;
}

function pickTemplate(raw: unknown): string | undefined {
  if (typeof raw === "string") return raw;
  if (Array.isArray(raw)) {
    const named = raw as { name: string; template: string }[];
    return (named.find((t) => t.name === "default") ?? named[0])?.template;
  }
  return undefined;
}

function isByteLevel(json: Record<string, unknown>): boolean {
  const d = json.decoder as { type?: string; decoders?: { type?: string }[] } | null | undefined;
  return d?.type === "ByteLevel" || !!d?.decoders?.some((x) => x.type === "ByteLevel");
}

export class TesseraTokenizer {
  readonly eosToken: string | undefined;
  readonly eosId: number | undefined;
  readonly bosToken: string | undefined;
  readonly chatTemplate: string | undefined;
  readonly hasGenerationMarkers: boolean;
  private readonly tok: Tokenizer;
  private readonly template: Template | undefined;
  private readonly byteLevel: boolean;
  /** UTF-8 byte length of each added token's text, by id. */
  private readonly addedBytes = new Map<number, number>();

  private constructor(json: Record<string, unknown>, config: Record<string, unknown>, template: string | undefined) {
    this.tok = new Tokenizer(json, config);
    this.eosToken = tokenString(config.eos_token);
    this.bosToken = tokenString(config.bos_token);
    this.eosId = this.eosToken === undefined ? undefined : this.tok.token_to_id(this.eosToken);
    this.byteLevel = isByteLevel(json);
    for (const [id, t] of this.tok.get_added_tokens_decoder()) this.addedBytes.set(id, Buffer.byteLength(t.content));
    this.chatTemplate = template;
    const markers = /\{%-?\s*generation\s*-?%\}/;
    this.hasGenerationMarkers = !!template && markers.test(template);
    if (template) {
      const marked = template
        .replace(/\{%(-?)\s*generation\s*(-?)%\}/g, (_, l, r) => `{{${l} "${GEN_START}" ${r}}}`)
        .replace(/\{%(-?)\s*endgeneration\s*(-?)%\}/g, (_, l, r) => `{{${l} "${GEN_END}" ${r}}}`);
      this.template = new Template(marked);
    }
  }

  /** Loads tokenizer.json + tokenizer_config.json (and chat_template.jinja if the config has no
   *  template). Loaded once per folder and thread: a tokenizer holds no per-call state. */
  static load(dir: string): TesseraTokenizer {
    const key = resolve(dir);
    let tok = loaded.get(key);
    if (!tok) {
      tok = TesseraTokenizer.read(key);
      loaded.set(key, tok);
    }
    return tok;
  }

  private static read(dir: string): TesseraTokenizer {
    const read = (name: string): Record<string, unknown> => {
      const p = join(dir, name);
      if (!existsSync(p)) throw new DataError(`tokenizer folder ${dir} has no ${name}`);
      try {
        return JSON.parse(readFileSync(p, "utf8")) as Record<string, unknown>;
      } catch (err) {
        throw new DataError(`cannot parse ${p}: ${(err as Error).message}`);
      }
    };
    const json = read("tokenizer.json");
    const config = read("tokenizer_config.json");
    let template = pickTemplate(config.chat_template);
    const jinjaFile = join(dir, "chat_template.jinja");
    if (template === undefined && existsSync(jinjaFile)) template = readFileSync(jinjaFile, "utf8");
    return new TesseraTokenizer(json, config, template);
  }

  /** Token ids of a text. `specialTokens` adds what the post-processor adds (BOS for some). */
  encode(text: string, specialTokens = false): number[] {
    return this.tok.encode(text, { add_special_tokens: specialTokens }).ids;
  }

  decode(ids: ArrayLike<number>, skipSpecial = false): string {
    return this.tok.decode(Array.from(ids), { skip_special_tokens: skipSpecial });
  }

  /** The chat template rendered, as transformers' apply_chat_template(tokenize=False). */
  renderChat(messages: ChatMessage[], addGenerationPrompt = false): string {
    return this.render(messages, addGenerationPrompt).replaceAll(GEN_START, "").replaceAll(GEN_END, "");
  }

  private render(messages: ChatMessage[], addGenerationPrompt: boolean): string {
    if (!this.template) throw new DataError("the tokenizer has no chat_template: chat records need one");
    return this.template.render({
      messages,
      bos_token: this.bosToken ?? "",
      eos_token: this.eosToken ?? "",
      add_generation_prompt: addGenerationPrompt,
    });
  }

  /** Ids of a conversation and which of them are assistant tokens. */
  encodeChat(messages: ChatMessage[]): ChatEncoding {
    for (const m of messages) {
      const text = typeof m.content === "string" ? m.content : JSON.stringify(m.content);
      if (text.includes(GEN_START) || text.includes(GEN_END)) {
        throw new DataError("message text holds the private-use characters U+E000/U+E001 that mark spans");
      }
    }
    const raw = this.render(messages, false);
    const { text, spans } = this.hasGenerationMarkers ? markedSpans(raw) : this.searchSpans(messages, raw);
    return this.tokenizeSpans(text, spans);
  }

  private searchSpans(messages: ChatMessage[], full: string): { text: string; spans: [number, number][] } {
    const spans: [number, number][] = [];
    let cursor = 0;
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!;
      if (m.role !== "assistant") continue;
      let start = cursor;
      const before = this.tryRender(messages.slice(0, i), true);
      if (before !== undefined && before.length >= cursor && full.startsWith(before)) start = before.length;
      const content = textOf(m.content);
      const at = content ? full.indexOf(content, start) : -1;
      // a template without a generation prompt leaves the role header to skip
      if (!this.templateHasPrompt() && at >= 0) start = at;
      let end = -1;
      const through = this.tryRender(messages.slice(0, i + 1), false);
      if (through !== undefined && full.startsWith(through) && through.trimEnd().length > start) {
        // the turn's end marker is what the template wrote for it, up to the line break
        end = through.trimEnd().length;
      } else if (at >= 0) {
        end = at + content.length;
        if (this.eosToken && full.startsWith(this.eosToken, end)) end += this.eosToken.length;
      } else if (this.eosToken) {
        // the template rewrote the content (tool calls, dropped reasoning): up to the turn's EOS
        const e = full.indexOf(this.eosToken, start);
        if (e >= 0) end = e + this.eosToken.length;
      }
      if (end <= start) throw new DataError(`cannot locate assistant message ${i} in the rendered chat`);
      spans.push([start, end]);
      cursor = end;
    }
    return { text: full, spans };
  }

  private hasPrompt: boolean | undefined;

  /** Whether the template adds anything for add_generation_prompt (probed once). */
  private templateHasPrompt(): boolean {
    if (this.hasPrompt === undefined) {
      const probe: ChatMessage[] = [{ role: "user", content: "probe" }];
      this.hasPrompt = this.tryRender(probe, true) !== this.tryRender(probe, false);
    }
    return this.hasPrompt;
  }

  private tryRender(messages: ChatMessage[], addGenerationPrompt: boolean): string | undefined {
    if (messages.length === 0 && !addGenerationPrompt) return "";
    try {
      return this.render(messages, addGenerationPrompt);
    } catch {
      return undefined;
    }
  }

  private tokenizeSpans(text: string, spans: [number, number][]): ChatEncoding {
    const enc = this.tok.encode(text, { add_special_tokens: false });
    if (this.byteLevel) {
      const starts = new Array<number>(enc.ids.length);
      let b = 0;
      for (let k = 0; k < enc.ids.length; k++) {
        starts[k] = b;
        b += this.addedBytes.get(enc.ids[k]!) ?? enc.tokens[k]!.length;
      }
      if (b === Buffer.byteLength(text)) {
        const mask = new Uint8Array(enc.ids.length);
        let k = 0;
        for (const [s, e] of spans) {
          const sb = Buffer.byteLength(text.slice(0, s));
          const eb = sb + Buffer.byteLength(text.slice(s, e));
          while (k < starts.length && starts[k]! < sb) k++;
          while (k < starts.length && starts[k]! < eb) mask[k++] = 1;
        }
        return { ids: enc.ids, mask };
      }
    }
    const ids: number[] = [];
    const bits: number[] = [];
    let at = 0;
    const piece = (s: number, e: number, bit: number): void => {
      if (e <= s) return;
      for (const id of this.tok.encode(text.slice(s, e), { add_special_tokens: false }).ids) {
        ids.push(id);
        bits.push(bit);
      }
    };
    for (const [s, e] of spans) {
      piece(at, s, 0);
      piece(s, e, 1);
      at = e;
    }
    piece(at, text.length, 0);
    return { ids, mask: Uint8Array.from(bits) };
  }

  /** A record's tokens and labels (shifted: labels[i] is the target of position i). */
  tokenizeRecord(record: DataRecord, multimodal = false): TokenizeResult {
    let ids: number[];
    let mask: Uint8Array | undefined;
    if (record.kind === "text") {
      try {
        ids = this.encode(record.text, true);
      } catch (err) {
        return { error: `tokenizer: ${(err as Error).message}` };
      }
      if (this.eosId !== undefined && ids[ids.length - 1] !== this.eosId) ids.push(this.eosId);
    } else {
      let messages = record.messages;
      if (!multimodal) {
        const flat = flattenForText(messages);
        if (typeof flat === "string") return { error: flat };
        messages = flat;
      }
      try {
        ({ ids, mask } = this.encodeChat(messages));
      } catch (err) {
        return { error: `chat template: ${(err as Error).message}` };
      }
      if (!mask.some((x) => x === 1)) return { error: "no assistant tokens after rendering the chat template" };
    }
    if (ids.length < 2) return { error: `only ${ids.length} token(s): nothing to predict` };
    const tokens = Int32Array.from(ids);
    const labels = new Int32Array(ids.length).fill(IGNORE_INDEX);
    for (let i = 0; i + 1 < ids.length; i++) if (!mask || mask[i + 1]) labels[i] = ids[i + 1]!;
    return { tokens, labels };
  }
}

const loaded = new Map<string, TesseraTokenizer>();

function markedSpans(raw: string): { text: string; spans: [number, number][] } {
  const spans: [number, number][] = [];
  let text = "";
  let open = -1;
  for (const part of raw.split(/([\uE000\uE001])/)) {
    if (part === GEN_START) open = text.length;
    else if (part === GEN_END) {
      if (open >= 0 && text.length > open) spans.push([open, text.length]);
      open = -1;
    } else text += part;
  }
  return { text, spans };
}

function textOf(content: ChatMessage["content"]): string {
  if (typeof content === "string") return content;
  return content.map((p) => (p.type === "text" ? (p as { text: string }).text : "")).join("");
}

/** For text-only models: text parts joined into a string; a media part is a bad record. */
function flattenForText(messages: ChatMessage[]): ChatMessage[] | string {
  const out: ChatMessage[] = [];
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    if (typeof m.content === "string") {
      out.push(m);
      continue;
    }
    const media = m.content.find((p) => p.type !== "text");
    if (media) return `message ${i} has a ${media.type} part, and the model is text-only`;
    out.push({ ...m, content: textOf(m.content) });
  }
  return out;
}
