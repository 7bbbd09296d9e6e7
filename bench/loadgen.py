#!/usr/bin/env python3
"""Closed-loop load generator for OpenAI-compatible `/v1/completions` with SSE.

C workers share a queue of N requests; each worker sends its next request as
soon as the previous one finished, so exactly C requests are in flight until
the queue drains. Every request streams (`stream: true`) a fixed prompt of a
given length in tokens and asks for exactly `max_tokens` tokens
(`temperature: 0`, `ignore_eos: true`), so both servers do the same work.

Prompts: request i gets words drawn from a fixed list by an RNG seeded with
(seed, prompt length, i). The text is the same for every server, and no two
requests share more than a token or two of prefix, so neither server's prompt
cache can skip prefill, provided every invocation against one server process
gets its own --seed (bench/run.sh numbers them). The word count is calibrated against the server itself (one
non-streaming request with `max_tokens: 1`, reading `usage.prompt_tokens`)
until the prompt is exactly `--prompt-tokens` long; both servers use the
model's own tokenizer, so they calibrate to the same text.

Measured per request, on the client's clock:
  ttft      time from sending the request to the first SSE chunk with text
  itl       time between consecutive SSE chunks with text
  tokens    `usage.completion_tokens` from the stream if present, otherwise
            the number of chunks with text
  prompt    `usage.prompt_tokens` if present, otherwise the calibrated length

Aggregates (written as JSON to stdout or --out):
  gen_tok_s     total generated tokens / wall time of the measured phase
  prompt_tok_s  sum of prompt tokens / sum of TTFTs. An approximation of
                prefill speed: TTFT also holds queueing, HTTP and the first
                decode step, and under concurrency prefill shares the batch
                with other streams, so it understates the engine's raw rate.
  ttft_ms, itl_ms   p50 / p90 / p99 / mean (linear-interpolated percentiles)

Needs aiohttp (bench/run.sh installs it into a venv under the cache dir).
Exit status: 0 when every request succeeded, 2 when any failed (the JSON is
still written, with the first errors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field

import aiohttp

# Common English words; with a leading space each is one token in the BPE
# vocabularies of the models this is used with (calibration corrects the rest).
WORDS = """
time year people way day man thing woman life child world school state family
student group country problem hand part place case week company system program
question work government number night point home water room mother area money
story fact month lot right study book eye job word business issue side kind head
house service friend father power hour game line end member law car city name
president team minute idea kid body information back parent face others level
office door health person art war history party result change morning reason
research girl guy moment air teacher force education foot boy age policy music
market sense nation plan college interest death experience effect use class
control care field development role effort rate heart drug show leader light
voice wife police mind price report decision son view relationship town road
arm difference value building action model season society tax director position
player record paper space ground form event official matter center couple site
project activity star table need court oil situation cost industry figure street
image phone data picture practice piece land product doctor wall patient worker
news test movie north love support technology step baby computer type attention
film tree source organization hair window evidence population truth song
""".split()


@dataclass
class Result:
    ok: bool = False
    error: str | None = None
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    chunks: int = 0
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    latency: float | None = None


def make_prompt(seed: int, target: int, index: int, n_words: int) -> str:
    """Request `index`'s prompt; `seed` and `target` (the token length asked
    for) are part of the key, so no other run's prompt is a prefix of it."""
    rng = random.Random(f"{seed}:{target}:{index}")
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary_ms(values: list[float]) -> dict:
    ms = [v * 1000.0 for v in values]
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "mean": sum(ms) / len(ms) if ms else None,
        "n": len(ms),
    }


async def count_prompt_tokens(session, url: str, model: str, prompt: str) -> int:
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
    async with session.post(url, json=body) as resp:
        text = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"calibration request failed: HTTP {resp.status}: {text[:300]}")
    return int(json.loads(text)["usage"]["prompt_tokens"])


async def calibrate(session, url: str, model: str, seed: int, target: int) -> tuple[int, int]:
    """Word count whose prompt tokenizes to `target` tokens (or the closest found).

    Calibration prompts use index -1, so they share no prefix with the
    measured requests. Prompt length grows monotonically with the word count,
    so a few secant steps converge.
    """
    n_words = max(1, target - 1)  # BOS usually adds one token
    best = (n_words, None)
    for _ in range(8):
        got = await count_prompt_tokens(session, url, model, make_prompt(seed, target, -1, n_words))
        if best[1] is None or abs(got - target) < abs(best[1] - target):
            best = (n_words, got)
        if got == target:
            break
        n_words = max(1, n_words + (target - got))
    return best


