"""The response cache with the official openai SDK: Helicone-Cache-Enabled as a default header,
the second identical call answered from cache, byte for byte, streams included.
Run by tests/sdk.rs (SWITCHYARD_URL, GATEWAY_KEY)."""
import os

import openai

client = openai.OpenAI(base_url=f"{os.environ['SWITCHYARD_URL']}/v1", api_key=os.environ["GATEWAY_KEY"],
                       max_retries=0, default_headers={"Helicone-Cache-Enabled": "true"})
hi = [{"role": "user", "content": "what is cached?"}]

first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=hi, temperature=0)
second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=hi, temperature=0)
assert first.headers["helicone-cache"] == "MISS", dict(first.headers)
assert second.headers["helicone-cache"] == "HIT", dict(second.headers)
assert second.headers["helicone-cache-bucket-idx"] == "0"
assert second.http_response.content == first.http_response.content, "byte-identical"
assert second.parse().choices[0].message.content == "Hello from mock"
print("cached chat: ok")

other = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=hi, temperature=1)
assert other.headers["helicone-cache"] == "MISS", "another body, another entry"
seeded = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=hi, temperature=0, extra_headers={"Helicone-Cache-Seed": "user-42"})
assert seeded.headers["helicone-cache"] == "MISS", "a seed is its own namespace"
print("keys: ok")

def stream_text():
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=hi, stream=True) as r:
        status = r.headers["helicone-cache"]
        text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    return status, text

assert stream_text() == ("MISS", "Hello from mock")
assert stream_text() == ("HIT", "Hello from mock")
print("cached stream: ok")

# buckets: two answers are kept for the same request, then one of them is served
b = {"Helicone-Cache-Bucket-Max-Size": "2"}
q = [{"role": "user", "content": "bucketed"}]
seen = [client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=q, extra_headers=b)
        .headers["helicone-cache"] for _ in range(4)]
assert seen == ["MISS", "MISS", "HIT", "HIT"], seen
print("buckets: ok")

# TTL: Cache-Control max-age=1 expires
import time  # noqa: E402
t = {"Cache-Control": "max-age=1"}
q = [{"role": "user", "content": "short-lived"}]
first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=q, extra_headers=t)
again = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=q, extra_headers=t)
time.sleep(2.1)
later = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=q, extra_headers=t)
assert [r.headers["helicone-cache"] for r in (first, again, later)] == ["MISS", "HIT", "MISS"]
print("ttl: ok")

# a bad cache header is a 400 the SDK reports
try:
    client.chat.completions.create(model="gpt-4o-mini", messages=q,
                                   extra_headers={"Helicone-Cache-Bucket-Max-Size": "50"})
    raise AssertionError("expected a 400")
except openai.BadRequestError as e:
    assert "Helicone-Cache-Bucket-Max-Size" in str(e), e
print("bad header: ok")
