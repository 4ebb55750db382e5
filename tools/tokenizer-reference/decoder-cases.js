// Prints what HF's tokenizers decoders return for the token lists of tests/PeftSharp.Tests/Tokenization/DecoderTests.cs:
//   NODE_PATH=/work/npmref/node_modules node tools/tokenizer-reference/decoder-cases.js
"use strict";
const t = require("@anush008/tokenizers");
const show = (label, decoder, tokens) => console.log(label, JSON.stringify(tokens), "->", JSON.stringify(decoder.decode(tokens)));
for (const scheme of ["always", "first", "never"]) {
  show(`Metaspace ${scheme}`, t.metaspaceDecoder("▁", scheme), ["▁▁a▁", "▁b", "▁▁c"]);
  show(`Metaspace ${scheme}`, t.metaspaceDecoder("▁", scheme), ["x▁", "▁y"]);
}
show("Strip(' ', 2, 1)", t.stripDecoder(" ", 2, 1), ["   a  ", " b "]);
show("ByteFallback", t.byteFallbackDecoder(), ["<0xE4>", "<0xBD>", "a", "<0xC3>", "<0xA9>", "<0xff>"]);
show("ByteFallback", t.byteFallbackDecoder(), ["<0xE4>", "<0xB8>", "<0xAD>", "<0xC3>", "<0xA9>"]);
