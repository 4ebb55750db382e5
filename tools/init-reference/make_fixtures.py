"""Reference adapters for PeftSharp's data-aware LoRA inits: CorDA (IPM and KPM) and LoRA-GA.

PEFT cannot be installed where these fixtures are made, so this script re-does, in plain PyTorch, what PEFT 0.21
computes (src/peft/tuners/lora/corda.py: calib_cov_distribution, collect_eigens_for_layer, crop_corda_eigens;
layer.py: corda_init; loraga.py: estimate_gradients; layer.py: lora_ga_init), in the same order of operations, on the
shipped tiny-llama checkpoint (a plain Llama forward re-written after transformers' modeling_llama, checked against
the checkpoint's own expected logits) and on fixed calibration batches, and writes to the output folder:
  batches.safetensors  input_ids int64 [4 batches, 2 rows, 16]: the calibration batches, in the order they are run;
  corda_ipm.safetensors, corda_kpm.safetensors, lora_ga.safetensors: for each target module
      <module>.lora_A [r, in], <module>.lora_B [out, r], <module>.residual [out, in] (the base weight after init);
  reference.json: the settings and, per module, the singular value gaps that make the vectors well defined.
Settings: r = 4, lora_alpha = 8 (scaling 2); LoRA-GA direction ArB2r, scale stable, stable_gamma 16.

Where PEFT leaves a choice open, this script takes:
  - CorDA: PEFT's forward hook takes one sequence per call (`input[0].squeeze(0)` then `.t()` fails on a batch of
    more), so every sequence is one sample: X / |max X| per sequence, X^T X summed, divided by the sequence count.
  - LoRA-GA: PEFT runs torch.svd_lowrank(G, q=4r, niter=4), a randomised SVD whose output moves with the random
    state; this script takes the exact SVD it approximates (and prints how far svd_lowrank lands from it).
The maths runs in float64 from the float32 model's activations and gradients; results are stored as float32.
Run with Debian's python3-torch:  /usr/bin/python3 tools/init-reference/make_fixtures.py tests/fixtures/init-reference
"""
import json, math, os, struct, sys
import torch
import torch.nn.functional as F

MODEL = os.path.join(os.path.dirname(__file__), "../../tests/fixtures/peft-reference/models/tiny-llama")
TARGETS = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "model.layers.1.mlp.down_proj"]
R, ALPHA = 4, 8
SCALING = ALPHA / R
GAMMA = 16


# ---------------------------------------------------------------- safetensors by hand (no package here)
def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    kinds = {"F32": torch.float32, "I64": torch.int64}
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=kinds[h["dtype"]]).reshape(h["shape"]).clone()
    return out


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


# ---------------------------------------------------------------- tiny Llama, as transformers' modeling_llama
class Llama:
    def __init__(self, cfg, W):
        self.c, self.W = cfg, W
        self.taps = {}  # module name -> fn(x) called with each input of that linear layer

    def linear(self, x, name):
        if name in self.taps:
            self.taps[name](x)
        return x @ self.W[name + ".weight"].T

    def rms(self, x, name):
        return self.W[name + ".weight"] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.c["rms_norm_eps"]))

    def forward(self, ids, attention_mask=None):
        c = self.c
        b, t = ids.shape
        nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        theta = c.get("rope_parameters", {}).get("rope_theta", c.get("rope_theta", 10000.0))
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        freqs = torch.arange(t).float()[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), -1)
        cos, sin = emb.cos(), emb.sin()
        keep = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
        if attention_mask is not None:
            keep = keep & attention_mask[:, None, None, :].bool()
        mask = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)

        def rot(x):
            x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
            return x * cos + torch.cat((-x2, x1), -1) * sin

        h = F.embedding(ids, self.W["model.embed_tokens.weight"])
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            x = self.rms(h, p + "input_layernorm")
            q = rot(self.linear(x, p + "self_attn.q_proj").view(b, t, nh, hd).transpose(1, 2))
            k = rot(self.linear(x, p + "self_attn.k_proj").view(b, t, nkv, hd).transpose(1, 2))
            v = self.linear(x, p + "self_attn.v_proj").view(b, t, nkv, hd).transpose(1, 2)
            k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
            w = F.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + mask, dim=-1)
            a = (w @ v).transpose(1, 2).reshape(b, t, nh * hd)
            h = h + self.linear(a, p + "self_attn.o_proj")
            x = self.rms(h, p + "post_attention_layernorm")
            m = F.silu(self.linear(x, p + "mlp.gate_proj")) * self.linear(x, p + "mlp.up_proj")
            h = h + self.linear(m, p + "mlp.down_proj")
        return self.linear(self.rms(h, "model.norm"), "lm_head")

    def causal_lm_loss(self, ids):
        logits = self.forward(ids)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


# ---------------------------------------------------------------- CorDA (PEFT corda.py + corda_init)
def corda_covariances(model, batches):
    sums = {n: torch.zeros(model.W[n + ".weight"].shape[1], model.W[n + ".weight"].shape[1], dtype=torch.float64) for n in TARGETS}
    count = {n: 0 for n in TARGETS}

    def tap(name):
        def f(x):
            x = x.detach().squeeze(0).double()  # one sequence: [T, in]
            x = x / torch.max(x).abs()
            sums[name] += x.t() @ x
            count[name] += 1
        return f

    model.taps = {n: tap(n) for n in TARGETS}
    with torch.no_grad():
        for batch in batches:
            for row in batch:  # PEFT's hook takes one sequence per forward
                model.forward(row[None])
    model.taps = {}
    return {n: sums[n] / count[n] for n in TARGETS}


