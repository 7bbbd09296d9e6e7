#!/usr/bin/env python3
"""Writes the context of a benchmark run as JSON to stdout: command, date,
git commit, machine, parameters and the llama.cpp versions on both sides.

bench/run.sh passes everything it decided in BENCH_* environment variables;
this script only looks up the rest (git, lscpu, Cargo.lock, the cargo
registry) and never fails on a missing piece: it records null instead.
Run from the repository root.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess

try:
    import tomllib  # Python 3.11+
except ImportError:  # older Pythons: the crate versions are recorded as null
    tomllib = None


def sh(*cmd: str) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def lock_version(name: str) -> str | None:
    if tomllib is None:
        return None
    try:
        with open("Cargo.lock", "rb") as f:
            lock = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return next((p["version"] for p in lock.get("package", []) if p["name"] == name), None)


def ggml_version(llama_cpp_dir: str) -> str | None:
    text = read(os.path.join(llama_cpp_dir, "ggml", "CMakeLists.txt")) or ""
    parts = [re.search(rf"set\(GGML_VERSION_{k} (\d+)\)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts) if all(parts) else None


def llm_node_llama_cpp() -> dict:
    sys_version = lock_version("llama-cpp-sys-2")
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    dirs = glob.glob(f"{cargo_home}/registry/src/*/llama-cpp-sys-2-{sys_version}") if sys_version else []
    vcs = json.loads(read(f"{dirs[0]}/.cargo_vcs_info.json") or "null") if dirs else None
    return {
        "llama_cpp_2": lock_version("llama-cpp-2"),
        "llama_cpp_sys_2": sys_version,
        "llama_cpp_rs_commit": (vcs or {}).get("git", {}).get("sha1"),
        "ggml_version": ggml_version(f"{dirs[0]}/llama.cpp") if dirs else None,
    }


def lscpu_field(lscpu: str, name: str) -> str | None:
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def main() -> None:
    env = os.environ
    ints = lambda name: [int(x) for x in env[name].split()]  # noqa: E731
    lscpu = sh("lscpu") or ""
    meminfo = read("/proc/meminfo") or ""
    mem = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    bin_dir = env.get("BENCH_LLAMA_BIN_DIR", "")
    raw = env["BENCH_RAW"]
    model = env["BENCH_MODEL"]
    meta = {
        "command": env["BENCH_COMMAND"],
        "date_utc": sh("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": sh("git", "rev-parse", "HEAD"),
        "git_dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
        "cpu_model": lscpu_field(lscpu, "Model name"),
        "cpus": os.cpu_count(),
        "mem_total_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": sh("uname", "-sr"),
        "lscpu": lscpu,
        "model": model,
        "model_mib": round(os.path.getsize(model) / 2**20, 1),
        "servers": env["BENCH_SERVERS"].split(),
        "params": {
            "ctx_per_slot": int(env["BENCH_CTX"]),
            "parallel": int(env["BENCH_PARALLEL"]),
            "threads": int(env["BENCH_THREADS"]),
            "batch": int(env["BENCH_BATCH"]),
            "runs": int(env["BENCH_RUNS"]),
            "concurrency": ints("BENCH_CONCURRENCY"),
            "prompt_lengths": ints("BENCH_PROMPT_LENGTHS"),
            "max_tokens": int(env["BENCH_MAX_TOKENS"]),
            "requests_per_client": int(env["BENCH_REQUESTS_PER_CLIENT"]),
            "min_requests": int(env["BENCH_MIN_REQUESTS"]),
            "quick": env.get("BENCH_QUICK") == "1",
        },
        "llama_server_build": json.loads(read(f"{bin_dir}/bench-info.json") or "null"),
        "llama_server_version": read(f"{raw}/llama-server.version"),
        "llm_node_llama_cpp": llm_node_llama_cpp(),
        "llm_node_version": read(f"{raw}/llm-node.version"),
        "commands": {
            name: read(f"{raw}/{name}.cmd") for name in env["BENCH_SERVERS"].split()
        },
    }
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
