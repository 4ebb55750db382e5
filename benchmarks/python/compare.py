#!/usr/bin/env python3
"""Reads what benchmarks/gpu/run.sh left in a results folder and prints the comparison (Markdown). Standard library only.

    python3 compare.py RESULTS_DIR [--configs a,b,b-ckpt,c]

Per config it reads ours-<config>.log and peft-<config>.log (the RESULT and TORCH_PEAK lines that gpu-train and
peft_bench.py print) and ours-<config>.mem.json / peft-<config>.mem.json (gpu_mem.py). For the loss curves it reads
losses-ours.json and losses-peft.json.
"""
import json
import os
import sys

# The issue's targets: ours / PEFT tokens/s at least this, and peak memory at most PEFT's.
SPEED_TARGET = {"a": 1.3, "b": 1.1, "b-ckpt": 1.1, "c": 1.1}
# "Agree within bf16 noise", as we judge it: every step within LOSS_MAX_ABS nats and the mean gap within LOSS_MEAN_ABS.
# Two bf16 runs with different kernels (attention, reduction order) drift apart by about 1e-2 over tens of steps.
LOSS_MAX_ABS = 0.05
LOSS_MEAN_ABS = 0.02
GIB = 1024.0  # MiB per GiB


def read_log(path):
    """(RESULT fields, TORCH_PEAK fields or None, last error line or None) of a benchmark log."""
    result, peak, error = None, None, None
    if not os.path.exists(path):
        return None, None, "no log"
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("RESULT\t"):
                result = line.split("\t")
            elif line.startswith("TORCH_PEAK\t"):
                peak = line.split("\t")
            elif line.startswith("error:") or "Error" in line or "Exception" in line:
                error = line.strip()
    return result, peak, error


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def speed_table(d, configs):
    lines = [
        "| config | ours tok/s | PEFT tok/s | ratio | ours peak GiB | PEFT peak GiB | ratio | target met | PEFT max_allocated GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for c in configs:
        ours, _, ours_err = read_log(os.path.join(d, f"ours-{c}.log"))
        peft, peft_peak, peft_err = read_log(os.path.join(d, f"peft-{c}.log"))
        ours_mem = read_json(os.path.join(d, f"ours-{c}.mem.json")) or {}
        peft_mem = read_json(os.path.join(d, f"peft-{c}.mem.json")) or {}
        ours_tps = float(ours[3]) if ours else None
        peft_tps = float(peft[3]) if peft else None
        ours_gib = ours_mem.get("peak_delta_mib") / GIB if ours and ours_mem.get("peak_delta_mib") is not None else None
        peft_gib = peft_mem.get("peak_delta_mib") / GIB if peft and peft_mem.get("peak_delta_mib") is not None else None
        speed, mem = ratio(ours_tps, peft_tps), ratio(ours_gib, peft_gib)
        met = "n/a" if speed is None else (
            "yes" if speed >= SPEED_TARGET.get(c, 1.0) and (mem is None or mem <= 1.0) else "no")
        allocated = float(peft_peak[1]) if peft_peak else None
        lines.append(f"| {c} | {fmt(ours_tps, ',.0f')} | {fmt(peft_tps, ',.0f')} | {fmt(speed, '.2f')} | {fmt(ours_gib, '.2f')} | "
                     f"{fmt(peft_gib, '.2f')} | {fmt(mem, '.2f')} | {met} | {fmt(allocated, '.2f')} |")
        if not ours:
            notes.append(f"- {c}, ours: failed ({ours_err or 'no RESULT line'})")
        if not peft:
            notes.append(f"- {c}, PEFT: failed ({peft_err or 'no RESULT line'})")
    return lines, notes


def loss_report(d):
    ours = read_json(os.path.join(d, "losses-ours.json"))
    peft = read_json(os.path.join(d, "losses-peft.json"))
    if not ours or not peft:
        return [f"loss curves: not compared (missing {'losses-ours.json' if not ours else 'losses-peft.json'})"]
    a, b = ours["losses"], peft["losses"]
    n = min(len(a), len(b))
    if n == 0:
        return ["loss curves: not compared (no steps)"]
    gaps = [abs(a[i] - b[i]) for i in range(n)]
    worst = max(range(n), key=lambda i: gaps[i])
    mean = sum(gaps) / n
    agree = gaps[worst] <= LOSS_MAX_ABS and mean <= LOSS_MEAN_ABS
    return [
        f"loss curves, config {ours.get('config')}, {n} steps from the same init and data: "
        f"step 1 ours {a[0]:.4f} / PEFT {b[0]:.4f}; step {n} ours {a[n - 1]:.4f} / PEFT {b[n - 1]:.4f}; "
        f"max |diff| {gaps[worst]:.4f} (step {worst + 1}), mean |diff| {mean:.4f}: "
        + ("AGREE" if agree else "DIFFER")
        + f" (bar: max <= {LOSS_MAX_ABS}, mean <= {LOSS_MEAN_ABS})",
    ]


def main(argv):
    if not argv:
        sys.exit(__doc__)
    d = argv[0]
    configs = ["a", "b", "b-ckpt", "c"]
    if "--configs" in argv:
        configs = argv[argv.index("--configs") + 1].split(",")
    table, notes = speed_table(d, configs)
    print("\n".join(table))
    if notes:
        print("\n".join(notes))
    print()
    print("\n".join(loss_report(d)))
    print()
    print("peak GiB: device memory in use above the idle baseline while the process ran (NVML or nvidia-smi, sampled every "
          "20 ms by gpu_mem.py; includes the CUDA context and the caching allocator's reserve), the same for both. "
          "PEFT max_allocated: torch.cuda.max_memory_allocated, the figure the issue quotes.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
