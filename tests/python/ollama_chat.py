"""The unmodified `ollama` Python client against a running node: chat streamed
and not (the same greedy text), generate, a tool call parsed into
`message.tool_calls` (forced with llm-node's `tool_choice` option, as the
bundled 135M model does not call tools on its own), the tool's answer sent
back, `format` from a Pydantic model, load, and errors as `ResponseError`.

Usage: python ollama_chat.py HOST MODEL
Exits non-zero (with the failing check) on any failure; prints one line per check.
"""

import sys

import ollama
from pydantic import BaseModel

HOST, MODEL = sys.argv[1], sys.argv[2]
client = ollama.Client(host=HOST, timeout=120)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def chat_streamed_and_whole():
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    options = {"temperature": 0, "num_predict": 16}
    whole = client.chat(model=MODEL, messages=messages, options=options)
    check("chat: done", whole.done is True, whole)
    check("chat: done_reason", whole.done_reason == "length", whole.done_reason)
    check("chat: eval_count", whole.eval_count == 16, whole.eval_count)
    check("chat: prompt_eval_count", (whole.prompt_eval_count or 0) > 0, whole.prompt_eval_count)
    check("chat: role", whole.message.role == "assistant", whole.message.role)
    check("chat: created_at", bool(whole.created_at), whole.created_at)
    text, last = "", None
    for part in client.chat(model=MODEL, messages=messages, options=options, stream=True):
        text += part.message.content or ""
        last = part
    check("chat stream: ends done", last is not None and last.done, last)
    check("chat stream: same text", text == whole.message.content, (text, whole.message.content))
    check("chat stream: eval_count", last.eval_count == 16, last.eval_count)


def generate():
    r = client.generate(model=MODEL, prompt="Say hello.", options={"num_predict": 8})
    check("generate: response", bool(r.response), r)
    check("generate: done", r.done and r.done_reason in ("stop", "length"), r.done_reason)
    parts = list(client.generate(model=MODEL, prompt="Say hello.", stream=True,
                                 options={"num_predict": 8}))
    check("generate stream: last done", parts[-1].done, parts[-1])
    check("generate stream: text", "".join(p.response for p in parts).strip() != "", parts)
    loaded = client.generate(model=MODEL)
    check("generate: empty loads", loaded.done_reason == "load", loaded)


def tools(stream: bool):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    options = {"temperature": 0, "num_predict": 96, "tool_choice": "required"}
    if stream:
        calls = []
        for part in client.chat(model=MODEL, messages=messages, tools=[WEATHER],
                                options=options, stream=True):
            calls.extend(part.message.tool_calls or [])
    else:
        r = client.chat(model=MODEL, messages=messages, tools=[WEATHER], options=options)
        calls = r.message.tool_calls or []
    check(f"tools stream={stream}: one call", len(calls) >= 1, calls)
    call = calls[0]
    check(f"tools stream={stream}: name", call.function.name == "get_weather", call)
    args = call.function.arguments
    check(f"tools stream={stream}: arguments object",
          isinstance(args, dict) and isinstance(args.get("city"), str), args)
    messages.append({"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": call.function.name, "arguments": args}}]})
    messages.append({"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"})
    answer = client.chat(model=MODEL, messages=messages, tools=[WEATHER],
                         options={"temperature": 0, "num_predict": 48, "tool_choice": "none"})
    check(f"tools stream={stream}: answer after the result", bool(answer.message.content.strip()),
          answer.message)


class Person(BaseModel):
    age: int
    available: bool


def structured():
    r = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content":
                   "Ollama is 22 years old and busy saving the world. Return a JSON object "
                   "with the age and availability."}],
        format=Person.model_json_schema(),
        options={"temperature": 0},
    )
    person = Person.model_validate_json(r.message.content)
    check("format: pydantic model validates", isinstance(person.age, int), person)


def errors():
    try:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    except ollama.ResponseError as e:
        check("errors: unknown model is a 404", e.status_code == 404, (e.status_code, e.error))
        check("errors: message", bool(e.error), e.error)
    else:
        check("errors: unknown model raises", False)


chat_streamed_and_whole()
generate()
tools(stream=False)
tools(stream=True)
structured()
errors()
print("all checks passed")
