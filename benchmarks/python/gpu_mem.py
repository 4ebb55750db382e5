#!/usr/bin/env python3
"""Runs a command and samples GPU 0's memory while it runs, the same way whatever the command is (our .NET benchmark or
the Python reference), so that their peaks compare like with like.

    python3 gpu_mem.py --json OUT.json [--interval-ms 20] [--timeout-s 300] -- COMMAND ARGS...

Writes {"method", "baseline_mib", "peak_used_mib", "peak_delta_mib", "peak_process_mib", "exit_code"} to OUT.json and
exits with the command's exit code (124 when --timeout-s ran out and the command was killed). peak_delta_mib (device memory used above what was used before the command started)
is the figure run.sh compares: it holds everything the process took on the device (CUDA context, the caching
allocator's reserve), for both programs alike. peak_process_mib is NVML's per-process figure when the driver reports
it (not in every container), else null. Reads NVML through pynvml (nvidia-ml-py), else polls nvidia-smi; with neither
(a machine without a GPU) it only runs the command and records nulls.
"""
import json
import subprocess
import sys
import threading
import time


def nvml_reader():
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:
        return None

    def read(pid):
        used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2 ** 20
        proc = None
        try:
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if p.pid == pid and p.usedGpuMemory is not None:
                    proc = p.usedGpuMemory / 2 ** 20
        except Exception:
            pass
        return used, proc
    return "nvml", read


def smi_reader():
    def query(what):
        out = subprocess.run(["nvidia-smi", f"--query-{what}", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines() if out.returncode == 0 else None
    try:
        if query("gpu=memory.used") is None:
            return None
    except (OSError, subprocess.SubprocessError):
        return None

    def read(pid):
        used = float(query("gpu=memory.used")[0])
        proc = None
        for line in query("compute-apps=pid,used_memory") or []:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 2 and fields[0] == str(pid) and fields[1].replace(".", "").isdigit():
                proc = float(fields[1])
        return used, proc
    return "nvidia-smi", read


def main(argv):
    if "--" not in argv:
        sys.exit(__doc__)
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1:]
    out_path = opts[opts.index("--json") + 1] if "--json" in opts else None
    interval = float(opts[opts.index("--interval-ms") + 1]) / 1000 if "--interval-ms" in opts else 0.02
    timeout = float(opts[opts.index("--timeout-s") + 1]) if "--timeout-s" in opts else None

    reader = nvml_reader() or smi_reader()
    method, read = reader if reader else ("none", None)
    baseline = read(-1)[0] if read else None
    peak = {"used": None, "proc": None}
    child = subprocess.Popen(cmd)
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                used, proc = read(child.pid)
            except Exception:
                used, proc = None, None
            if used is not None and (peak["used"] is None or used > peak["used"]):
                peak["used"] = used
            if proc is not None and (peak["proc"] is None or proc > peak["proc"]):
                peak["proc"] = proc
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True) if read else None
    if sampler:
        sampler.start()
    try:
        code = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        print(f"gpu_mem: killed {cmd[0]} after {timeout:g} s", file=sys.stderr)
        code = 124
    done.set()
    if sampler:
        sampler.join()
    result = {
        "method": method,
        "baseline_mib": baseline,
        "peak_used_mib": peak["used"],
        "peak_delta_mib": None if peak["used"] is None or baseline is None else peak["used"] - baseline,
        "peak_process_mib": peak["proc"],
        "exit_code": code,
    }
    if out_path:
        with open(out_path, "w") as f:
            json.dump(result, f)
    print(f"gpu_mem: {json.dumps(result)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
