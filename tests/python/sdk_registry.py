"""Helicone's model strings through the unified API with the official openai SDK, on the bundled
registry. Run by tests/registry.rs (SWITCHYARD_URL, GATEWAY_KEY, MODELS: one model string a line);
prints `<model string>\t<Helicone-Id>\t<Helicone-Provider>` per string, and the Rust test checks
which mock answered, the id it was sent, and the logged cost."""
import os

import openai

client = openai.OpenAI(base_url=f"{os.environ['SWITCHYARD_URL']}/v1", api_key=os.environ["GATEWAY_KEY"],
                       max_retries=0)
hi = [{"role": "user", "content": "hi"}]

for model in filter(None, os.environ["MODELS"].splitlines()):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=hi)
    r = raw.parse()
    assert r.choices[0].message.content == "Hello from mock", (model, r)
    assert r.usage is not None and r.usage.total_tokens > 0, (model, r.usage)
    print(f"{model}\t{raw.headers['helicone-id']}\t{raw.headers['helicone-provider']}", flush=True)
print("done")
