#!/usr/bin/env bash
# HERE, on the development machine (no GPU needed): builds what benchmarks/gpu/run.sh runs on the GPU machine.
# Step 1 of shared/device/README.md: publish the benchmark app and the CLI self-contained for linux-x64 WITHOUT a bundled
# libtorch (-p:PeftSharpLibTorch=system; there they use PyTorch's libtorch through gpu-env.sh), pack them into
# .carry/app.tar.xz, and copy gpu-env.sh beside it (only the checkout travels, not ../shared). Then call the device tool's
# run with carry [".carry"] and command "bash benchmarks/gpu/run.sh" (README, "GPU").
set -euo pipefail
cd "$(dirname "$0")/../.."
gpu_env=${GPU_ENV:-../shared/device/gpu-env.sh}
[ -f "$gpu_env" ] || { echo "publish.sh: $gpu_env not found (set GPU_ENV to shared/device/gpu-env.sh)" >&2; exit 2; }

pub=$(mktemp -d)
trap 'rm -rf "$pub"' EXIT
common=(-c Release -r linux-x64 --self-contained -p:PeftSharpLibTorch=system -p:SatelliteResourceLanguages=en -o "$pub" -v quiet -nologo)
dotnet publish benchmarks/PeftSharp.Benchmarks "${common[@]}"
dotnet publish src/PeftSharp.Cli "${common[@]}"

# The point of the system variant: no libtorch inside (it is ~600 MB; a device call carries 64 MiB in all).
if ls "$pub" | grep -E '^lib(torch|c10)' >/dev/null; then
  echo "publish.sh: libtorch libraries ended up in the publish folder; is PeftSharpLibTorch=system honoured?" >&2
  exit 1
fi
[ -f "$pub/libLibTorchSharp.so" ] || { echo "publish.sh: TorchSharp's native shim libLibTorchSharp.so is missing from $pub" >&2; exit 1; }

mkdir -p .carry
rm -f .carry/app.tar.xz
XZ_OPT=-T0 tar cJf .carry/app.tar.xz -C "$pub" .
cp "$gpu_env" .carry/gpu-env.sh

# What travels: tracked and untracked-not-ignored files, plus the carried folder; the device tool takes 64 MiB.
tar_bytes=$(stat -c %s .carry/app.tar.xz)
tree_bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
carry_bytes=$(du -sb .carry | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "publish.sh: .carry/app.tar.xz $(mib "$tar_bytes") MiB (publish folder $(du -sm "$pub" | cut -f1) MiB); working tree $(mib "$tree_bytes") MiB + .carry $(mib "$carry_bytes") MiB"
if (( tar_bytes > 40 * 1048576 )); then echo "publish.sh: the tarball is over 40 MiB" >&2; exit 1; fi
if (( tree_bytes + carry_bytes > 60 * 1048576 )); then echo "publish.sh: tree + .carry is over 60 MiB, too near the 64 MiB a call takes" >&2; exit 1; fi
echo "publish.sh: ready. Device tool: run with carry [\".carry\"] and command \"bash benchmarks/gpu/run.sh\""
