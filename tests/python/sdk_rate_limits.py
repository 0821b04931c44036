"""Rate limits with the official openai SDK: a per-user Helicone-RateLimit-Policy as a default
header, the body's `user` as the segment, the 429 the SDK raises, and the SDK's own retry that
waits out Retry-After. Run by tests/sdk.rs (SWITCHYARD_URL, GATEWAY_KEY)."""
import os
import time

import openai

url, key = f"{os.environ['SWITCHYARD_URL']}/v1", os.environ["GATEWAY_KEY"]
client = openai.OpenAI(base_url=url, api_key=key, max_retries=0,
                       default_headers={"Helicone-RateLimit-Policy": "2;w=60;s=user"})
hi = [{"role": "user", "content": "limit me"}]

for left in ("1", "0"):
    r = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=hi, user="alice")
    assert r.headers["helicone-ratelimit-remaining"] == left, dict(r.headers)
    assert r.headers["helicone-ratelimit-policy"] == "2;w=60;s=user"
try:
    client.chat.completions.create(model="gpt-4o-mini", messages=hi, user="alice")
    raise SystemExit("the third request of alice was admitted")
except openai.RateLimitError as e:
    assert e.status_code == 429
    assert "'2;w=60;s=user'" in e.message and "user=alice" in e.message, e.message
    assert 1 <= int(e.response.headers["retry-after"]) <= 60
print("per-user 429: ok")

# bob has his own counter
assert client.chat.completions.create(model="gpt-4o-mini", messages=hi, user="bob").choices
print("segments: ok")

# the SDK retries a 429 after Retry-After: a 1-per-2-seconds policy lets the retry through
patient = openai.OpenAI(base_url=url, api_key=key, max_retries=2,
                        default_headers={"Helicone-RateLimit-Policy": "1;w=2"})
patient.chat.completions.create(model="gpt-4o-mini", messages=hi)
t0 = time.monotonic()
patient.chat.completions.create(model="gpt-4o-mini", messages=hi)
waited = time.monotonic() - t0
assert 0.9 <= waited <= 6, waited
print("sdk retry after Retry-After: ok")

try:
    client.chat.completions.create(model="gpt-4o-mini", messages=hi,
                                   extra_headers={"Helicone-RateLimit-Policy": "100;w=0"})
    raise SystemExit("an invalid policy was accepted")
except openai.BadRequestError as e:
    assert "<quota>;w=<seconds>" in e.message, e.message
print("bad policy: ok")
