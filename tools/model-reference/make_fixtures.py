"""Reference outputs for PeftSharp's Qwen3, Gemma 2, Gemma 3 (text) and Phi-3 implementations.

transformers cannot be installed where these fixtures are made, so this script re-implements each architecture in
plain PyTorch, line by line after transformers' modeling code (models/{qwen3,gemma2,gemma3,phi3}/modeling_*.py and
modeling_rope_utils.py, eager attention), builds tiny random-weight checkpoints and records, in float32:
  expected.safetensors: input_ids [2,12] (row 1 right-padded: its last 3 ids masked), attention_mask, logits [2,12,V],
                        and for Phi-3 logits_short (the first 6 positions alone: LongRoPE's short factors);
  generation.json:      prompt (5 ids) and greedy (prompt + 10 greedy tokens with a KV cache, as generate() does,
                        including Phi-3's cache re-fill when the sequence first passes original_max_position_embeddings).
Run with Debian's python3-torch:  /usr/bin/python3 tools/model-reference/make_fixtures.py tests/fixtures/models
"""
import json, math, os, struct, sys
import torch
import torch.nn.functional as F

torch.manual_seed(0)
NEG = torch.finfo(torch.float32).min


# ---------------------------------------------------------------- safetensors, written by hand
def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- shared pieces (transformers' semantics)
def rms_llama(x, w, eps):
    dt = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(dt)


def rms_gemma(x, w, eps):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * (1.0 + w.float())).type_as(x)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(q, k, cos, sin):  # Phi-3's form; identical to Llama's when the rotary dim is the head dim
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    r = cos.shape[-1]
    q_rot, q_pass = q[..., :r], q[..., r:]
    k_rot, k_pass = k[..., :r], k[..., r:]
    return (torch.cat([q_rot * cos + rotate_half(q_rot) * sin, q_pass], -1),
            torch.cat([k_rot * cos + rotate_half(k_rot) * sin, k_pass], -1))


def inv_freq_plain(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def cos_sin(inv_freq, position_ids, attention_scaling=1.0):
    inv = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    pos = position_ids[:, None, :].float()
    freqs = (inv @ pos).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * attention_scaling, emb.sin() * attention_scaling


def repeat_kv(x, n):
    b, h, s, d = x.shape
    return x if n == 1 else x[:, :, None].expand(b, h, n, s, d).reshape(b, h * n, s, d)


def eager_attention(q, k, v, mask, scaling, softcap=None):
    n = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n), repeat_kv(v, n)
    w = torch.matmul(q, k.transpose(2, 3)) * scaling
    if softcap is not None:
        w = torch.tanh(w / softcap) * softcap
    w = w + mask[:, :, :, : k.shape[-2]]
    w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(w, v).transpose(1, 2).contiguous()


def make_mask(attention_mask, past, t, window=None):
    """Additive [B,1,T,S]: causal (kv <= q), window (kv > q - w), padding; masking_utils' rules."""
    s = past + t
    q = torch.arange(past, s)[:, None]
    kv = torch.arange(s)[None, :]
    allowed = kv <= q
    if window is not None:
        allowed = allowed & (kv > q - window)
    allowed = allowed[None, None] & attention_mask[:, None, None, :s].bool()
    return torch.zeros(allowed.shape).masked_fill(~allowed, NEG)


def linear(x, W, name, bias=False):
    y = x @ W[name + ".weight"].T
    return y + W[name + ".bias"] if bias else y


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


