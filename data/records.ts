// Raw rows to records: plain text (pretraining) or OpenAI-style chat messages. Anything
// else is a bad record with a reason; nothing is silently coerced.
import type { ChatMessage, DataRecord, Role, SourceSpec } from "./types.ts";

const ROLES = new Set<Role>(["system", "user", "assistant", "tool"]);

export type RecordResult = { record: DataRecord } | { error: string };

export function toRecord(value: unknown, spec: Pick<SourceSpec, "text_field" | "messages_field">): RecordResult {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { error: `expected an object, got ${kindOf(value)}` };
  }
  const row = value as Record<string, unknown>;
  let field = spec.messages_field;
  if (!field && !spec.text_field && "messages" in row) field = "messages";
  if (field) {
    if (!(field in row)) return { error: `missing field '${field}'` };
    return toChat(row[field], field);
  }
  const textField = spec.text_field ?? "text";
  if (!(textField in row)) {
    return { error: spec.text_field ? `missing field '${textField}'` : "missing field 'text' (or 'messages')" };
  }
  const text = row[textField];
  if (typeof text !== "string") return { error: `field '${textField}' must be a string, got ${kindOf(text)}` };
  if (text.length === 0) return { error: `field '${textField}' is empty` };
  return { record: { kind: "text", text } };
}

function toChat(raw: unknown, field: string): RecordResult {
  let messages = raw;
  if (typeof messages === "string") {
    // CSV (and some Parquet exports) carry conversations as JSON text
    try {
      messages = JSON.parse(messages);
    } catch {
      return { error: `field '${field}' is a string that is not JSON` };
    }
  }
  if (!Array.isArray(messages)) return { error: `field '${field}' must be a list of messages, got ${kindOf(messages)}` };
  if (messages.length === 0) return { error: "empty conversation" };
  const out: ChatMessage[] = [];
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as unknown;
    if (!m || typeof m !== "object" || Array.isArray(m)) return { error: `message ${i} is not an object` };
    const { role, tool_calls } = m as Record<string, unknown>;
    let { content } = m as Record<string, unknown>;
    if (typeof role !== "string" || !ROLES.has(role as Role)) {
      return { error: `message ${i} has role ${JSON.stringify(role)} (expected system, user, assistant or tool)` };
    }
    // an assistant turn that only calls tools has no content (OpenAI sends null)
    if (content == null && role === "assistant" && Array.isArray(tool_calls) && tool_calls.length) content = "";
    const bad = checkContent(content);
    if (bad) return { error: `message ${i} (${role}): ${bad}` };
    out.push({ ...(m as Record<string, unknown>), role: role as Role, content: content as ChatMessage["content"] });
  }
  if (!out.some((m) => m.role === "assistant")) return { error: "conversation has no assistant message: nothing to learn" };
  return { record: { kind: "chat", messages: out } };
}

function checkContent(content: unknown): string | null {
  if (typeof content === "string") return null;
  if (!Array.isArray(content)) return `content must be a string or a list of parts, got ${kindOf(content)}`;
  for (let k = 0; k < content.length; k++) {
    const p = content[k] as { type?: unknown; text?: unknown } | null;
    if (!p || typeof p !== "object" || typeof p.type !== "string") return `content part ${k} has no type`;
    if (p.type === "text" && typeof p.text !== "string") return `content part ${k} is text without a string 'text'`;
  }
  return null;
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}
