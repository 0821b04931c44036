"""Anthropic's Messages API through the gateway with the official anthropic SDK: base_url =
Switchyard, api_key = the gateway key, any model. Run by tests/messages.rs (SWITCHYARD_URL,
GATEWAY_KEY); the gateway's providers are mocks: anthropic, openai, and together answering 500."""
import json
import os

import anthropic

URL = os.environ["SWITCHYARD_URL"]
KEY = os.environ["GATEWAY_KEY"]
client = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0)
hi = [{"role": "user", "content": "hi"}]

# a Claude model, natively: the answer comes back as Anthropic sent it
raw = client.messages.with_raw_response.create(
    model="claude-sonnet-4", max_tokens=64, messages=hi,
    system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
m = raw.parse()
assert raw.headers["helicone-provider"] == "anthropic", dict(raw.headers)
assert "helicone-dropped-fields" not in raw.headers, dict(raw.headers)
assert m.content[0].text == "Hello from mock" and m.stop_reason == "end_turn", m
assert m.usage.input_tokens == 5 and m.usage.cache_read_input_tokens == 2, m.usage
print("native claude: ok")

# an OpenAI model, translated both ways; the hints it cannot honour are reported
raw = client.messages.with_raw_response.create(
    model="gpt-4o-mini", max_tokens=64, messages=hi, metadata={"user_id": "u-42"},
    system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
m = raw.parse()
assert raw.headers["helicone-provider"] == "openai", dict(raw.headers)
dropped = raw.headers["helicone-dropped-fields"]
assert "system[0].cache_control" in dropped and "interleaved-thinking-2025-05-14" in dropped, dropped
assert m.type == "message" and m.role == "assistant", m
assert m.content[0].type == "text" and m.content[0].text == "Hello from mock", m
assert m.stop_reason == "end_turn", m
assert m.usage.input_tokens == 5 and m.usage.output_tokens == 3, m.usage
print("translated gpt: ok")

# streamed: the full event sequence, as the SDK's stream helper reads it
events = []
with client.messages.stream(model="gpt-4o-mini", max_tokens=64, messages=hi) as s:
    for ev in s:
        events.append(ev.type)
    text = s.get_final_text()
    final = s.get_final_message()
assert text == "Hello from mock", repr(text)
for kind in ("message_start", "content_block_start", "content_block_delta", "content_block_stop",
             "message_delta", "message_stop"):
    assert kind in events, (kind, events)
assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3, final
assert final.usage.input_tokens == 5, final.usage
print("translated stream: ok")

# tools over several turns, translated: tool_use, then the tool_result goes back
tools = [{"name": "get_weather", "description": "Weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
first = client.messages.create(model="gpt-4o-mini", max_tokens=64, messages=hi, tools=tools,
                               tool_choice={"type": "any"})
assert first.stop_reason == "tool_use", first
call = [b for b in first.content if b.type == "tool_use"][0]
assert call.id == "call_mock_1" and call.name == "get_weather" and call.input == {"city": "Paris"}, call
assert first.usage.input_tokens == 16 and first.usage.cache_read_input_tokens == 4, first.usage
turns = [*hi, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C, sunny"}]}]
second = client.messages.create(model="gpt-4o-mini", max_tokens=64, messages=turns, tools=tools)
assert second.stop_reason == "end_turn" and second.content[0].text == "Hello from mock", second
with client.messages.stream(model="gpt-4o-mini", max_tokens=64, messages=hi, tools=tools) as s:
    final = s.get_final_message()
call = [b for b in final.content if b.type == "tool_use"][0]
assert call.id == "call_mock_1" and call.input == {"city": "Paris"}, final
assert final.stop_reason == "tool_use" and final.usage.output_tokens == 7, final
print("tools: ok")

# a chain whose first provider fails: the next one answers
raw = client.messages.with_raw_response.create(model="llama-3.3-70b/together,gpt-4o-mini/openai",
                                                max_tokens=64, messages=hi)
assert raw.headers["helicone-provider"] == "openai", dict(raw.headers)
assert raw.parse().content[0].text == "Hello from mock"
print("fallback: ok")

# count_tokens: Anthropic's own count for Claude, a local one for the others
n = client.messages.count_tokens(model="claude-sonnet-4", messages=hi)
assert n.input_tokens == 42, n
raw = client.messages.with_raw_response.count_tokens(model="gpt-4o-mini", messages=hi, system="Be brief.")
assert raw.headers["helicone-token-count"] == "tokenizer=o200k_base", dict(raw.headers)
assert 5 < raw.parse().input_tokens < 30, raw.parse()
raw = client.messages.with_raw_response.count_tokens(model="llama-3.3-70b", messages=hi)
assert raw.headers["helicone-token-count"] == "estimate=chars/4", dict(raw.headers)
print("count_tokens: ok")

# errors in Anthropic's shape, as the SDK's exception classes
try:
    client.messages.create(model="gpt-4o-mini", max_tokens=64, messages=hi, extra_body={"top_k": 5})
    raise SystemExit("top_k to an OpenAI model was accepted")
except anthropic.BadRequestError as e:
    assert e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body
    assert "top_k" in e.body["error"]["message"], e.body
try:
    client.messages.create(model="no-such-model-xyz", max_tokens=64, messages=hi)
    raise SystemExit("an unknown model was accepted")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
try:
    anthropic.Anthropic(base_url=URL, api_key="sk-wrong", max_retries=0).messages.create(
        model="gpt-4o-mini", max_tokens=64, messages=hi)
    raise SystemExit("a wrong gateway key was accepted")
except anthropic.AuthenticationError as e:
    assert e.body["error"]["type"] == "authentication_error", e.body
print("errors: ok")

# the key as Claude Code's ANTHROPIC_AUTH_TOKEN sends it (Authorization: Bearer)
bearer = anthropic.Anthropic(base_url=URL, auth_token=KEY, max_retries=0)
assert bearer.messages.create(model="gpt-4o-mini", max_tokens=16, messages=hi).content[0].text == "Hello from mock"
# the model list, in Anthropic's shape
ids = [m.id for m in client.models.list()]
assert "claude-sonnet-4" in ids and "gpt-4o-mini" in ids, ids[:10]
print("auth and models: ok")
print(json.dumps({"done": True}))
