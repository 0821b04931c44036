"""Official SDKs through Switchyard: the client changes only its base URL (and Helicone headers).

Run by tests/sdk.rs with SWITCHYARD_URL, MOCK_ORIGIN and GATEWAY_KEY set."""
import os
import sys

import anthropic
import openai

gw = os.environ["SWITCHYARD_URL"]
target = os.environ["MOCK_ORIGIN"]
gateway_key = os.environ["GATEWAY_KEY"]
messages = [{"role": "user", "content": "Say hello"}]


def check_openai(client: openai.OpenAI, label: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert raw.headers.get("helicone-id"), f"{label}: no Helicone-Id header"
    r = raw.parse()
    assert r.choices[0].message.content == "Hello from mock", r
    assert r.usage.total_tokens == 8, r.usage
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello from mock", f"{label}: streamed {text!r}"
    assert usage is not None and usage.completion_tokens == 3, f"{label}: {usage}"
    print(f"{label}: ok")


# Helicone style: any base URL path, the target origin in a header
check_openai(
    openai.OpenAI(
        base_url=f"{gw}/v1",
        api_key="sk-provider-key",
        default_headers={"Helicone-Target-Url": target, "Helicone-Auth": f"Bearer {gateway_key}"},
        max_retries=0,
    ),
    "openai sdk, Helicone-Target-Url",
)
# provider prefix from the catalogue: only the base URL changes
check_openai(
    openai.OpenAI(
        base_url=f"{gw}/mock/v1",
        api_key="sk-provider-key",
        default_headers={"Helicone-Auth": f"Bearer {gateway_key}"},
        max_retries=0,
    ),
    "openai sdk, /mock prefix",
)

# a wrong gateway key surfaces as the SDK's AuthenticationError with our message
try:
    openai.OpenAI(
        base_url=f"{gw}/mock/v1", api_key="sk-provider-key",
        default_headers={"Helicone-Auth": "Bearer wrong"}, max_retries=0,
    ).chat.completions.create(model="gpt-4o-mini", messages=messages)
    sys.exit("a wrong gateway key was accepted")
except openai.AuthenticationError as e:
    assert "invalid gateway key" in str(e), e
    print("openai sdk, wrong key: ok")

ac = anthropic.Anthropic(
    base_url=f"{gw}/mock",
    api_key="sk-ant-provider-key",
    default_headers={"Helicone-Auth": f"Bearer {gateway_key}"},
    max_retries=0,
)
m = ac.messages.create(model="claude-sonnet-4", max_tokens=16, messages=messages)
assert m.content[0].text == "Hello from mock", m
assert m.usage.output_tokens == 3
print("anthropic sdk, /mock prefix: ok")