# ---------------------------------------------------------------- one decoder, families as options
class Decoder:
    def __init__(self, cfg, W):
        self.cfg, self.W = cfg, W
        c = cfg
        self.family = c["model_type"]
        self.heads, self.kv = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.layers = c["num_hidden_layers"]
        self.eps = c["rms_norm_eps"]
        fam = self.family
        if fam == "qwen3":
            window = c["sliding_window"] if c.get("use_sliding_window") else None
            self.layer_types = c.get("layer_types") or [
                "sliding_attention" if window is not None and i >= c["max_window_layers"] else "full_attention"
                for i in range(self.layers)]
            self.window = window
        elif fam == "gemma2":
            self.layer_types = c.get("layer_types") or [
                "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(self.layers)]
            self.window = c["sliding_window"]
        elif fam == "gemma3_text":
            p = c.get("sliding_window_pattern", 6)
            self.layer_types = c.get("layer_types") or [
                "sliding_attention" if (i + 1) % p else "full_attention" for i in range(self.layers)]
            self.window = c["sliding_window"]
        else:  # phi3: one window (or none) for every layer
            self.window = c.get("sliding_window")
            self.layer_types = ["sliding_attention" if self.window else "full_attention"] * self.layers
        self.scaling = (c["query_pre_attn_scalar"] ** -0.5) if fam.startswith("gemma") else self.head_dim ** -0.5
        self.softcap = c.get("attn_logit_softcapping") if fam == "gemma2" else None

    # RoPE tables per layer type, for the given positions [B,T]
    def rope(self, layer_type, position_ids):
        c, fam = self.cfg, self.family
        if fam == "gemma3_text":
            if layer_type == "sliding_attention":
                return cos_sin(inv_freq_plain(c["rope_local_base_freq"], self.head_dim), position_ids)
            inv = inv_freq_plain(c["rope_theta"], self.head_dim)
            rs = c.get("rope_scaling")
            if rs and rs.get("rope_type") == "linear":
                inv = inv / rs["factor"]
            return cos_sin(inv, position_ids)
        if fam == "phi3" and c.get("rope_scaling"):
            rs = c["rope_scaling"]
            dim = int(self.head_dim * c.get("partial_rotary_factor", 1.0))
            orig = c["original_max_position_embeddings"]
            factor = rs.get("factor") or c["max_position_embeddings"] / orig
            att = rs.get("attention_factor") or (1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig)))
            seq_len = int(position_ids.max()) + 1  # dynamic_rope_update: long factors past the original length
            ext = torch.tensor(rs["long_factor"] if seq_len > orig else rs["short_factor"], dtype=torch.float32)
            inv = 1.0 / (ext * c["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
            return cos_sin(inv, position_ids, att)
        dim = int(self.head_dim * c.get("partial_rotary_factor", 1.0))
        return cos_sin(inv_freq_plain(c["rope_theta"], dim), position_ids)

    def attention(self, i, x, cos, sin, mask, cache):
        W, p, fam = self.W, f"model.layers.{i}.self_attn", self.family
        b, t, _ = x.shape
        hd = self.head_dim
        if fam == "phi3":
            qkv = linear(x, W, p + ".qkv_proj")
            qp = self.heads * hd
            q, k, v = qkv[..., :qp], qkv[..., qp: qp + self.kv * hd], qkv[..., qp + self.kv * hd:]
        else:
            bias = self.cfg.get("attention_bias", False)
            q, k, v = (linear(x, W, p + n, bias) for n in (".q_proj", ".k_proj", ".v_proj"))
        q, k, v = q.view(b, t, -1, hd), k.view(b, t, -1, hd), v.view(b, t, -1, hd)
        if fam == "qwen3":
            q, k = rms_llama(q, W[p + ".q_norm.weight"], self.eps), rms_llama(k, W[p + ".k_norm.weight"], self.eps)
        if fam == "gemma3_text":
            q, k = rms_gemma(q, W[p + ".q_norm.weight"], self.eps), rms_gemma(k, W[p + ".k_norm.weight"], self.eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rope(q, k, cos, sin)
        if cache is not None:
            if cache[i] is not None:
                k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
            cache[i] = (k, v)
        y = eager_attention(q, k, v, mask, self.scaling, self.softcap).reshape(b, t, -1)
        return linear(y, W, p + ".o_proj", fam == "qwen3" and self.cfg.get("attention_bias", False))

    def mlp(self, i, x):
        W, p, fam = self.W, f"model.layers.{i}.mlp", self.family
        if fam == "phi3":
            gate, up = linear(x, W, p + ".gate_up_proj").chunk(2, dim=-1)
            return linear(up * F.silu(gate), W, p + ".down_proj")
        act = gelu_tanh if fam.startswith("gemma") else F.silu
        return linear(act(linear(x, W, p + ".gate_proj")) * linear(x, W, p + ".up_proj"), W, p + ".down_proj")

    def forward(self, ids, attention_mask=None, position_ids=None, cache=None):
        W, c, fam = self.W, self.cfg, self.family
        b, t = ids.shape
        past = 0 if cache is None or cache[0] is None else cache[0][0].shape[2]
        if attention_mask is None:
            attention_mask = torch.ones(b, past + t, dtype=torch.int64)
        if position_ids is None:
            position_ids = torch.arange(past, past + t)[None].expand(b, t)
        h = F.embedding(ids, W["model.embed_tokens.weight"])
        if fam == "gemma2":
            h = h * torch.tensor(c["hidden_size"] ** 0.5, dtype=h.dtype)
        if fam == "gemma3_text":
            h = h * torch.tensor(c["hidden_size"] ** 0.5).to(h.dtype)
        norm = rms_gemma if fam.startswith("gemma") else rms_llama
        masks = {"full_attention": make_mask(attention_mask, past, t),
                 "sliding_attention": make_mask(attention_mask, past, t, self.window)}
        ropes = {lt: self.rope(lt, position_ids) for lt in set(self.layer_types)}
        for i in range(self.layers):
            lt = self.layer_types[i]
            cos, sin = ropes[lt]
            p = f"model.layers.{i}"
            a = self.attention(i, norm(h, W[p + ".input_layernorm.weight"], self.eps), cos, sin, masks[lt], cache)
            if fam.startswith("gemma"):
                h = h + norm(a, W[p + ".post_attention_layernorm.weight"], self.eps)
                m = self.mlp(i, norm(h, W[p + ".pre_feedforward_layernorm.weight"], self.eps))
                h = h + norm(m, W[p + ".post_feedforward_layernorm.weight"], self.eps)
            else:
                h = h + a
                h = h + self.mlp(i, norm(h, W[p + ".post_attention_layernorm.weight"], self.eps))
        h = norm(h, W["model.norm.weight"], self.eps)
        head = W["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else W["lm_head.weight"]
        logits = h @ head.T
        cap = c.get("final_logit_softcapping")
        if fam.startswith("gemma") and cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def greedy(self, prompt, new_tokens):
        """generate(do_sample=False, use_cache=True); Phi-3 drops its cache once when the length first passes the
        original length (prepare_inputs_for_generation) and re-runs the whole sequence with the long factors."""
        ids = torch.tensor([prompt])
        cache = [None] * self.layers
        nxt = ids
        for _ in range(new_tokens):
            past = 0 if cache[0] is None else cache[0][0].shape[2]
            orig = self.cfg.get("original_max_position_embeddings")
            if self.family == "phi3" and self.cfg.get("rope_scaling") and past > 0 \
                    and ids.shape[1] >= orig + 1 and past <= orig:
                cache = [None] * self.layers
                nxt = ids
            logits = self.forward(nxt, cache=cache)
            tok = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, tok], 1)
            nxt = tok
        return ids[0].tolist()


# ---------------------------------------------------------------- tiny checkpoints
def weights(cfg, std=0.2):
    g = torch.Generator().manual_seed(cfg["_seed"])
    rnd = lambda *s: torch.randn(*s, generator=g) * std
    fam = cfg["model_type"]
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    gemma = fam.startswith("gemma")
    # Norm weights away from their init, so that (1 + w) versus w and every norm's place show in the logits.
    norm = lambda n: rnd(n) * 1.5 if gemma else 1.0 + rnd(n)
    W = {"model.embed_tokens.weight": torch.randn(V, H, generator=g) * (0.5 if gemma else 1.0)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        if fam == "phi3":
            W[p + ".self_attn.qkv_proj.weight"] = rnd((nh + 2 * nkv) * hd, H)
        else:
            W[p + ".self_attn.q_proj.weight"] = rnd(nh * hd, H)
            W[p + ".self_attn.k_proj.weight"] = rnd(nkv * hd, H)
            W[p + ".self_attn.v_proj.weight"] = rnd(nkv * hd, H)
        W[p + ".self_attn.o_proj.weight"] = rnd(H, nh * hd)
        if fam in ("qwen3", "gemma3_text"):
            W[p + ".self_attn.q_norm.weight"] = norm(hd)
            W[p + ".self_attn.k_norm.weight"] = norm(hd)
        if fam == "phi3":
            W[p + ".mlp.gate_up_proj.weight"] = rnd(2 * I, H)
        else:
            W[p + ".mlp.gate_proj.weight"] = rnd(I, H)
            W[p + ".mlp.up_proj.weight"] = rnd(I, H)
        W[p + ".mlp.down_proj.weight"] = rnd(H, I)
        W[p + ".input_layernorm.weight"] = norm(H)
        W[p + ".post_attention_layernorm.weight"] = norm(H)
        if gemma:
            W[p + ".pre_feedforward_layernorm.weight"] = norm(H)
            W[p + ".post_feedforward_layernorm.weight"] = norm(H)
    W["model.norm.weight"] = norm(H)
    if not cfg.get("tie_word_embeddings"):
        W["lm_head.weight"] = rnd(V, H)
    return W


COMMON = {"vocab_size": 96, "rms_norm_eps": 1e-6, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}
MODELS = {
    # head_dim 16 != 32/4; q/k norms; layers 1 and 2 slide over 4 tokens (max_window_layers = 1); untied head.
    "tiny-qwen3": {"_seed": 11, "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 32,
                   "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
                   "head_dim": 16, "hidden_act": "silu", "max_position_embeddings": 128, "rope_theta": 10000.0,
                   "rope_scaling": None, "attention_bias": False, "use_sliding_window": True, "sliding_window": 4,
                   "max_window_layers": 1, "tie_word_embeddings": False},
    # alternating sliding (4) / global layers; scores scaled by 24^-0.5; soft-capping small enough to bite.
    "tiny-gemma2": {"_seed": 12, "model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], "hidden_size": 32,
                    "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
                    "max_position_embeddings": 128, "rope_theta": 10000.0, "query_pre_attn_scalar": 24,
                    "sliding_window": 4, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 8.0,
                    "attention_bias": False, "tie_word_embeddings": True},
    # sliding_window_pattern 2: layers 0 and 2 local (base 10000), 1 and 3 global (base 1e6, linear factor 4).
    "tiny-gemma3": {"_seed": 13, "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"], "hidden_size": 32,
                    "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 128,
                    "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                    "rope_scaling": {"rope_type": "linear", "factor": 4.0}, "query_pre_attn_scalar": 16,
                    "sliding_window": 4, "sliding_window_pattern": 2, "final_logit_softcapping": None,
                    "attn_logit_softcapping": None, "attention_bias": False, "tie_word_embeddings": True},
    # fused projections; RoPE on 12 of 16 channels; LongRoPE with original length 8 of 64 (attention factor sqrt 2).
    "tiny-phi3": {"_seed": 14, "model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "hidden_size": 64,
                  "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "hidden_act": "silu", "max_position_embeddings": 64, "original_max_position_embeddings": 8,
                  "rope_theta": 10000.0, "partial_rotary_factor": 0.75, "sliding_window": None,
                  "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                                   "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]},
                  "tie_word_embeddings": True},
}