async def one_request(session, url: str, body: dict) -> Result:
    res = Result()
    start = time.perf_counter()
    last = None
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                res.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                return res
            done = False
            async for raw in resp.content:  # one SSE line per iteration
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
                choices = chunk.get("choices") or []
                if choices and choices[0].get("text"):
                    now = time.perf_counter()
                    if last is None:
                        res.ttft = now - start
                    else:
                        res.itl.append(now - last)
                    last = now
                    res.chunks += 1
            if not done:
                res.error = "stream ended without [DONE]"
                return res
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
        return res
    res.latency = time.perf_counter() - start
    if res.ttft is None:
        res.error = "no text chunk in the stream"
        return res
    res.ok = True
    return res


def request_body(args, prompt: str) -> dict:
    return {
        "model": args.model,
        "prompt": prompt,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def run_phase(session, url, args, n_words, first_index, n_requests, concurrency):
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(first_index, first_index + n_requests):
        queue.put_nowait(i)
    results: list[Result] = []

    async def worker():
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = request_body(args, make_prompt(args.seed, args.prompt_tokens, i, n_words))
            results.append(await one_request(session, url, body))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - start


def aggregate(results: list[Result], wall: float, calibrated_prompt: int) -> dict:
    ok = [r for r in results if r.ok]
    gen = [r.completion_tokens if r.completion_tokens is not None else r.chunks for r in ok]
    prompt = [r.prompt_tokens if r.prompt_tokens is not None else calibrated_prompt for r in ok]
    ttfts = [r.ttft for r in ok]
    itls = [x for r in ok for x in r.itl]
    sum_ttft = sum(ttfts)
    return {
        "requests": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "errors": [r.error for r in results if not r.ok][:5],
        "wall_s": wall,
        "generated_tokens": sum(gen),
        "prompt_tokens": sum(prompt),
        "gen_tok_s": sum(gen) / wall if wall > 0 else None,
        "prompt_tok_s": sum(prompt) / sum_ttft if sum_ttft > 0 else None,
        "ttft_ms": summary_ms(ttfts),
        "itl_ms": summary_ms(itls),
        "latency_ms": summary_ms([r.latency for r in ok]),
        "tokens_per_request": {"min": min(gen, default=None), "max": max(gen, default=None)},
        "chunks_per_request": {
            "min": min((r.chunks for r in ok), default=None),
            "max": max((r.chunks for r in ok), default=None),
        },
    }


async def main_async(args) -> dict:
    base = args.url.rstrip("/")
    url = base + "/v1/completions"
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    # A fresh connection per request: llama-server closes idle keep-alive
    # connections in a way aiohttp only notices when writing the next request
    # ("Can not write request body"), and a POST is not retried. Loopback
    # connects cost microseconds, the same for every server.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        n_words, calibrated = await calibrate(session, url, args.model, args.seed, args.prompt_tokens)
        if args.warmup:
            # Warm-up requests use indices past the measured ones: fresh prompts.
            await run_phase(session, url, args, n_words, 1_000_000, args.warmup,
                            min(args.concurrency, args.warmup))
        results, wall = await run_phase(session, url, args, n_words, 0, args.requests,
                                        args.concurrency)
    out = {
        "config": {
            "url": base,
            "model": args.model,
            "concurrency": args.concurrency,
            "requests": args.requests,
            "prompt_tokens_target": args.prompt_tokens,
            "prompt_tokens_calibrated": calibrated,
            "prompt_words": n_words,
            "max_tokens": args.max_tokens,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        **aggregate(results, wall, calibrated),
    }
    if args.per_request:
        out["per_request"] = [r.__dict__ for r in results]
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--model", default="bench", help="model id sent in each request")
    p.add_argument("--concurrency", "-c", type=int, default=1, help="requests in flight")
    p.add_argument("--requests", "-n", type=int, default=16, help="measured requests in total")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length in tokens")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--warmup", type=int, default=0, help="unmeasured requests sent first")
    p.add_argument("--seed", type=int, default=0, help="prompt text seed")
    p.add_argument("--timeout", type=float, default=600, help="seconds per request")
    p.add_argument("--per-request", action="store_true", help="include every request's record")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.requests < 1 or args.prompt_tokens < 2 or args.max_tokens < 1:
        p.error("concurrency, requests and max-tokens must be >= 1, prompt-tokens >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = asyncio.run(main_async(args))
    text = json.dumps(out, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    if out["failed"]:
        print(f"loadgen: {out['failed']} of {out['requests']} requests failed: {out['errors'][:2]}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
