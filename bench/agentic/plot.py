"""Plots of the agentic benchmark: one row per workload (agentic, edit), one
column per figure (TTFT p50, request latency p50, generated tokens/s), a
bar per server at the median of its runs, the whiskers at the lowest and
highest run.

    python plot.py RAW_DIR "SERVERS" RUNS OUT.png

RAW_DIR holds run.sh's `<server>.<workload>.r<N>.json` files.
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = [
    ("TTFT p50 (ms)", lambda x: x["ttft_ms"]["p50"]),
    ("latency p50 (ms)", lambda x: (x.get("latency_ms") or {}).get("p50")),
    ("generated tokens/s", lambda x: x["gen_tok_s"]),
]
WORKLOADS = ["agentic", "edit"]


def runs_of(raw: str, server: str, workload: str, runs: int) -> list[dict]:
    out = []
    for r in range(1, runs + 1):
        try:
            with open(f"{raw}/{server}.{workload}.r{r}.json") as f:
                out.append(json.load(f))
        except FileNotFoundError:
            pass
    return out


def main() -> None:
    raw, servers, runs, out = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), sys.argv[4]
    fig, axes = plt.subplots(len(WORKLOADS), len(FIGURES), figsize=(15, 8), squeeze=False)
    for row, workload in enumerate(WORKLOADS):
        for col, (title, value) in enumerate(FIGURES):
            ax = axes[row][col]
            names, mids, lows, highs = [], [], [], []
            for s in servers:
                vals = [v for v in (value(x) for x in runs_of(raw, s, workload, runs)) if v is not None]
                if not vals:
                    continue
                mid = statistics.median(vals)
                names.append(s)
                mids.append(mid)
                lows.append(mid - min(vals))
                highs.append(max(vals) - mid)
            colors = ["tab:orange" if n.startswith("llama-server") else "tab:blue" for n in names]
            ax.bar(range(len(names)), mids, yerr=[lows, highs], color=colors, capsize=4)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
            ax.set_title(f"{workload}: {title}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"bench/agentic: median of {runs} run(s), whiskers = lowest and highest run")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main()
