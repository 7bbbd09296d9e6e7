#!/usr/bin/env python3
"""Agentic load: many multi-turn conversations over one long shared prefix,
and code edits whose answers repeat their prompt, against an
OpenAI-compatible `/v1/completions` with SSE.

Two workloads (`--workload`):

agentic   N conversations (bench/agentic/run.sh uses N = 4 x slots) share one
          prefix: a system prompt plus tool definitions of about
          `--prefix-tokens` tokens, counted by the server's own tokenizer
          (the model's). Conversation i starts `i * --stagger` seconds after
          the first and runs `--turns` turns back to back: each turn appends
          a user message of about `--user-tokens` tokens to the transcript so
          far (every earlier question and answer kept, the answers as the
          server streamed them) and asks for `--max-tokens` greedy tokens.
edit      `--edits` requests, `--concurrency` at a time, each asks to rewrite
          a code snippet of about `--snippet-tokens` tokens with one small
          change; the answer is `--max-tokens` greedy tokens, long enough to
          repeat most of the snippet (the case n-gram speculation speeds up).

The text is plain ("System:", "User:", "Assistant:"), not a chat template,
so both servers evaluate exactly the same tokens. Every request is greedy
(`temperature: 0`) with `ignore_eos: true`, so every answer has exactly
`--max-tokens` tokens. Texts come from a seeded RNG: the same for every
server and run with the same `--seed`.

Measured per request, on the client's clock (as bench/loadgen.py):
  ttft        request sent -> first SSE chunk with text
  latency     request sent -> end of the stream
  itl         time between consecutive chunks with text
  prompt      `usage.prompt_tokens`
  evaluated   prompt tokens the server actually evaluated: llama-server's
              `timings.prompt_n` when it sends one, else `prompt_tokens -
              usage.prompt_tokens_details.cached_tokens`
Aggregates: TTFT, latency and ITL p50/p90/p99/mean, generated tokens / wall time,
prompt tokens sent and evaluated in total.

Exit status: 0 when every request succeeded, 2 when any failed (the JSON is
still written, with the first errors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from loadgen import WORDS, count_prompt_tokens, summary_ms  # noqa: E402

TOOL_VERBS = "get list create update delete search read write run fetch".split()


@dataclass
class Result:
    ok: bool = False
    error: str | None = None
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    text: str = ""
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    evaluated: int | None = None
    latency: float | None = None


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def tool(rng: random.Random, i: int) -> str:
    """One tool definition, JSON as agents send them."""
    name = f"{rng.choice(TOOL_VERBS)}_{rng.choice(WORDS)}_{i}"
    props = {
        rng.choice(WORDS) + f"_{k}": {"type": rng.choice(["string", "integer", "boolean"]),
                                      "description": sentence(rng, 8)}
        for k in range(3)
    }
    spec = {"type": "function", "function": {
        "name": name, "description": sentence(rng, 14),
        "parameters": {"type": "object", "properties": props, "required": list(props)[:1]}}}
    return json.dumps(spec)


def prefix(seed: int, n_tools: int) -> str:
    rng = random.Random(f"prefix:{seed}")
    lines = ["System: You are a careful coding agent. " + " ".join(sentence(rng, 12) for _ in range(6)),
             "You can call these tools:"]
    lines += [tool(rng, i) for i in range(n_tools)]
    return "\n".join(lines) + "\n"


def user_turn(seed: int, conv: int, turn: int, words: int) -> str:
    rng = random.Random(f"user:{seed}:{conv}:{turn}")
    return f"User: {sentence(rng, words)}\nAssistant:"


def snippet(seed: int, index: int, n_funcs: int) -> str:
    """Python-looking code of `n_funcs` small functions."""
    rng = random.Random(f"code:{seed}:{index}")
    out = []
    for f in range(n_funcs):
        a, b, c = (rng.choice(WORDS) for _ in range(3))
        out.append(
            f"def {a}_{b}_{f}({a}, {b}):\n"
            f"    \"\"\"{sentence(rng, 6)}\"\"\"\n"
            f"    {c} = {a} + {b} * {rng.randint(2, 99)}\n"
            f"    if {c} > {rng.randint(100, 999)}:\n"
            f"        return {c} - {a}\n"
            f"    return {c}\n")
    return "\n".join(out)


def edit_prompt(seed: int, index: int, n_funcs: int) -> str:
    code = snippet(seed, index, n_funcs)
    old = code.split("(", 1)[0].removeprefix("def ")
    return (f"User: Rename the function {old} to {old}_v2 and keep everything else as it is. "
            f"Here is the code:\n```python\n{code}```\n"
            f"Assistant: Here is the full updated code:\n```python\n")


async def stream(session, url: str, body: dict) -> Result:
    res = Result()
    start = time.perf_counter()
    last = None
    parts: list[str] = []
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                res.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                return res
            done = False
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    res.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                    return res
                usage = chunk.get("usage")
                if usage:
                    res.completion_tokens = usage.get("completion_tokens")
                    res.prompt_tokens = usage.get("prompt_tokens")
                    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                    if cached is not None and res.evaluated is None and res.prompt_tokens is not None:
                        res.evaluated = res.prompt_tokens - cached
                timings = chunk.get("timings")
                if timings and "prompt_n" in timings:
                    res.evaluated = timings["prompt_n"]
                choices = chunk.get("choices") or []
                if choices and choices[0].get("text"):
                    now = time.perf_counter()
                    if last is None:
                        res.ttft = now - start
                    else:
                        res.itl.append(now - last)
                    last = now
                    parts.append(choices[0]["text"])
            if not done:
                res.error = "stream ended without [DONE]"
                return res
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
        return res
    res.latency = time.perf_counter() - start
    res.text = "".join(parts)
    if res.ttft is None:
        res.error = "no text chunk in the stream"
        return res
    res.ok = True
    return res


def body(args, prompt: str) -> dict:
    return {"model": args.model, "prompt": prompt, "max_tokens": args.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}


async def calibrate_prefix(session, url: str, args) -> tuple[str, int]:
    """The shortest prefix (in whole tools) of at least `--prefix-tokens` tokens.
    Counting sends the prefix itself, warming the server's cache with it:
    run.sh calibrates on a server it then stops."""
    n_tools, text, got = 1, "", 0
    for _ in range(12):
        text = prefix(args.seed, n_tools)
        got = await count_prompt_tokens(session, url, args.model, text)
        if got >= args.prefix_tokens:
            break
        per_tool = max(1, got // n_tools)
        n_tools += max(1, (args.prefix_tokens - got) // per_tool)
    return text, got


async def agentic(session, url: str, args, shared: str) -> tuple[list[Result], float]:
    results: list[Result] = []

    async def conversation(i: int):
        await asyncio.sleep(i * args.stagger)
        transcript = shared
        for t in range(args.turns):
            transcript += user_turn(args.seed, i, t, args.user_words)
            r = await stream(session, url, body(args, transcript))
            results.append(r)
            if not r.ok:
                return
            transcript += r.text + "\n"

    start = time.perf_counter()
    await asyncio.gather(*(conversation(i) for i in range(args.conversations)))
    return results, time.perf_counter() - start


async def edits(session, url: str, args) -> tuple[list[Result], float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.edits):
        queue.put_nowait(i)
    results: list[Result] = []

    async def worker():
        while not queue.empty():
            i = queue.get_nowait()
            results.append(await stream(session, url, body(args, edit_prompt(args.seed, i, args.snippet_funcs))))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return results, time.perf_counter() - start


def aggregate(results: list[Result], wall: float) -> dict:
    ok = [r for r in results if r.ok]
    gen = sum(r.completion_tokens or 0 for r in ok)
    evaluated = [r.evaluated for r in ok if r.evaluated is not None]
    return {
        "requests": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "errors": [r.error for r in results if not r.ok][:5],
        "wall_s": wall,
        "generated_tokens": gen,
        "gen_tok_s": gen / wall if wall > 0 else None,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
        "prompt_tokens_evaluated": sum(evaluated) if len(evaluated) == len(ok) else None,
        "ttft_ms": summary_ms([r.ttft for r in ok]),
        "latency_ms": summary_ms([r.latency for r in ok]),
        "itl_ms": summary_ms([x for r in ok for x in r.itl]),
    }


async def main_async(args) -> dict:
    base = args.url.rstrip("/")
    url = base + "/v1/completions"
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if args.calibrate:
            text, tokens = await calibrate_prefix(session, url, args)
            return {"prefix": text, "prefix_tokens": tokens}
        if args.workload == "agentic":
            with open(args.prefix_file) as f:
                shared = json.load(f)["prefix"]
            results, wall = await agentic(session, url, args, shared)
        else:
            results, wall = await edits(session, url, args)
    out = {"config": {k: v for k, v in vars(args).items() if k not in ("url", "out")},
           **aggregate(results, wall)}
    out["answers"] = [r.text for r in results if r.ok][:4]
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--model", default="bench")
    p.add_argument("--workload", choices=["agentic", "edit"], default="agentic")
    p.add_argument("--calibrate", action="store_true",
                   help="only build the shared prefix and print it with its token count")
    p.add_argument("--prefix-file", help="JSON from --calibrate (agentic workload)")
    p.add_argument("--prefix-tokens", type=int, default=1500)
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--user-words", type=int, default=45, help="about 50 tokens with the bundled model")
    p.add_argument("--stagger", type=float, default=1.0, help="seconds between conversation starts")
    p.add_argument("--edits", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=4, help="edit requests in flight")
    p.add_argument("--snippet-funcs", type=int, default=6, help="about 65 tokens each")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = asyncio.run(main_async(args))
    text = json.dumps(out, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    if out.get("failed"):
        print(f"agentic: {out['failed']} of {out['requests']} requests failed: {out['errors'][:2]}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
