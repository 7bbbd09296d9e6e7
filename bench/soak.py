#!/usr/bin/env python3
"""Soak test for llm-node: mixed load, worker kills and failing pulls for DURATION seconds,
sampling the supervisor's and workers' RSS, open fds and threads over time (flat is the goal).

Standard library only. Started by bench/soak.sh, which documents the settings; usable alone:

    bench/soak.py --node target/release/llm-node --model-path M.gguf --duration 600 --out-dir bench/out/soak

Everything stays on loopback: the node listens on 127.0.0.1 and its registry / Hugging Face
endpoints point at 127.0.0.1:9 (discard; nothing listens, so a pull fails at once).

Exit status: 0 when the node never died, model `b` saw no error, no request got an unexpected 5xx
and no model stayed out of `ready` for more than WEDGE seconds; 1 otherwise; 2 when the node could
not be started.
"""
import argparse
import csv
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

MODELS = ("a", "b")


def now():
    return time.monotonic()


# --------------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------------
def proc_stats(pid):
    """(rss_kib, fds, threads, state) of a live process, or None."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            st = f.read()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss = re.search(r"^VmRSS:\s+(\d+)", st, re.M)
    thr = re.search(r"^Threads:\s+(\d+)", st, re.M)
    state = re.search(r"^State:\s+(\S)", st, re.M)
    return (int(rss.group(1)) if rss else 0, fds, int(thr.group(1)) if thr else 0,
            state.group(1) if state else "?")


def children_of(pid):
    """Direct children of pid: (count, zombies)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids += f.read().split()
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        return 0, 0
    zombies = 0
    for k in kids:
        s = proc_stats(k)
        if s and s[3] == "Z":
            zombies += 1
    return len(kids), zombies


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return re.search(r"^State:\s+Z", f.read(), re.M) is None
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------------------------------
class Counters:
    FIELDS = [
        "ok",                 # 2xx with a well-formed answer (streams: ended with [DONE], no error event)
        "bad_4xx",            # deliberately bad requests answered 4xx (expected)
        "unexpected_4xx",     # well-formed requests answered 4xx (429 counted apart)
        "queue_full_429",
        "a_after_kill",       # requests on `a` cut or refused (503 / stream error / reset) by a kill
        "unexpected_5xx",     # any 5xx not explained by a kill of `a` (pull 502s excluded)
        "b_errors",           # anything but success on `b`
        "transport_errors",   # connection refused/reset/timeout not explained by a kill
        "disconnects",        # clients that hung up mid-stream on purpose
        "bad_output",         # tool call / json_schema output that does not parse (finish_reason stop)
        "kills",
        "pulls",
        "pull_unexpected",    # a pull that did not fail fast with the expected error
        "node_deaths",
        "wedged",             # episodes of a model not `ready` for more than WEDGE seconds
    ]

    def __init__(self):
        self.lock = threading.Lock()
        self.c = {k: 0 for k in self.FIELDS}
        self.notes = []

    def inc(self, k, n=1):
        with self.lock:
            self.c[k] += n

    def note(self, msg):
        with self.lock:
            if len(self.notes) < 200:
                self.notes.append(msg)
        print(f"[soak] {msg}", file=sys.stderr, flush=True)

    def snapshot(self):
        with self.lock:
            return dict(self.c)


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------
class Soak:
    def __init__(self, args):
        self.args = args
        self.port = None
        self.node = None
        self.sup_pid = None
        self.cnt = Counters()
        self.stop = threading.Event()
        self.last_kill = -1e9
        self.kill_lock = threading.Lock()
        self.models = {}           # name -> last /admin/models entry
        self.models_lock = threading.Lock()
        self.not_ready_since = {m: None for m in MODELS}
        self.wedged_now = {m: False for m in MODELS}
        self.seen_worker_pids = set()
        self.recoveries = []       # seconds from kill to `a` ready on a new pid
        self.pull_latencies = []
        self.pull_outcomes = []
        self.max_not_ready = {m: 0.0 for m in MODELS}
        self.interrupted = None

    # -- plumbing ----------------------------------------------------------------------------------
    def conn(self, timeout=None):
        return http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout or self.args.request_timeout)

    def request(self, method, path, body=None, raw=None, timeout=None):
        """(status, body bytes); raises OSError on transport errors."""
        c = self.conn(timeout)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            c.request(method, path, body=data, headers=hdrs)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def admin_models(self):
        st, body = self.request("GET", "/admin/models", timeout=10)
        if st != 200:
            raise OSError(f"/admin/models answered {st}")
        d = json.loads(body)
        items = d.get("models", d.get("data", [])) if isinstance(d, dict) else d
        out = {}
        for m in items:
            name = m.get("id") or m.get("name") or m.get("model")
            out[name] = m
        return out

    def killed_recently(self):
        return now() - self.last_kill < self.args.kill_grace

    # -- node --------------------------------------------------------------------------------------
    def start_node(self):
        a = self.args
        self.tmp = tempfile.mkdtemp(prefix="llm-node-soak-")
        self.log_path = os.path.join(a.out_dir, "node.log")
        cmd = [a.node, "--host", "127.0.0.1", "--port", "0",
               "--model", f"a={a.model_path}", "--model", f"b={a.model_path}",
               "--ctx-size", str(a.ctx), "--parallel", str(a.parallel), "--threads", str(a.threads),
               "--allow-ignore-eos", "--restart-base-ms", "200", "--restart-max-ms", "2000",
               "--store-dir", os.path.join(self.tmp, "store"), "--no-ollama-models",
               "--registry-url", "http://127.0.0.1:9", "--hf-endpoint", "http://127.0.0.1:9",
               "--log-format", "text"] + a.extra
        if a.worker:
            cmd += ["--worker-bin", a.worker]
        self.cmd = cmd
        print("[soak] " + " ".join(cmd), file=sys.stderr, flush=True)
        self.log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.node = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.sup_pid = self.node.pid
        deadline = now() + 300
        while now() < deadline:
            if self.stop.is_set():
                raise RuntimeError("interrupted")
            if self.node.poll() is not None:
                raise RuntimeError(f"node exited with {self.node.returncode} (see {self.log_path})")
            with open(self.log_path, "rb") as f:
                m = re.search(rb"listening on http://[^:\s]+:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.1)
        if not self.port:
            raise RuntimeError("no `listening on` line in the node's log")
        while now() < deadline and not self.stop.is_set():
            try:
                st, _ = self.request("GET", "/health/ready", timeout=5)
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("node not ready after 300 s")

    def stop_node(self):
        if self.node and self.node.poll() is None:
            try:
                os.killpg(self.node.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.node.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.cnt.note("node did not exit 40 s after SIGTERM; SIGKILL")
                try:
                    os.killpg(self.node.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.node.wait()
        # workers are in their own process groups and die with the supervisor (PDEATHSIG)
        deadline = now() + 5
        left = [p for p in self.seen_worker_pids if alive(p)]
        while left and now() < deadline:
            time.sleep(0.1)
            left = [p for p in left if alive(p)]
        for p in left:
            self.cnt.note(f"worker pid {p} outlived the supervisor; SIGKILL")
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.leftover_workers = left
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(getattr(self, "tmp", "/nonexistent"), ignore_errors=True)

    # -- load --------------------------------------------------------------------------------------
    def classify_failure(self, model, what, status=None, exc=None, t0=None):
        """Count one failed well-formed request on `model`."""
        cutoff = t0 if t0 is not None else now()
        # a kill of `a` during (or just before) the request explains 503 / stream error / reset on `a`
        a_kill = model == "a" and (self.killed_recently() or self.last_kill >= cutoff - self.args.kill_grace)
        if a_kill and (status is None or status == 503):
            self.cnt.inc("a_after_kill")
            return
        desc = f"{what} on {model}: " + (f"HTTP {status}" if status is not None else f"{exc!r}")
        if model == "b":
            self.cnt.inc("b_errors")
        if status is None:
            self.cnt.inc("transport_errors")
        elif status == 429:
            self.cnt.inc("queue_full_429")
        elif 400 <= status < 500:
            self.cnt.inc("unexpected_4xx")
        elif status >= 500:
            self.cnt.inc("unexpected_5xx")
        self.cnt.note(f"t={self.elapsed():.0f}s {desc}")

    def elapsed(self):
        return now() - self.t_start

    def do_json(self, model, path, body, check=None, what=None):
        what = what or path
        t0 = now()
        try:
            st, data = self.request("POST", path, body)
        except OSError as e:
            return self.classify_failure(model, what, exc=e, t0=t0)
        if st == 200:
            self.cnt.inc("ok")
            if check:
                try:
                    check(json.loads(data))
                except Exception as e:  # noqa: BLE001 - any malformed answer is a finding
                    self.cnt.inc("bad_output")
                    self.cnt.note(f"t={self.elapsed():.0f}s bad output from {what} on {model}: {e!r}: {data[:300]!r}")
            return
        self.classify_failure(model, what, status=st, t0=t0)

    def do_stream(self, model, path, body, disconnect_after=None, what=None):
        """Streaming request; with disconnect_after, hang up after that many events."""
        what = what or f"{path} stream"
        t0 = now()
        c = self.conn()
        try:
            c.request("POST", path, body=json.dumps(body).encode(),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                r.read()
                return self.classify_failure(model, what, status=r.status, t0=t0)
            events = 0
            done = False
            error = None
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                events += 1
                try:
                    ev = json.loads(payload)
                except ValueError:
                    error = f"undecodable event {payload[:200]!r}"
                    continue
                if isinstance(ev, dict) and "error" in ev:
                    error = ev["error"]
                if disconnect_after is not None and events >= disconnect_after:
                    self.cnt.inc("disconnects")
                    return  # closing the socket below is the disconnect
            if error is None and done:
                self.cnt.inc("ok")
                return
            if error is not None:
                msg = json.dumps(error)[:300]
                if model == "a" and (self.killed_recently() or self.last_kill >= t0 - 1):
                    self.cnt.inc("a_after_kill")
                    return
                if model == "b":
                    self.cnt.inc("b_errors")
                # an error event inside a 200 stream is the streaming form of a server error
                self.cnt.inc("unexpected_5xx")
                self.cnt.note(f"t={self.elapsed():.0f}s {what} on {model}: error event {msg}")
                return
            # ended without [DONE]
            self.classify_failure(model, what, exc=EOFError("stream ended without [DONE]"), t0=t0)
        except OSError as e:
            self.classify_failure(model, what, exc=e, t0=t0)
        finally:
            c.close()

    def bad_request(self, rng):
        """A deliberately bad request: must be a 4xx, never a 5xx."""
        m = rng.choice(MODELS)
        kind = rng.randrange(7)
        if kind == 0:
            path, raw = "/v1/chat/completions", b'{"model": "a", "messages": ['
        elif kind == 1:
            path, raw = "/v1/chat/completions", json.dumps(
                {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
        elif kind == 2:
            path, raw = "/v1/chat/completions", json.dumps(
                {"model": m, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}).encode()
        elif kind == 3:
            path, raw = "/v1/completions", json.dumps({"model": m, "prompt": "x " * 4000, "max_tokens": 4}).encode()
        elif kind == 4:
            path, raw = "/v1/chat/completions", json.dumps(
                {"model": m, "messages": [{"role": "user", "content": "hi"}],
                 "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}}).encode()
        elif kind == 5:
            path, raw = "/v1/chat/completions", json.dumps(
                {"model": m, "messages": [{"role": "user", "content": "hi"}],
                 "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                 "tool_choice": {"type": "function", "function": {"name": "nope"}}}).encode()
        else:
            path, raw = "/v1/embeddings", json.dumps({"model": m, "input": 42}).encode()
        try:
            st, data = self.request("POST", path, raw=raw)
        except OSError as e:
            self.cnt.inc("transport_errors")
            self.cnt.note(f"t={self.elapsed():.0f}s bad request {kind} to {path}: {e!r}")
            return
        if 400 <= st < 500:
            self.cnt.inc("bad_4xx")
        elif st == 503 and m == "a" and kind in (2, 3, 4, 5) and self.killed_recently():
            # validation that needs the worker (tokenizing, grammar) waits for `a` to be back
            self.cnt.inc("a_after_kill")
        elif st >= 500:
            self.cnt.inc("unexpected_5xx")
            self.cnt.note(f"t={self.elapsed():.0f}s bad request {kind} to {path} answered {st}: {data[:300]!r}")
        else:
            self.cnt.inc("unexpected_4xx")  # a bad request accepted: also a finding
            self.cnt.note(f"t={self.elapsed():.0f}s bad request {kind} to {path} answered {st}")

    def client(self, idx):
        rng = random.Random(1000 + idx)
        a = self.args
        mt = a.max_tokens
        words = "river stone lamp garden paper cloud silver window orange music table bridge".split()
        while not self.stop.is_set():
            m = rng.choice(MODELS)
            prompt = " ".join(rng.choice(words) for _ in range(rng.randint(4, 24)))
            msgs = [{"role": "user", "content": prompt}]
            k = rng.randrange(100)
            if k < 18:
                self.do_json(m, "/v1/chat/completions",
                             {"model": m, "messages": msgs, "max_tokens": mt, "temperature": 0.7},
                             check=lambda d: d["choices"][0]["message"], what="chat")
            elif k < 36:
                self.do_stream(m, "/v1/chat/completions",
                               {"model": m, "messages": msgs, "max_tokens": mt, "stream": True,
                                "stream_options": {"include_usage": True}}, what="chat stream")
            elif k < 46:
                def check_tool(d):
                    ch = d["choices"][0]
                    if ch.get("finish_reason") == "length":
                        return
                    calls = ch["message"].get("tool_calls")
                    assert calls, "no tool_calls with tool_choice required"
                    json.loads(calls[0]["function"]["arguments"])
                self.do_json(m, "/v1/chat/completions",
                             {"model": m, "messages": [{"role": "user", "content": "Weather in " + prompt}],
                              "max_tokens": 48,
                              "tools": [{"type": "function", "function": {
                                  "name": "get_weather", "description": "weather for a city",
                                  "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                                                 "required": ["city"]}}}],
                              "tool_choice": "required"}, check=check_tool, what="chat tools")
            elif k < 54:
                def check_json(d):
                    ch = d["choices"][0]
                    if ch.get("finish_reason") == "length":
                        return
                    obj = json.loads(ch["message"]["content"])
                    assert isinstance(obj, dict) and "ok" in obj, f"schema not honoured: {obj!r}"
                self.do_json(m, "/v1/chat/completions",
                             {"model": m, "messages": msgs, "max_tokens": 48,
                              "response_format": {"type": "json_schema", "json_schema": {
                                  "name": "r", "strict": True,
                                  "schema": {"type": "object", "properties": {
                                      "ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 99}},
                                      "required": ["ok", "n"], "additionalProperties": False}}}},
                             check=check_json, what="chat json_schema")
            elif k < 64:
                self.do_json(m, "/v1/completions",
                             {"model": m, "prompt": prompt, "max_tokens": mt, "ignore_eos": True,
                              "temperature": 0}, check=lambda d: d["choices"][0]["text"], what="completions")
            elif k < 70:
                self.do_stream(m, "/v1/completions",
                               {"model": m, "prompt": prompt, "max_tokens": mt, "ignore_eos": True,
                                "stream": True}, what="completions stream")
            elif k < 80:
                self.do_json(m, "/v1/embeddings", {"model": m, "input": [prompt, prompt[::-1]]},
                             check=lambda d: d["data"][1]["embedding"][0], what="embeddings")
            elif k < 90:
                self.do_stream(m, "/v1/chat/completions",
                               {"model": m, "messages": msgs, "max_tokens": 4 * mt, "stream": True,
                                "ignore_eos": True},
                               disconnect_after=rng.randint(1, 4), what="chat stream (disconnect)")
            else:
                self.bad_request(rng)
            if a.think > 0:
                self.stop.wait(rng.uniform(0, 2 * a.think))

    # -- chaos -------------------------------------------------------------------------------------
    def killer(self):
        a = self.args
        while not self.stop.wait(a.kill_every):
            try:
                ms = self.admin_models()
            except (OSError, ValueError) as e:
                self.cnt.note(f"t={self.elapsed():.0f}s killer: /admin/models failed: {e!r}")
                continue
            pid = ms.get("a", {}).get("pid")
            state = ms.get("a", {}).get("state")
            if not pid or state != "ready":
                self.cnt.note(f"t={self.elapsed():.0f}s killer: `a` is {state} (pid {pid}); kill skipped")
                continue
            with self.kill_lock:
                self.last_kill = now()
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.cnt.inc("kills")
            t_kill = now()
            # recovery: `a` ready again on another pid
            while not self.stop.is_set() and now() - t_kill < 120:
                try:
                    e = self.admin_models().get("a", {})
                    if e.get("state") == "ready" and e.get("pid") and e.get("pid") != pid:
                        self.recoveries.append(now() - t_kill)
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)

    def puller(self):
        a = self.args
        n = 0
        while not self.stop.wait(a.pull_every):
            n += 1
            stream = n % 2 == 0
            name = f"soak-missing-{n}:latest"
            t0 = now()
            try:
                st, data = self.request("POST", "/api/pull", {"model": name, "stream": stream}, timeout=60)
            except OSError as e:
                self.cnt.inc("pull_unexpected")
                self.cnt.note(f"t={self.elapsed():.0f}s pull {name}: {e!r}")
                continue
            dt = now() - t0
            lines = [l for l in data.splitlines() if l.strip()]
            self.pull_latencies.append(dt)
            err_line = st == 200 and bool(lines) and b'"error"' in lines[-1]
            self.pull_outcomes.append(f"{st}{' + error line' if err_line else ''}{' (stream)' if stream else ''}")
            self.cnt.inc("pulls")
            # a registry failure known before streaming is a 502 (404: unknown name); after the
            # stream began, a last {"error": ...} line
            failed_as_expected = st in (502, 404) or err_line
            if not failed_as_expected or dt > 10:
                self.cnt.inc("pull_unexpected")
                self.cnt.note(f"t={self.elapsed():.0f}s pull {name} (stream={stream}) answered {st} in {dt:.1f}s: {data[-300:]!r}")

    # -- sampling ----------------------------------------------------------------------------------
    def sample_row(self):
        t = self.elapsed()
        row = {"t_s": round(t, 1)}
        sup = proc_stats(self.sup_pid) if self.node.poll() is None else None
        row.update(sup_rss_kib=sup[0] if sup else "", sup_fds=sup[1] if sup else "",
                   sup_threads=sup[2] if sup else "")
        kids, zombies = children_of(self.sup_pid)
        row.update(children=kids, zombies=zombies)
        try:
            ms = self.admin_models()
        except (OSError, ValueError):
            ms = {}
        for m in MODELS:
            e = ms.get(m, {})
            pid = e.get("pid")
            if pid:
                self.seen_worker_pids.add(int(pid))
            ws = proc_stats(pid)
            state = e.get("state", "unknown")
            row.update({f"{m}_state": state, f"{m}_pid": pid or "", f"{m}_restarts": e.get("restarts", ""),
                        f"{m}_rss_kib": ws[0] if ws else "", f"{m}_fds": ws[1] if ws else "",
                        f"{m}_threads": ws[2] if ws else ""})
        row.update(self.cnt.snapshot())
        return row

    def watch_states(self):
        """Every 0.5 s: node alive? models out of `ready` for too long?"""
        while not self.stop.wait(0.5):
            if self.node.poll() is not None:
                if self.interrupted:
                    return
                self.cnt.inc("node_deaths")
                self.cnt.note(f"t={self.elapsed():.0f}s supervisor pid {self.sup_pid} is gone "
                              f"(exit {self.node.returncode})")
                self.stop.set()
                return
            try:
                ms = self.admin_models()
            except (OSError, ValueError):
                continue
            t = now()
            for m in MODELS:
                st = ms.get(m, {}).get("state")
                if st == "ready":
                    self.not_ready_since[m] = None
                    self.wedged_now[m] = False
                    continue
                if self.not_ready_since[m] is None:
                    self.not_ready_since[m] = t
                dur = t - self.not_ready_since[m]
                self.max_not_ready[m] = max(self.max_not_ready[m], dur)
                if dur > self.args.wedge and not self.wedged_now[m]:
                    self.wedged_now[m] = True
                    self.cnt.inc("wedged")
                    self.cnt.note(f"t={self.elapsed():.0f}s model {m} not ready for {dur:.0f}s: {ms.get(m)}")

    # -- run ---------------------------------------------------------------------------------------
    def run(self):
        a = self.args
        os.makedirs(a.out_dir, exist_ok=True)
        self.t_start = now()
        try:
            self.start_node()
        except Exception as e:  # noqa: BLE001
            print(f"[soak] could not start the node: {e}", file=sys.stderr)
            self.stop_node()
            return 2
        print(f"[soak] node pid {self.sup_pid} on 127.0.0.1:{self.port}; {a.duration}s, {a.clients} clients, "
              f"kill every {a.kill_every}s, pull every {a.pull_every}s, sample every {a.sample}s",
              file=sys.stderr, flush=True)
        self.t_start = now()
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(a.clients)]
        threads += [threading.Thread(target=f, daemon=True) for f in (self.killer, self.puller, self.watch_states)]
        for t in threads:
            t.start()
        rows = []
        csv_path = os.path.join(a.out_dir, "soak.csv")
        with open(csv_path, "w", newline="") as f:
            w = None
            end = self.t_start + a.duration
            next_sample = self.t_start
            while True:
                row = self.sample_row()
                rows.append(row)
                if w is None:
                    w = csv.DictWriter(f, fieldnames=list(row.keys()))
                    w.writeheader()
                w.writerow(row)
                f.flush()
                if self.stop.is_set() or now() >= end:
                    break
                next_sample += a.sample
                self.stop.wait(max(0.0, min(next_sample, end) - now()))
        self.stop.set()
        for t in threads:
            t.join(timeout=a.request_timeout + 5)
        final = self.cnt.snapshot()
        self.stop_node()
        return self.summary(rows, final, csv_path)

    def summary(self, rows, c, csv_path):
        a = self.args

        def series(key):
            return [(r["t_s"], r[key]) for r in rows if r.get(key) not in ("", None)]

        def slope_per_hour(pts):
            if len(pts) < 3:
                return 0.0
            n = len(pts)
            mx = sum(p[0] for p in pts) / n
            my = sum(p[1] for p in pts) / n
            sxx = sum((p[0] - mx) ** 2 for p in pts)
            return 0.0 if sxx == 0 else sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx * 3600

        out = []
        p = out.append
        p(f"soak: {self.elapsed():.0f} s, {a.clients} clients, kill `a` every {a.kill_every} s, "
          f"failing pull every {a.pull_every} s, sample every {a.sample} s ({len(rows)} samples)")
        p("")
        p("| series | first | last | min | max | trend over the second half (least squares, per hour) |")
        p("|---|---:|---:|---:|---:|---:|")
        for key, label, unit in [
            ("sup_rss_kib", "supervisor RSS", "MiB"), ("sup_fds", "supervisor fds", ""),
            ("sup_threads", "supervisor threads", ""),
            ("b_rss_kib", "worker `b` RSS (never killed)", "MiB"), ("b_fds", "worker `b` fds", ""),
            ("b_threads", "worker `b` threads", ""),
            ("a_rss_kib", "worker `a` RSS (killed, restarted)", "MiB"), ("a_fds", "worker `a` fds", ""),
            ("a_threads", "worker `a` threads", ""), ("children", "supervisor's child processes", ""),
            ("zombies", "zombie children", ""),
        ]:
            pts = [(t, float(v)) for t, v in series(key)]
            if not pts:
                p(f"| {label} | – | – | – | – | – |")
                continue
            div = 1024.0 if unit == "MiB" else 1.0
            vals = [v / div for _, v in pts]
            fmt = (lambda x: f"{x:.1f}") if unit else (lambda x: f"{x:.0f}")
            half = self.elapsed() / 2  # the first half holds the warm-up (allocator, caches, slots)
            sl = slope_per_hour([(t, v / div) for t, v in pts if t >= half])
            p(f"| {label}{' (' + unit + ')' if unit else ''} | {fmt(vals[0])} | {fmt(vals[-1])} | "
              f"{fmt(min(vals))} | {fmt(max(vals))} | {sl:+.2f} |")
        p("")
        total = c["ok"] + c["bad_4xx"] + c["unexpected_4xx"] + c["queue_full_429"] + c["a_after_kill"] + \
            c["unexpected_5xx"] + c["transport_errors"] + c["disconnects"]
        p(f"requests: {total} ({total / max(1.0, self.elapsed()):.1f}/s); ok {c['ok']}, "
          f"bad requests answered 4xx {c['bad_4xx']}, deliberate mid-stream disconnects {c['disconnects']}, "
          f"`a` requests cut/refused by a kill {c['a_after_kill']}")
        p(f"unexpected: 5xx {c['unexpected_5xx']}, 4xx {c['unexpected_4xx']}, 429 {c['queue_full_429']}, "
          f"transport errors {c['transport_errors']}, malformed tool/json output {c['bad_output']}")
        rec = sorted(self.recoveries)
        rec_s = (f"recovery to ready on a new pid: median {rec[len(rec) // 2]:.2f} s, max {rec[-1]:.2f} s"
                 if rec else "no recovery measured")
        p(f"kills of `a`: {c['kills']} ({rec_s}); `a` restarts per /admin/models: "
          f"{rows[-1].get('a_restarts', '?')}")
        pl = sorted(self.pull_latencies)
        p(f"failing pulls: {c['pulls']} (slowest {pl[-1]:.2f} s; answers: {', '.join(self.pull_outcomes)}), unexpected pull outcomes {c['pull_unexpected']}"
          if pl else f"failing pulls: {c['pulls']}, unexpected pull outcomes {c['pull_unexpected']}")
        p(f"`b` errors: {c['b_errors']}; node deaths: {c['node_deaths']}; wedged episodes (> {a.wedge:.0f} s "
          f"not ready): {c['wedged']} (longest not-ready: a {self.max_not_ready['a']:.1f} s, "
          f"b {self.max_not_ready['b']:.1f} s)")
        left = getattr(self, "leftover_workers", [])
        p(f"workers left after the node stopped: {len(left)}; node exit status {self.node.returncode}")
        fails = []
        if c["node_deaths"]:
            fails.append("the node died")
        if c["b_errors"]:
            fails.append("`b` saw errors")
        if c["unexpected_5xx"]:
            fails.append("unexpected 5xx")
        if c["wedged"]:
            fails.append("a model wedged")
        if left:
            fails.append("workers outlived the node")
        if self.interrupted:
            fails.append(f"interrupted by signal {self.interrupted}")
        p("")
        p("result: " + ("FAIL (" + ", ".join(fails) + ")" if fails else "PASS"))
        if self.cnt.notes:
            p("")
            p("notes (first 40):")
            for n in self.cnt.notes[:40]:
                p("  " + n)
        text = "\n".join(out)
        print(text, flush=True)
        with open(os.path.join(a.out_dir, "summary.md"), "w") as f:
            f.write(text + "\n")
            f.write(f"\ncommand: {' '.join(self.cmd)}\ncsv: {csv_path}\n")
        return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node", required=True, help="llm-node binary")
    ap.add_argument("--worker", help="llm-node-worker binary (default: next to llm-node)")
    ap.add_argument("--model-path", required=True, help="GGUF served as both `a` and `b`")
    ap.add_argument("--duration", type=float, default=3600)
    ap.add_argument("--kill-every", type=float, default=60)
    ap.add_argument("--pull-every", type=float, default=300)
    ap.add_argument("--sample", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--think", type=float, default=0.2, help="mean pause between a client's requests, s")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wedge", type=float, default=30, help="seconds not `ready` that count as wedged")
    ap.add_argument("--kill-grace", type=float, default=10,
                    help="seconds after a kill in which failures on `a` are blamed on it")
    ap.add_argument("--request-timeout", type=float, default=120)
    ap.add_argument("--out-dir", default="bench/out/soak")
    ap.add_argument("extra", nargs="*", help="extra llm-node flags (after --)")
    args = ap.parse_args()
    s = Soak(args)

    def on_signal(signum, _frame):
        # the sampling loop wakes up, stops the clients and the node, and prints the summary
        s.interrupted = signum
        s.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = s.run()
    sys.exit(130 if s.interrupted and rc != 2 else rc)


if __name__ == "__main__":
    main()
