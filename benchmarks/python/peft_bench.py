#!/usr/bin/env python3
"""The Python PEFT reference for PeftSharp's `gpu-train` benchmark (benchmarks/gpu/run.sh runs both).

    python3 peft_bench.py train --config a [--steps 20] [--warmup-steps 5] [--lr 1e-4] [--init DIR] [--losses-out FILE]
    python3 peft_bench.py init  --config a --out DIR [--rows 400] [--seed 0]

Same recipe as PeftSharp's verb, step for step:
  * model: LlamaForCausalLM from a LlamaConfig of the config's shape (LlamaConfig's defaults otherwise: rms_norm_eps
    1e-6, rope_theta 10000, no biases), tied embeddings, transformers' random init (N(0, 0.02)), bfloat16 weights,
    attn_implementation="sdpa";
  * LoRA: r=16, lora_alpha=32, lora_dropout=0, target_modules="all-linear" (every linear layer but lm_head).
    get_peft_model keeps the adapter weights in float32 over the bfloat16 base (autocast_adapter_dtype=True, PEFT's
    default); PeftSharp does the same;
  * optimizer: torch.optim.AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight_decay 0.0, fused=True): transformers' Trainer
    default (optim="adamw_torch_fused", weight_decay=0.0); gradients clipped to norm 1.0 (Trainer's max_grad_norm);
    constant learning rate;
  * gradient checkpointing (configs b-ckpt, c): gradient_checkpointing_enable(use_reentrant=False) and
    enable_input_require_grads() on the base before get_peft_model, as a PEFT + Trainer run does;
  * loss: model(input_ids, labels=input_ids).loss (float32 cross-entropy over shifted labels, mean).
Tokens/s is timed over --steps after --warmup-steps, with torch.cuda.synchronize() at both ends. The losses are kept on
the GPU and read after timing, as the Trainer does between logging steps, so the loop has no per-step host sync.

`init` writes what both sides then start from, for the loss-curve comparison: DIR/base (save_pretrained: config.json and
bfloat16 safetensors of the random init), DIR/adapter (PEFT save_pretrained of the freshly initialised LoRA: lora_A
kaiming-uniform, lora_B zero), DIR/data.safetensors (input_ids [rows, seq] int64: each row a random pattern of 8 to 32
tokens from the first 1000 ids, repeated, so the loss has something to fall to).
"""
import argparse
import json
import os
import sys
import time

# The shapes of PeftSharp.Benchmarks/GpuTrainArgs.cs (GpuShape.All): change both together.
# name: (hidden, layers, heads, kv_heads, mlp, vocab, batch, seq, gradient_checkpointing)
SHAPES = {
    "a": (576, 30, 9, 3, 1536, 49152, 8, 512, False),        # SmolLM-135M-shaped
    "b": (896, 24, 14, 2, 4864, 151936, 8, 512, False),      # Qwen2.5-0.5B-shaped
    "b-ckpt": (896, 24, 14, 2, 4864, 151936, 8, 512, True),
    "c": (896, 24, 14, 2, 4864, 151936, 4, 2048, True),
    "tiny": (64, 2, 4, 2, 128, 512, 2, 32, False),
}


def llama_config(shape):
    from transformers import LlamaConfig
    hidden, layers, heads, kv, mlp, vocab, _, seq, _ = shape
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=True,
                       max_position_embeddings=max(2048, seq))


def lora_config():
    from peft import LoraConfig
    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def build_random_base(shape, device):
    import torch
    from transformers import AutoModelForCausalLM
    with torch.device(device):
        return AutoModelForCausalLM.from_config(llama_config(shape), dtype=torch.bfloat16, attn_implementation="sdpa")


def enable_checkpointing(base):
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.enable_input_require_grads()


