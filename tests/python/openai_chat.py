"""The unmodified `openai` Python SDK against a running node: a tool loop
(call -> tool result -> answer, streamed and not), `parse()` with a Pydantic
model, logprobs, and `response_format` json_schema on many schemas, each
answer checked with the `jsonschema` validator.

Usage: python openai_chat.py BASE_URL MODEL
Exits non-zero (with the failing check) on any failure; prints one line per check.
"""

import json
import sys
from typing import List, Literal

import jsonschema
import openai
from pydantic import BaseModel, Field

BASE, MODEL = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=BASE, api_key="unused", max_retries=0, timeout=120)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
PARAMS = WEATHER["function"]["parameters"]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def tool_loop(stream: bool, tool_choice):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        calls = {}
        finish = None
        for chunk in client.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER], tool_choice=tool_choice,
            temperature=0, max_tokens=96, stream=True,
        ):
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    entry["id"] = tc.id
                if tc.function and tc.function.name:
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["arguments"] += tc.function.arguments
            finish = choice.finish_reason or finish
        check(f"stream={stream} {tool_choice}: finish_reason", finish == "tool_calls", finish)
        call = calls[0]
        call_id, name, arguments = call["id"], call["name"], call["arguments"]
    else:
        r = client.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER], tool_choice=tool_choice,
            temperature=0, max_tokens=96,
        )
        choice = r.choices[0]
        check(f"stream={stream} {tool_choice}: finish_reason",
              choice.finish_reason == "tool_calls", choice.finish_reason)
        tc = choice.message.tool_calls[0]
        call_id, name, arguments = tc.id, tc.function.name, tc.function.arguments
    check(f"stream={stream} {tool_choice}: call id", bool(call_id) and call_id.startswith("call_"), call_id)
    check(f"stream={stream} {tool_choice}: name", name == "get_weather", name)
    args = json.loads(arguments)
    jsonschema.validate(args, PARAMS)
    check(f"stream={stream} {tool_choice}: arguments validate", True)
    # The tool's answer goes back; the model must answer in text.
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temp": 21})})
    if stream:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none",
                temperature=0, max_tokens=32, stream=True)
            if c.choices)
    else:
        text = client.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none",
            temperature=0, max_tokens=32).choices[0].message.content
    check(f"stream={stream} {tool_choice}: final answer", bool(text and text.strip()), repr(text))


for stream in (False, True):
    tool_loop(stream, "required")
    tool_loop(stream, {"type": "function", "function": {"name": "get_weather"}})


class Step(BaseModel):
    explanation: str
    output: str


class MathAnswer(BaseModel):
    steps: List[Step] = Field(max_length=3)
    final_answer: str
    confidence: Literal["low", "medium", "high"]


parsed = client.chat.completions.parse(
    model=MODEL, messages=[{"role": "user", "content": "Solve 8x + 7 = -23."}],
    response_format=MathAnswer, temperature=0, max_tokens=400,
)
msg = parsed.choices[0].message
check("parse(): a Pydantic object", isinstance(msg.parsed, MathAnswer), msg.content)
beta = getattr(getattr(client, "beta", None), "chat", None)
if beta is not None and hasattr(beta.completions, "parse"):
    p2 = beta.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Solve 2x = 4."}],
        response_format=MathAnswer, temperature=0, max_tokens=400,
    )
    check("beta.chat.completions.parse()", isinstance(p2.choices[0].message.parsed, MathAnswer))

lp = client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
    temperature=0, max_tokens=8, logprobs=True, top_logprobs=2,
)
content = lp.choices[0].logprobs.content
check("logprobs: one entry per token", len(content) == lp.usage.completion_tokens
      or (lp.choices[0].finish_reason == "stop" and len(content) == lp.usage.completion_tokens - 1),
      f"{len(content)} vs {lp.usage.completion_tokens}")
check("logprobs: top_logprobs", all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content))

SCHEMAS = [
    {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}}, "required": ["color"]},
    {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["age"]},
    {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["score"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3}}, "required": ["tags"]},
    {"type": "object", "properties": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}, "required": ["point"]},
    {"type": "object", "properties": {"name": {"type": "string", "minLength": 2, "maxLength": 12}}, "required": ["name"]},
    {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string", "maxLength": 12}, "qty": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["sku", "qty"]}, "maxItems": 2}}, "required": ["items"]},
    {"type": "object", "properties": {"kind": {"const": "event"}, "year": {"type": "integer", "minimum": 1900, "maximum": 2100}}, "required": ["kind", "year"]},
    {"type": "object", "properties": {"value": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 8}]}}, "required": ["value"]},
    {"type": "object", "properties": {"nullable": {"type": ["string", "null"], "maxLength": 10}}, "required": ["nullable"]},
    {"type": "object", "properties": {"a": {"type": "string", "maxLength": 10}, "b": {"type": "integer"}}, "required": ["a", "b"], "additionalProperties": False},
    {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}, "maxItems": 2}}, "required": ["matrix"]},
    {"type": "object", "properties": {"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}}, "required": ["date"]},
    {"type": "object", "properties": {"status": {"type": "string", "enum": ["open", "closed"]}, "priority": {"type": "integer", "enum": [1, 2, 3]}}, "required": ["status", "priority"]},
    {"type": "object", "properties": {"price": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000}}, "required": ["price"]},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}, "roles": {"type": "array", "items": {"type": "string", "enum": ["admin", "dev"]}, "maxItems": 2}}, "required": ["id", "roles"]}}, "required": ["user"]},
    {"type": "object", "properties": {"t": {"type": "string", "enum": ["a", "b"]}, "n": {"type": "integer", "minimum": 10, "maximum": 99}, "f": {"type": "boolean"}}, "required": ["t", "n", "f"]},
    {"type": "object", "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90}, "lon": {"type": "number", "minimum": -180, "maximum": 180}}, "required": ["lat", "lon"]},
    {"type": "object", "properties": {"reply": {"type": "string", "maxLength": 40}, "mood": {"enum": ["happy", "sad"]}}, "required": ["reply", "mood"]},
    {"type": "string", "enum": ["yes", "no"]},
]
# Strings are bounded (maxLength) where the schema lets the model write one:
# a grammar can force JSON but not make a small model stop talking inside an
# unbounded string before max_tokens.
for i, schema in enumerate(SCHEMAS):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give me an example value."}],
        response_format={"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}},
        temperature=0.7, seed=i, max_tokens=200,
    )
    text = r.choices[0].message.content
    try:
        jsonschema.validate(json.loads(text), schema)
    except Exception as e:  # noqa: BLE001 - report which schema failed
        check(f"json_schema #{i}", False, f"{text!r}: {e}")
    check(f"json_schema #{i} validates", r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)

try:
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": 7}},
    )
    check("invalid schema is a 400", False, "no error")
except openai.BadRequestError as e:
    check("invalid schema is a 400 naming the parameter", "response_format" in str(e.body), str(e.body))

print("all checks passed", flush=True)
