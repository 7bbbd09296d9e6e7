"""The unmodified `openai` Python SDK reads the chunk streams the node makes
from Anthropic's and Google's streams (supervisor/tests/cloud_fakes.rs writes
them): both the raw iterator and the SDK's own accumulating helper
(`chat.completions.stream(...).get_final_completion()`).

Usage: python openai_cloud_chunks.py DIR
DIR holds NAME.sse (an OpenAI SSE body ending in [DONE]) and NAME.json (the
expected content, tool calls, finish_reason and usage) per case. A loopback
server answers model NAME with NAME.sse. Exits non-zero on any failure;
prints "all checks passed" at the end.
"""

import http.server
import json
import os
import sys
import threading

import openai

DIR = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(os.path.join(DIR, body["model"] + ".sse"), "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
client = openai.OpenAI(
    base_url=f"http://127.0.0.1:{server.server_port}/v1",
    api_key="unused",
    max_retries=0,
    timeout=30,
)
MESSAGES = [{"role": "user", "content": "hi"}]


def check(name, got, want):
    if got != want:
        print(f"FAIL {name}: got {got!r}, want {want!r}")
        sys.exit(1)


cases = sorted(f[: -len(".json")] for f in os.listdir(DIR) if f.endswith(".json"))
for name in cases:
    with open(os.path.join(DIR, name + ".json")) as f:
        want = json.load(f)

    # The raw iterator: every chunk a ChatCompletionChunk, assembled by hand.
    content, calls, finish, usage, ids = "", {}, None, None, set()
    for chunk in client.chat.completions.create(model=name, messages=MESSAGES, stream=True):
        check(f"{name} object", chunk.object, "chat.completion.chunk")
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})
        for choice in chunk.choices:
            check(f"{name} finish once", finish, None)
            content += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    call["id"] = tc.id
                if tc.function and tc.function.name:
                    call["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    call["arguments"] += tc.function.arguments
            finish = choice.finish_reason or finish
    check(f"{name} one id", len(ids), 1)
    check(f"{name} content", content, want["content"])
    got_calls = [{"name": c["name"], "arguments": json.loads(c["arguments"])} for _, c in sorted(calls.items())]
    check(f"{name} tool calls", got_calls, want["tool_calls"])
    check(f"{name} ids", all(c["id"] for c in calls.values()), True)
    check(f"{name} finish_reason", finish, want["finish_reason"])
    check(f"{name} usage", usage, want["usage"])

    # The SDK's accumulating helper.
    with client.chat.completions.stream(model=name, messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    msg = final.choices[0].message
    check(f"{name} helper content", msg.content or "", want["content"])
    helper_calls = [
        {"name": c.function.name, "arguments": json.loads(c.function.arguments)} for c in msg.tool_calls or []
    ]
    check(f"{name} helper tool calls", helper_calls, want["tool_calls"])
    check(f"{name} helper finish_reason", final.choices[0].finish_reason, want["finish_reason"])
    print(f"ok {name}")

server.shutdown()
print(f"all checks passed ({len(cases)} streams)")