def make_data(rows, seq, vocab, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    sub = min(vocab, 1000)
    out = torch.empty(rows, seq, dtype=torch.int64)
    for r in range(rows):
        period = int(torch.randint(8, 33, (1,), generator=g))
        pattern = torch.randint(0, sub, (period,), generator=g)
        out[r] = pattern.repeat(seq // period + 1)[:seq]
    return out


def cmd_init(args):
    import torch
    from peft import get_peft_model
    from safetensors.torch import save_file
    shape = shape_of(args)
    torch.manual_seed(args.seed)
    base = build_random_base(shape, "cuda" if torch.cuda.is_available() else "cpu")
    base.save_pretrained(os.path.join(args.out, "base"))
    model = get_peft_model(base, lora_config())
    model.save_pretrained(os.path.join(args.out, "adapter"))
    data = make_data(args.rows, shape[7], shape[5], args.seed)
    save_file({"input_ids": data.contiguous()}, os.path.join(args.out, "data.safetensors"))
    print(f"init: wrote {args.out}/base, {args.out}/adapter, {args.out}/data.safetensors ({args.rows} x {shape[7]} tokens)")
    return 0


def cmd_train(args):
    import torch
    import transformers
    import peft
    from peft import PeftModel, get_peft_model
    shape = shape_of(args)
    hidden, layers, heads, kv, mlp, vocab, batch, seq, ckpt = shape
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    # 1. The model and its adapter: random ones of the config's shape, or the ones `init` wrote (same init as ours).
    if args.init:
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained(os.path.join(args.init, "base"), dtype=torch.bfloat16,
                                                    attn_implementation="sdpa").to(device)
        cfg = base.config
        hidden, layers, heads, kv, mlp, vocab = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
                                                 cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size)
        if ckpt:
            enable_checkpointing(base)
        model = PeftModel.from_pretrained(base, os.path.join(args.init, "adapter"), is_trainable=True)
    else:
        base = build_random_base(shape, device)
        if ckpt:
            enable_checkpointing(base)
        model = get_peft_model(base, lora_config())
    model.train()
    print(f"peft_bench {args.config} on {device}: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}; hidden {hidden}, {layers} layers, {heads} heads / {kv} kv heads, MLP {mlp}, "
          f"vocab {vocab}, tied; batch {batch} x {seq}; gradient checkpointing {'on' if ckpt else 'off'}")
    model.print_trainable_parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    adapter_dtypes = sorted({str(p.dtype) for p in params})
    print(f"adapter parameter dtypes: {', '.join(adapter_dtypes)}")
    opt_kwargs = {"fused": True} if args.optim == "fused" else {"foreach": True} if args.optim == "foreach" else {"foreach": False}
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **opt_kwargs)

    # 2. The data: the init folder's token file, or random tokens.
    total = args.warmup_steps + args.steps
    rows = batch * total
    data_file = args.data or (os.path.join(args.init, "data.safetensors") if args.init else None)
    if data_file:
        from safetensors.torch import load_file
        ids = load_file(data_file)["input_ids"]
        if ids.dim() != 2 or ids.shape[0] < rows or ids.shape[1] != seq:
            sys.exit(f"{data_file}: input_ids is {list(ids.shape)} but {total} steps of {batch} x {seq} need [{rows}, {seq}]")
        ids = ids[:rows]
    else:
        ids = torch.randint(0, vocab, (rows, seq), dtype=torch.int64, generator=torch.Generator().manual_seed(args.seed))

    # 3. Train, timing the steps after warm-up.
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    sync()
    t0 = time.perf_counter()
    for step in range(total):
        if step == args.warmup_steps:
            sync()
            t0 = time.perf_counter()
        x = ids[step * batch:(step + 1) * batch].to(device)
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    sync()
    seconds = time.perf_counter() - t0

    # 4. Report: the same lines as `gpu-train`.
    losses = [float(l) for l in losses]
    for i, l in enumerate(losses):
        print(f"step {i + 1} loss {l:.6f}")
    tps = batch * seq * args.steps / seconds
    print("\t".join(["RESULT", "peft", args.config, repr(tps), str(args.steps), repr(seconds), repr(losses[0]), repr(losses[-1])]))
    if device.type == "cuda":
        gib = 2 ** 30
        print(f"TORCH_PEAK\t{torch.cuda.max_memory_allocated(device) / gib!r}\t{torch.cuda.max_memory_reserved(device) / gib!r}")
    if args.losses_out:
        with open(args.losses_out, "w") as f:
            json.dump({"impl": "peft", "config": args.config, "losses": losses}, f)
    return 0


def shape_of(args):
    shape = list(SHAPES[args.config])
    if getattr(args, "batch", None):
        shape[6] = args.batch
    if getattr(args, "seq", None):
        shape[7] = args.seq
    if getattr(args, "gradient_checkpointing", False):
        shape[8] = True
    return tuple(shape)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "init"):
        s = sub.add_parser(name)
        s.add_argument("--config", choices=sorted(SHAPES), default="a")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--batch", type=int)
        s.add_argument("--seq", type=int)
    t = sub.choices["train"]
    t.add_argument("--device", default="cuda")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup-steps", type=int, default=5)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--optim", choices=["fused", "foreach", "single"], default="fused")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--init", help="folder written by `init`: start from its base, adapter and data")
    t.add_argument("--data", help="safetensors file with input_ids [N, seq]")
    t.add_argument("--losses-out")
    i = sub.choices["init"]
    i.add_argument("--out", required=True)
    i.add_argument("--rows", type=int, default=400)
    args = p.parse_args(argv)
    return cmd_train(args) if args.cmd == "train" else cmd_init(args)


if __name__ == "__main__":
    sys.exit(main())
