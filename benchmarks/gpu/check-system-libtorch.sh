#!/usr/bin/env bash
# HERE, no GPU needed: checks the -p:PeftSharpLibTorch=system build's run-time loading of an installed libtorch, using
# the CPU libtorch that NuGet restored for the default build as the "installed" one. Three cases: nothing set (must
# fail, naming PEFTSHARP_LIBTORCH_DIR), PEFTSHARP_LIBTORCH_DIR, LD_LIBRARY_PATH (both must generate text).
set -euo pipefail
cd "$(dirname "$0")/../.."
native=${LIBTORCH_DIR:-$HOME/.nuget/packages/libtorch-cpu-linux-x64/2.10.0/runtimes/linux-x64/native}
[ -f "$native/libtorch.so" ] || { echo "no libtorch.so in $native: build the default variant once (dotnet build -c Release) or set LIBTORCH_DIR" >&2; exit 2; }
dotnet build src/PeftSharp.Cli -c Release -p:PeftSharpLibTorch=system -v quiet -nologo
cli=src/PeftSharp.Cli/bin/system/Release/net10.0/PeftSharp.Cli
ls "$(dirname "$cli")"/runtimes/linux-x64/native | grep -q '^libtorch' && { echo "FAIL: the system build bundles libtorch" >&2; exit 1; }
args=(generate --model models/tinycode-3m --prompt "def f(" --max-new-tokens 8)

if out=$(env -u PEFTSHARP_LIBTORCH_DIR LD_LIBRARY_PATH= "$cli" "${args[@]}" 2>&1); then
  echo "FAIL: ran with no libtorch anywhere" >&2; exit 1
fi
grep -q PEFTSHARP_LIBTORCH_DIR <<<"$out" || { echo "FAIL: the error does not say what to set: $out" >&2; exit 1; }
echo "ok: no libtorch -> $(head -c 120 <<<"$out")..."
PEFTSHARP_LIBTORCH_DIR=$native "$cli" "${args[@]}" >/dev/null && echo "ok: PEFTSHARP_LIBTORCH_DIR"
LD_LIBRARY_PATH=$native "$cli" "${args[@]}" >/dev/null && echo "ok: LD_LIBRARY_PATH"
