"""The seeds' example with the official openai SDK: an OpenAI target first, a second
OpenAI-compatible provider as fallback. Run by tests/sdk.rs (SWITCHYARD_URL, PRIMARY, SECONDARY)."""
import json
import os

import openai

gw, primary, secondary = os.environ["SWITCHYARD_URL"], os.environ["PRIMARY"], os.environ["SECONDARY"]
fallbacks = [
    {"target-url": primary, "headers": {"Authorization": "Bearer sk-primary", "Content-Type": "application/json"},
     "onCodes": [429, {"from": 500, "to": 599}]},
    {"target-url": secondary, "headers": {"Authorization": "Bearer sk-secondary", "Content-Type": "application/json"},
     "onCodes": []},
]
client = openai.OpenAI(base_url=f"{gw}/v1", api_key="unused-by-fallbacks", max_retries=0,
                       default_headers={"Helicone-Fallbacks": json.dumps(fallbacks)})
raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
assert raw.headers.get("helicone-fallback-index") == "1", dict(raw.headers)
assert raw.parse().choices[0].message.content == "Hello from mock"
text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
assert text == "Hello from mock", text
print("openai sdk, fallbacks: ok")
