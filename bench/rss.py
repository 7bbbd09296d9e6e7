#!/usr/bin/env python3
"""Peak resident memory of a process tree, sampled from /proc.

Every --interval seconds (default 0.1) it sums VmRSS over PID and all its
descendants (for llm-node: the supervisor and its worker processes) and keeps
the highest sum. It stops when PID exits or on SIGTERM/SIGINT, then writes
{"peak_rss_kib", "peak_processes", "samples", ...} as JSON to --out.

RSS counts shared pages (the mmapped GGUF, shared libraries) once per
process, so a tree of several processes mapping the same file reads higher
than its real footprint; with one worker per model the double counting is
limited to the supervisor's own libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time


def children(pid: int) -> list[int]:
    """Direct children, via /proc/PID/task/*/children (Linux >= 3.5)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children(pid))
    return pids


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # exited between listing and reading, or a zombie


def main() -> None:
    p = argparse.ArgumentParser(description="peak RSS of a process tree")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.1)
    args = p.parse_args()

    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    peak, peak_procs, samples, most_procs = 0, 0, 0, 0
    start = time.monotonic()
    while not stop and os.path.exists(f"/proc/{args.pid}"):
        pids = tree(args.pid)
        total = sum(rss_kib(pid) for pid in pids)
        samples += 1
        most_procs = max(most_procs, len(pids))
        if total > peak:
            peak, peak_procs = total, len(pids)
        time.sleep(args.interval)

    with open(args.out, "w") as f:
        json.dump({
            "pid": args.pid,
            "peak_rss_kib": peak,
            "peak_rss_mib": round(peak / 1024, 1),
            "peak_processes": peak_procs,
            "max_processes": most_procs,
            "samples": samples,
            "interval_s": args.interval,
            "duration_s": round(time.monotonic() - start, 2),
        }, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
