"""LiteLLM as a client, the way its users reach Helicone's AI gateway: model="helicone/<model>",
api_base = the gateway. Run by tests/sdk.rs (SWITCHYARD_URL, GATEWAY_KEY)."""
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network here
import litellm  # noqa: E402

base, key = os.environ["SWITCHYARD_URL"], os.environ["GATEWAY_KEY"]
hi = [{"role": "user", "content": "hi"}]

r = litellm.completion(model="helicone/claude-sonnet-4", api_base=base, api_key=key, messages=hi)
assert r.choices[0].message.content == "Hello from mock", r
assert r.usage.total_tokens == 10, r.usage
print("litellm claude: ok")

r = litellm.completion(model="helicone/gpt-4o-mini", api_base=f"{base}/v1", api_key=key, messages=hi)
assert r.choices[0].message.content == "Hello from mock", r
print("litellm gpt: ok")

text = "".join(c.choices[0].delta.content or "" for c in litellm.completion(
    model="helicone/claude-sonnet-4", api_base=base, api_key=key, messages=hi, stream=True) if c.choices)
assert text == "Hello, wörld ✓\nsecond line", repr(text)
print("litellm stream: ok")

r = litellm.completion(model="helicone/llama-3.3-70b/together,claude-sonnet-4/anthropic", api_base=base,
                       api_key=key, messages=hi)
assert r.choices[0].message.content == "Hello from mock", r
print("litellm chain: ok")
