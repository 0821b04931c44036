"""Legacy text completions the way LiteLLM's `helicone/` provider sends them (`prompt=`), and the
openai SDK's `completions.create`, through the unified API. Run by tests/sdk.rs."""
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network here
import litellm  # noqa: E402
import openai  # noqa: E402

base, key = os.environ["SWITCHYARD_URL"], os.environ["GATEWAY_KEY"]
# LiteLLM's OpenAI text-completion provider sends `prompt=` to /v1/completions
r = litellm.text_completion(model="text-completion-openai/gpt-4o-mini", api_base=f"{base}/v1", api_key=key,
                            prompt="Say hi")
assert r.choices[0].text == "Hello from mock", r
print("litellm text completion: ok")
# its `helicone/` provider (this LiteLLM version) turns text_completion into a chat call: served too
r = litellm.text_completion(model="helicone/gpt-4o-mini", api_base=f"{base}/v1", api_key=key, prompt="Say hi")
assert r.choices[0].text == "Hello from mock", r
print("litellm helicone text completion: ok")

client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
c = client.completions.create(model="gpt-4o-mini", prompt="Say hi", max_tokens=5)
assert c.choices[0].text == "Hello from mock" and c.usage.total_tokens == 7, c
text = "".join(x.choices[0].text for x in client.completions.create(
    model="gpt-4o-mini", prompt="Say hi", stream=True) if x.choices)
assert text == "Hello from mock", text
print("openai completions: ok")

try:
    client.completions.create(model="claude-sonnet-4/anthropic", prompt="Say hi")
    raise SystemExit("a legacy completion went to a provider without that endpoint")
except openai.BadRequestError as e:
    assert "completions" in e.message, e.message
print("no completions endpoint: ok")
