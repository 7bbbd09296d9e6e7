#!/usr/bin/env python3
"""Per-thread CPU time of a process, for serving-overhead figures.

  threads.py snap PID > before.json      every thread's CPU time in ns
                                          (/proc/PID/task/TID/schedstat) and name
  threads.py diff before.json after.json TOKENS [--skip-compute]

`diff` prints the CPU spent between the snapshots per streamed token: all
threads, or with --skip-compute the threads that are not llama.cpp's compute
threads (the main inference thread, i.e. the process's first thread, and the
OpenMP pool: every thread that used more than a third of the main thread's
time). For llama-server that leaves its HTTP threads: its serving overhead.
"""

from __future__ import annotations

import json
import os
import sys


def snap(pid: int) -> dict:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        out[tid] = {"ns": ns, "comm": comm}
    return {"pid": pid, "threads": out}


def diff(before: dict, after: dict, tokens: int, skip_compute: bool) -> str:
    pid = str(after["pid"])
    used = {
        tid: t["ns"] - before["threads"].get(tid, {"ns": 0})["ns"]
        for tid, t in after["threads"].items()
    }
    names = {tid: t["comm"] for tid, t in after["threads"].items()}
    skipped = []
    if skip_compute:
        main = used.get(pid, 0)
        skipped = [tid for tid, ns in used.items() if tid == pid or ns > main / 3]
    counted = {tid: ns for tid, ns in used.items() if tid not in skipped}
    total = sum(counted.values())
    top = sorted(counted.items(), key=lambda kv: -kv[1])[:4]
    detail = ", ".join(f"{names[t]}[{t}] {ns / tokens / 1000:.1f}" for t, ns in top if ns)
    return (
        f"{total / tokens / 1000:.1f} us/token over {len(counted)} threads "
        f"({len(skipped)} compute threads left out; top: {detail})"
    )


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "snap":
        json.dump(snap(int(argv[1])), sys.stdout)
        return 0
    if len(argv) >= 4 and argv[0] == "diff":
        with open(argv[1]) as f:
            before = json.load(f)
        with open(argv[2]) as f:
            after = json.load(f)
        print(diff(before, after, int(argv[3]), "--skip-compute" in argv))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
