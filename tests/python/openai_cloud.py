"""The unmodified `openai` SDK streams `anthropic:` and `google:` models through
the node (tests/tests/python_clients.rs starts the node in front of fake
providers that answer with the providers' documented streams).

usage: openai_cloud.py BASE_URL
"""
import json
import sys

from openai import OpenAI

TOOLS = [{"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}]
EXPECTED = {
    "anthropic:claude-sonnet-4-5": "Hello! How can I help?",
    "google:gemini-2.0-flash": "The sky is blue because of Rayleigh scattering.",
}


def main() -> None:
    client = OpenAI(base_url=sys.argv[1], api_key="unused-by-the-node")
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in SF?"}]
    for model, expected in EXPECTED.items():
        # Streamed text, usage included.
        text, usage, finish = "", None, None
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True,
            stream_options={"include_usage": True})
        for chunk in stream:
            assert chunk.object == "chat.completion.chunk", chunk
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        assert text == expected, (model, text)
        assert finish == "stop", (model, finish)
        assert usage and usage.total_tokens > 0, (model, usage)
        print(f"{model}: streamed {text!r}, usage {usage.total_tokens}")

        # Streamed tool call, through the SDK's stream helper.
        with client.chat.completions.stream(model=model, messages=messages,
                                            tools=TOOLS) as s:
            final = s.get_final_completion()
        call = final.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather", (model, call)
        assert isinstance(json.loads(call.function.arguments)["location"], str), call
        assert final.choices[0].finish_reason == "tool_calls", final
        print(f"{model}: streamed tool call {call.function.arguments}")

        # Whole answer.
        r = client.chat.completions.create(model=model, messages=messages)
        assert r.choices[0].message.content == expected, (model, r)
    # Gemini embeddings, the SDK's default base64 encoding decoded by the SDK.
    e = client.embeddings.create(model="google:text-embedding-004", input=["ab", "xyz"],
                                 dimensions=3)
    assert [d.index for d in e.data] == [0, 1], e
    assert all(len(d.embedding) == 3 for d in e.data), e
    assert e.data[1].embedding[0] == 3.0 + ord("x") / 256.0, e.data[1].embedding
    print(f"google embeddings: {[len(d.embedding) for d in e.data]}")
    print("all checks passed")


if __name__ == "__main__":
    main()
