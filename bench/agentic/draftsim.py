#!/usr/bin/env python3
"""Replays n-gram drafting offline on the edit answers of an agentic run, to
compare drafting rules without a model or a quiet machine.

Greedy answers do not depend on drafting, so the token ids of prompt + answer
(from a running llm-node's `/tokenize`) fix, for any drafting rule, how many
decode steps it takes and how many draft tokens it verifies and keeps. The
rules here re-implement worker/src/draft.rs (`lookup` = longest match,
`Pace`) and the earlier one (latest n-gram, fixed length); on the round-4
runs they reproduced the measured counts exactly (docs/benchmarks.md).
Keep them in step with draft.rs when it changes.

usage: draftsim.py URL RAW_DIR   (RAW_DIR holds llm-node-spec.edit.r1.json)
"""
import glob
import json
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import agentic as A  # noqa: E402

URL = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else ""
def tok(text):
    r = urllib.request.Request(URL + "/tokenize", data=json.dumps({"model":"bench","content":text}).encode(), headers={"content-type":"application/json"})
    return json.load(urllib.request.urlopen(r, timeout=120))["tokens"]

def lookup_latest(h, n, mx):
    L = len(h)
    if n == 0 or mx == 0 or L <= n: return []
    key = h[L-n:]
    for i in range(L-n-1, -1, -1):
        if h[i:i+n] == key:
            return h[i+n:min(L, i+n+mx)]
    return []

def lookup_longest(h, n, mx, cap=32):
    L = len(h)
    if n == 0 or mx == 0 or L <= n: return []
    cap = max(cap, n); best = None
    for end in range(L-1, n-1, -1):
        m = 0
        while m < cap and m < end and h[end-1-m] == h[L-1-m]: m += 1
        if m >= n and (best is None or m > best[1]):
            best = (end, m)
            if m == cap: break
    return [] if best is None else h[best[0]:min(L, best[0]+mx)]

class Pace:
    def __init__(s, first=8): s.len, s.misses, s.pause = first, 0, 0
    def allowed(s, most):
        if s.pause > 0: s.pause -= 1; return 0
        return min(s.len, most)
    def record(s, d, a, most):
        if d == 0: return
        if a >= d: s.len = min(s.len*2, max(most, 2)); s.misses = 0; return
        s.len = max(s.len//2, 2)
        if a > 0: s.misses = 0; return
        s.misses += 1
        if s.misses >= 3: s.pause = 8 << min(s.misses-3, 5)

class Fixed:
    def __init__(s, n): s.n = n
    def allowed(s, most): return min(s.n, most)
    def record(s, d, a, most): pass

def simulate(prompt, answer, lookup, pace, n=3, most=32):
    # answer[0] comes from prefill; each step decodes `next` + draft
    h = prompt + answer[:1]; pos = 1; steps = 0; drafted = 0; acc = 0
    while pos < len(answer):
        left = len(answer) - pos - 1  # max_tokens room after next
        mx = min(pace.allowed(most), max(left, 0))
        d = lookup(h, n, mx) if mx > 0 else []
        # next token (already sampled) is h[-1]; verification samples answer[pos], ...
        k = 0
        while k < len(d) and d[k] == answer[pos+k]: k += 1
        pace.record(len(d), k, most)
        drafted += len(d); acc += k
        got = k + 1
        h = h + answer[pos:pos+got]; pos += got; steps += 1
    return steps, drafted, acc

def cases(raw):
    out = []
    for f in glob.glob(raw + "/llm-node-spec.edit.r1.json"):
        d = json.load(open(f)); c = d["config"]
        prompts = [A.edit_prompt(c["seed"], i, c["snippet_funcs"]) for i in range(c["edits"])]
        for ans in d["answers"]:
            first = ans.split("\n")[0]
            p = next(p for p in prompts if first in p)
            out.append(("edit", p, ans))
    return out

raw = sys.argv[2]
data = []
for kind, p, ans in cases(raw):
    pt = tok(p); full = tok(p + ans)
    k = 0
    while k < len(pt) and k < len(full) and pt[k] == full[k]: k += 1
    data.append((kind, full[:k], full[k:]))
policies = {
  "old: latest 3-gram, 8": (lookup_latest, lambda: Fixed(8)),
  "latest 3-gram, 16": (lookup_latest, lambda: Fixed(16)),
  "latest 3-gram, pace 32": (lookup_latest, lambda: Pace()),
  "longest, 8": (lookup_longest, lambda: Fixed(8)),
  "longest, pace 16": (lookup_longest, lambda: Pace()),
  "new: longest, pace 32": (lookup_longest, lambda: Pace()),
  "longest, pace 64": (lookup_longest, lambda: Pace()),
}
most = {"longest, pace 16": 16, "longest, pace 64": 64}
print("| policy | decode steps | tokens/step | drafted | accepted | rejected |")
print("|---|---:|---:|---:|---:|---:|")
for name, (lk, mk) in policies.items():
    S=D=Ac=T=0
    for kind, p, a in data:
        s, d, ac = simulate(p, a, lk, mk(), most=most.get(name, 32))
        S+=s; D+=d; Ac+=ac; T+=len(a)-1
    print(f"| {name} | {S} | {T/S:.2f} | {D} | {Ac} | {D-Ac} |")
