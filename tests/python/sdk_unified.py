"""The unified API with the official openai SDK: base_url = Switchyard, api_key = the gateway key,
any model by name. Run by tests/sdk.rs (SWITCHYARD_URL, GATEWAY_KEY); the gateway's providers are
mocks: openai, anthropic, and together answering 500."""
import json
import os

import openai

client = openai.OpenAI(base_url=f"{os.environ['SWITCHYARD_URL']}/v1", api_key=os.environ["GATEWAY_KEY"],
                       max_retries=0)
hi = [{"role": "user", "content": "hi"}]

# chat, OpenAI model
raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=hi)
assert raw.headers["helicone-provider"] == "openai", dict(raw.headers)
assert raw.parse().choices[0].message.content == "Hello from mock"
print("openai model: ok")

# chat, Claude through the OpenAI SDK (translated both ways)
raw = client.chat.completions.with_raw_response.create(
    model="claude-sonnet-4", messages=[{"role": "system", "content": "Be brief."}, *hi])
r = raw.parse()
assert raw.headers["helicone-provider"] == "anthropic"
assert r.object == "chat.completion" and r.choices[0].message.content == "Hello from mock", r
assert r.choices[0].finish_reason == "stop" and r.usage.total_tokens == 10, r.usage
print("claude model: ok")

# streaming from Claude, with the usage chunk
text, usage, roles = "", None, []
for c in client.chat.completions.create(model="claude-sonnet-4/anthropic", messages=hi, stream=True,
                                        stream_options={"include_usage": True}):
    if c.usage:
        usage = c.usage
    for ch in c.choices:
        text += ch.delta.content or ""
        if ch.delta.role:
            roles.append(ch.delta.role)
assert text == "Hello, wörld ✓\nsecond line", repr(text)
assert roles == ["assistant"], roles
assert usage is not None and usage.prompt_tokens == 35 and usage.completion_tokens == 6, usage
print("claude stream: ok")

# tool calling through the translation: JSON, then a stream of parallel tool calls
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
r = client.chat.completions.create(model="claude-sonnet-4", messages=hi, tools=tools, tool_choice="auto")
call = r.choices[0].message.tool_calls[0]
assert r.choices[0].finish_reason == "tool_calls", r
assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}, call
# the tool result goes back as a `tool` message
r = client.chat.completions.create(model="claude-sonnet-4", tools=tools, messages=[
    *hi, r.choices[0].message.model_dump(exclude_none=True),
    {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"}])
assert r.choices[0].message.content is not None
calls = {}
with client.chat.completions.stream(model="claude-sonnet-4", messages=hi, tools=tools) as s:
    for _ in s:
        pass
    final = s.get_final_completion()
for tc in final.choices[0].message.tool_calls:
    calls[tc.function.name + str(len(calls))] = json.loads(tc.function.arguments)
assert final.choices[0].finish_reason == "tool_calls", final
assert len(calls) == 2, calls
print("tool calls: ok")

# a chain whose first provider fails
raw = client.chat.completions.with_raw_response.create(
    model="llama-3.3-70b/together,claude-sonnet-4/anthropic", messages=hi)
assert raw.headers["helicone-provider"] == "anthropic", dict(raw.headers)
assert raw.parse().choices[0].message.content == "Hello from mock"
print("fallthrough: ok")

# every provider failing: the SDK raises with the gateway's listing
try:
    client.chat.completions.create(model="llama-3.3-70b/together", messages=hi)
    raise AssertionError("expected an error")
except openai.InternalServerError as e:
    assert e.status_code == 500 and "together" in str(e), e
print("all failed: ok")

# unknown model: NotFound with a suggestion
try:
    client.chat.completions.create(model="claude-sonet-4", messages=hi)
    raise AssertionError("expected an error")
except openai.NotFoundError as e:
    assert "claude-sonnet-4" in str(e), e
print("unknown model: ok")

# models and embeddings
ids = [m.id for m in client.models.list()]
assert "claude-sonnet-4" in ids and "gpt-4o-mini" in ids, ids
assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
emb = client.embeddings.create(model="text-embedding-3-small", input="hello")
assert emb.data[0].embedding == [0.25, -0.5, 1.0], emb
print("models and embeddings: ok")
