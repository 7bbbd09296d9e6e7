#!/usr/bin/env python3
"""Load-independent figures of an agentic benchmark run, from llm-node's
/metrics as bench/agentic/run.sh scrapes them after each workload
(`RAW/NAME.{agentic,edit}.rR.metrics`, cumulative since the server started;
the edit figures are the difference between the two scrapes).

Per llm-node configuration and workload:
  drafted / accepted   n-gram draft tokens verified / kept
  tok/step             generated tokens per decode step of a sequence:
                       (tokens - requests) / (tokens - requests - accepted)
                       (a request's first token comes from its prefill)
  queue share          sum of queue waits (arrival -> a slot takes it) /
                       sum of TTFTs: the part of TTFT spent waiting for a
                       slot; the rest is prefill and the first sample
  cache hits / copies  host-RAM restores / slot-to-slot copies

Timings on a loaded machine are noise; these ratios are not (greedy output is
deterministic), except queue share, which is a ratio of two timings taken on
the same clock under the same load.

usage: steps.py RAW_DIR [SERVER ...]
"""

from __future__ import annotations

import glob
import os
import re
import sys

LINE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+|NaN)$')


def parse(path: str) -> dict[str, float]:
    """Sum of each metric over its label sets (model "bench" only is served)."""
    out: dict[str, float] = {}
    with open(path) as f:
        for line in f:
            m = LINE.match(line.strip())
            if not m or m.group(3) == "NaN":
                continue
            name, labels = m.group(1), m.group(2) or ""
            if "le=" in labels:
                continue
            out[name] = out.get(name, 0.0) + float(m.group(3))
    return out


def figures(cur: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    d = {k: cur.get(k, 0.0) - before.get(k, 0.0) for k in cur}
    tokens = d.get("llm_node_tokens_generated_total", 0.0)
    requests = d.get("llm_node_time_to_first_token_seconds_count", 0.0)
    drafted = d.get("llm_node_spec_draft_tokens", 0.0)
    accepted = d.get("llm_node_spec_accepted_tokens", 0.0)
    steps = tokens - requests - accepted
    ttft = d.get("llm_node_time_to_first_token_seconds_sum", 0.0)
    wait = d.get("llm_node_queue_wait_seconds_sum", 0.0)
    return {
        "requests": requests,
        "tokens": tokens,
        "drafted": drafted,
        "accepted": accepted,
        "accept_rate": accepted / drafted if drafted else float("nan"),
        "tok_per_step": (tokens - requests) / steps if steps > 0 else float("nan"),
        "queue_share": wait / ttft if ttft else float("nan"),
        "ttft_mean_s": ttft / requests if requests else float("nan"),
        "wait_mean_s": wait / requests if requests else float("nan"),
        "hits": d.get("llm_node_prompt_cache_hits", 0.0),
        "copies": d.get("llm_node_prompt_cache_copies", 0.0),
    }


def main(argv: list[str]) -> int:
    raw = argv[1]
    servers = argv[2:] or sorted({os.path.basename(p).split(".")[0]
                                  for p in glob.glob(f"{raw}/*.metrics")})
    print("| server | workload | run | requests | tokens | drafted | accepted | accept % "
          "| tok/step | queue share of TTFT | mean TTFT s | mean wait s | restores | copies |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in servers:
        for a in sorted(glob.glob(f"{raw}/{s}.agentic.r*.metrics")):
            r = a.rsplit(".r", 1)[1].split(".")[0]
            ag = parse(a)
            rows = [("agentic", figures(ag, {}))]
            e = f"{raw}/{s}.edit.r{r}.metrics"
            if os.path.exists(e):
                rows.append(("edit", figures(parse(e), ag)))
            for w, f in rows:
                print(f"| {s} | {w} | {r} | {f['requests']:.0f} | {f['tokens']:.0f} "
                      f"| {f['drafted']:.0f} | {f['accepted']:.0f} | {100 * f['accept_rate']:.0f} "
                      f"| {f['tok_per_step']:.2f} | {100 * f['queue_share']:.0f} % "
                      f"| {f['ttft_mean_s']:.2f} | {f['wait_mean_s']:.2f} "
                      f"| {f['hits']:.0f} | {f['copies']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
