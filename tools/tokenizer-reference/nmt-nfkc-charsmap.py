# Writes SentencePiece's nmt_nfkc rules as a base64 precompiled_charsmap (what T5, ALBERT and XLM-R files carry in
# their Precompiled normalizer), taken from a throwaway model trained by Debian's python3-sentencepiece 0.1.97:
#   /usr/bin/python3 tools/tokenizer-reference/nmt-nfkc-charsmap.py  (writes nmt_nfkc.b64 in the current folder)
import sentencepiece as spm, io, base64, random
# Any small corpus: the model is thrown away, only its normalizer_spec (nmt_nfkc rules) is kept.
words = "the quick brown fox jumps over the lazy dog hello world tokenizer charsmap".split()
random.seed(0)
text = "\n".join(" ".join(random.choice(words) for _ in range(12)) for _ in range(300))
open("corpus.txt", "w").write(text)
for rule in ["nmt_nfkc"]:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(input="corpus.txt", model_writer=model, vocab_size=40, normalization_rule_name=rule, minloglevel=2)
    data = model.getvalue()
    def fields(buf):
        i = 0
        while i < len(buf):
            key = 0; shift = 0
            while True:
                b = buf[i]; i += 1; key |= (b & 0x7f) << shift; shift += 7
                if b < 0x80: break
            num, wt = key >> 3, key & 7
            if wt == 0:
                while buf[i] & 0x80: i += 1
                i += 1; yield num, None
            elif wt == 2:
                ln = 0; shift = 0
                while True:
                    b = buf[i]; i += 1; ln |= (b & 0x7f) << shift; shift += 7
                    if b < 0x80: break
                yield num, buf[i:i+ln]; i += ln
            elif wt == 5: i += 4; yield num, None
            elif wt == 1: i += 8; yield num, None
    spec = [v for n, v in fields(data) if n == 3][0]
    charsmap = [v for n, v in fields(spec) if n == 2][0]
    open(rule + ".b64", "w").write(base64.b64encode(charsmap).decode())
    print(rule, len(charsmap))
