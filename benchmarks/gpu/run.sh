#!/usr/bin/env bash
# ON THE GPU MACHINE: bash benchmarks/gpu/run.sh
# (after benchmarks/gpu/publish.sh on the development machine; the device tool's run carries [".carry"]).
# Unpacks the app, sources gpu-env.sh (PyTorch's libtorch for TorchSharp), then for each config runs our gpu-train and
# the Python PEFT reference (benchmarks/python/peft_bench.py) one after the other, each under gpu_mem.py, which samples
# the device's memory the same way for both; then the loss-curve comparison (same init, same data) on config a; then
# prints the table (benchmarks/python/compare.py). Results and logs go to $OUT when it is set (table.md, logs.tar.gz).
# Knobs (environment): CONFIGS ("a b b-ckpt c"), STEPS (20), WARMUP (5), LOSS_CONFIG (a), LOSS_STEPS (50), LOSS_LR (1e-3),
# DEVICE (cuda), BUDGET_S (520: later runs are skipped past it, to stay inside a 10-minute call), PER_RUN_S (180).
# A smoke test without a GPU: DEVICE=cpu CONFIGS=tiny LOSS_CONFIG=tiny LOSS_STEPS=3 STEPS=2 WARMUP=1 bash benchmarks/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
CONFIGS=${CONFIGS:-"a b b-ckpt c"}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
LOSS_CONFIG=${LOSS_CONFIG:-a}
LOSS_STEPS=${LOSS_STEPS:-50}
LOSS_LR=${LOSS_LR:-1e-3}
BUDGET_S=${BUDGET_S:-520}
PER_RUN_S=${PER_RUN_S:-180}
DEVICE=${DEVICE:-cuda}
res=${RESULTS_DIR:-/tmp/peftsharp-gpu-results}
app=/tmp/peftsharp-app
start=$SECONDS

[ -f .carry/app.tar.xz ] && [ -f .carry/gpu-env.sh ] || {
  echo "run.sh: .carry/app.tar.xz or .carry/gpu-env.sh missing: run benchmarks/gpu/publish.sh first, and carry [\".carry\"]" >&2
  exit 2
}
rm -rf "$res" "$app" && mkdir -p "$res" "$app"
tar xJf .carry/app.tar.xz -C "$app"
# shellcheck disable=SC1091
source .carry/gpu-env.sh
export PYTHONUNBUFFERED=1
bench="$app/PeftSharp.Benchmarks"
py=benchmarks/python

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
  echo "device $DEVICE; steps: $WARMUP warm-up + $STEPS timed per config; loss curves: $LOSS_STEPS steps at lr $LOSS_LR on config $LOSS_CONFIG"
} 2>&1 | tee "$res/env.txt"

# run NAME COMMAND...: one process under the memory sampler, its output in $res/NAME.log.
run() {
  local name=$1; shift
  local left=$(( BUDGET_S - (SECONDS - start) ))
  if (( left < 20 )); then
    echo "error: skipped, the time budget (BUDGET_S=$BUDGET_S) was spent" > "$res/$name.log"
    echo "== $name: skipped (time budget spent)"
    return
  fi
  local limit=$(( left < PER_RUN_S ? left : PER_RUN_S ))
  python3 "$py/gpu_mem.py" --json "$res/$name.mem.json" --timeout-s "$limit" -- "$@" > "$res/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc at $(( SECONDS - start )) s: $(grep -m1 -E '^RESULT|^error' "$res/$name.log" || tail -n 1 "$res/$name.log")"
}

# 1. Loss curves: Python writes the random init (base + LoRA) and the data; both train LOSS_STEPS steps from them.
init=/tmp/peftsharp-init
rm -rf "$init"
run init python3 "$py/peft_bench.py" init --config "$LOSS_CONFIG" --out "$init" --rows $(( 8 * LOSS_STEPS ))
run loss-peft python3 "$py/peft_bench.py" train --config "$LOSS_CONFIG" --device "$DEVICE" --init "$init" --steps "$LOSS_STEPS" \
  --warmup-steps 0 --lr "$LOSS_LR" --losses-out "$res/losses-peft.json"
run loss-ours "$bench" gpu-train --config "$LOSS_CONFIG" --device "$DEVICE" --init "$init" --steps "$LOSS_STEPS" \
  --warmup-steps 0 --lr "$LOSS_LR" --losses-out "$res/losses-ours.json"

# 2. Throughput and peak memory, ours then PEFT, config by config.
for c in $CONFIGS; do
  run "ours-$c" "$bench" gpu-train --config "$c" --device "$DEVICE" --steps "$STEPS" --warmup-steps "$WARMUP"
  run "peft-$c" python3 "$py/peft_bench.py" train --config "$c" --device "$DEVICE" --steps "$STEPS" --warmup-steps "$WARMUP"
done

echo
python3 "$py/compare.py" "$res" --configs "$(echo $CONFIGS | tr ' ' ',')" | tee "$res/table.md"
echo "run.sh: done in $(( SECONDS - start )) s"
if [ -n "${OUT:-}" ]; then
  cp "$res/table.md" "$OUT/table.md"
  tar czf "$OUT/logs.tar.gz" -C "$res" .
fi