def main(out_root):
    for name, cfg in MODELS.items():
        cfg = {**COMMON, **cfg}
        W = weights(cfg)
        model = Decoder(cfg, W)
        folder = os.path.join(out_root, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({k: v for k, v in cfg.items() if not k.startswith("_")}, f, indent=2)
        save_safetensors(os.path.join(folder, "model.safetensors"), W)
        g = torch.Generator().manual_seed(cfg["_seed"] + 100)
        ids = torch.randint(3, cfg["vocab_size"], (2, 12), generator=g)
        mask = torch.ones(2, 12, dtype=torch.int64)
        ids[1, -3:] = cfg["pad_token_id"]
        mask[1, -3:] = 0
        with torch.no_grad():
            out = {"input_ids": ids, "attention_mask": mask, "logits": model.forward(ids, mask)}
            if cfg["model_type"] == "phi3":
                out["logits_short"] = model.forward(ids[:, :6], mask[:, :6])
            save_safetensors(os.path.join(folder, "expected.safetensors"), out)
            prompt = ids[0, :5].tolist()
            greedy = model.greedy(prompt, 10)
            # Full recomputation must agree with the cached loop (Phi-3 by construction of the re-fill).
            full = torch.tensor([prompt])
            for _ in range(10):
                full = torch.cat([full, model.forward(full)[:, -1].argmax(-1, keepdim=True)], 1)
            assert full[0].tolist() == greedy, (name, full[0].tolist(), greedy)
        with open(os.path.join(folder, "generation.json"), "w") as f:
            json.dump({"prompt": prompt, "greedy": greedy}, f)
        print(name, "logits", tuple(out["logits"].shape), "absmax %.3f" % out["logits"].abs().max(), "greedy", greedy)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/models")