def corda(w, cov, kpm):
    """PEFT's collect_eigens_for_layer, crop_corda_eigens and corda_init for one layer; w [out, in]."""
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    damp, steps = 0.01, 0
    while True:
        fixed = cov + torch.diag(torch.ones(cov.shape[0], dtype=cov.dtype) * torch.mean(torch.diag(cov)) * damp)
        inv = torch.linalg.inv(fixed)
        if torch.dist(fixed @ inv, eye).item() < 0.05:
            break
        damp, steps = damp * 2, steps + 1
    U, S, Vh = torch.linalg.svd(w @ fixed, full_matrices=False)
    V = (Vh @ inv).t()
    pick = slice(-R, None) if kpm else slice(0, R)
    U, S, V = U[:, pick], S[pick] / SCALING, V[:, pick]
    lora_a = V.t() * S.sqrt().view(-1, 1)
    lora_b = U * S.sqrt()
    full = torch.linalg.svdvals(w @ fixed)
    return lora_a, lora_b, w - SCALING * lora_b @ lora_a, {"damp": damp, "damp_doublings": steps, "singular_values": full.tolist()}


# ---------------------------------------------------------------- LoRA-GA (PEFT loraga.py + lora_ga_init)
def loraga_gradients(model, batches):
    for n in TARGETS:
        model.W[n + ".weight"].requires_grad_(True)
    for batch in batches:  # train_step: one backward per batch, gradients accumulate
        model.causal_lm_loss(batch).backward()
    grads = {}
    for n in TARGETS:
        w = model.W[n + ".weight"]
        grads[n] = w.grad.detach().double() / len(batches)  # divided by the backward count
        w.grad = None
        w.requires_grad_(False)
    return grads


def lora_ga(w, g):
    """PEFT's lora_ga_init, direction ArB2r, scale stable, with the exact SVD; w, g [out, in]."""
    U, S, Vh = torch.linalg.svd(g, full_matrices=False)
    U, S, Vh = U[:, : 2 * R], S[: 2 * R], Vh[: 2 * R]
    lora_a = Vh[:R]
    lora_b = U[:, R: 2 * R] @ torch.diag(S[R: 2 * R])
    lora_b = lora_b * (w.shape[0] ** 0.25) / (GAMMA ** 0.5)
    full = torch.linalg.svdvals(g)
    return lora_a, lora_b, w - SCALING * (lora_b @ lora_a), {"singular_values": full.tolist()}


def relative_gaps(s, picked):
    """Smallest |s_i - s_j| / s_0 between a picked singular value and any other: how well the vectors are defined."""
    s = torch.tensor(s)
    gaps = [abs(s[i] - s[j]).item() / s[0].item() for i in picked for j in range(len(s)) if j != i]
    return min(gaps)


def main(out):
    os.makedirs(out, exist_ok=True)
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    W = load_safetensors(os.path.join(MODEL, "model.safetensors"))
    model = Llama(cfg, W)

    # The port reproduces transformers' logits on the checkpoint's own inputs.
    inputs = load_safetensors(os.path.join(MODEL, "inputs.safetensors"))
    expected = load_safetensors(os.path.join(MODEL, "expected.safetensors"))["logits"]
    with torch.no_grad():
        got = model.forward(inputs["input_ids"], inputs["attention_mask"])
    diff = (got - expected).abs().max().item()
    print(f"tiny-llama port: max |logits - transformers| = {diff:.2e}")
    assert diff < 1e-4, "the Llama port does not reproduce transformers' logits"

    g = torch.Generator().manual_seed(20240607)
    batches = torch.randint(2, cfg["vocab_size"], (4, 2, 16), generator=g)
    save_safetensors(os.path.join(out, "batches.safetensors"), {"input_ids": batches})

    meta = {"targets": TARGETS, "r": R, "lora_alpha": ALPHA, "lora_ga": {"direction": "ArB2r", "scale": "stable", "stable_gamma": GAMMA}, "modules": {}}
    covs = corda_covariances(model, batches)
    grads = loraga_gradients(model, batches)
    files = {"corda_ipm": {}, "corda_kpm": {}, "lora_ga": {}}
    for n in TARGETS:
        w = W[n + ".weight"].double()
        info = meta["modules"].setdefault(n, {})
        for kind in ("corda_ipm", "corda_kpm", "lora_ga"):
            if kind == "lora_ga":
                a, b, res, extra = lora_ga(w, grads[n])
                picked = range(0, 2 * R)
            else:
                a, b, res, extra = corda(w, covs[n], kind == "corda_kpm")
                k = len(extra["singular_values"])
                picked = range(k - R, k) if kind == "corda_kpm" else range(0, R)
            extra["min_relative_gap"] = relative_gaps(extra["singular_values"], picked)
            info[kind] = extra
            files[kind][n + ".lora_A"] = a.float()
            files[kind][n + ".lora_B"] = b.float()
            files[kind][n + ".residual"] = res.float()
            print(f"{kind:10s} {n:34s} min relative singular gap {extra['min_relative_gap']:.2e}"
                  + (f"  damp {extra['damp']}" if "damp" in extra else ""))
        # How far PEFT's randomised SVD lands from the exact one, on this gradient (top 2r subspace).
        torch.manual_seed(0)
        U, S, V = torch.svd_lowrank(grads[n].float(), q=min(4 * R, min(grads[n].shape)), niter=4)
        exact = torch.linalg.svdvals(grads[n])[: 2 * R]
        info["lora_ga"]["svd_lowrank_max_relative_singular_value_error"] = ((S[: 2 * R].double() - exact).abs() / exact).max().item()
    for kind, tensors in files.items():
        save_safetensors(os.path.join(out, kind + ".safetensors"), tensors)
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/init-reference")
