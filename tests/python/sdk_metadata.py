"""Helicone metadata in the body with the official openai SDK: `extra_body={"helicone": {...}}`
as Helicone's AI gateway reads it (session, properties, user), on a call and on a stream; a bad
`helicone` object is a 400. Prints the request ids for tests/sdk.rs to look up in the log.
Run by tests/sdk.rs (SWITCHYARD_URL, GATEWAY_KEY)."""
import os

import openai

client = openai.OpenAI(base_url=f"{os.environ['SWITCHYARD_URL']}/v1", api_key=os.environ["GATEWAY_KEY"],
                       max_retries=0)
hi = [{"role": "user", "content": "tag me"}]
meta = {"helicone": {"session": {"id": "sess-42", "name": "Support triage", "path": "/triage/step-1"},
                     "properties": {"Feature": "search", "tier": 2}, "user_id": "alice"}}

r = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=hi, extra_body=meta)
assert r.parse().choices[0].message.content == "Hello from mock"
print("call id:", r.headers["helicone-id"])

with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=hi, stream=True, extra_body=meta) as s:
    text = "".join(c.choices[0].delta.content or "" for c in s.parse() if c.choices)
    print("stream id:", s.headers["helicone-id"])
assert text == "Hello from mock"

# the body's user counts for a per-user policy, like Helicone-User-Id
limited = openai.OpenAI(base_url=f"{os.environ['SWITCHYARD_URL']}/v1", api_key=os.environ["GATEWAY_KEY"],
                        max_retries=0, default_headers={"Helicone-RateLimit-Policy": "1;w=60;s=user"})
limited.chat.completions.create(model="gpt-4o-mini", messages=hi, extra_body={"helicone": {"user_id": "bob"}})
try:
    limited.chat.completions.create(model="gpt-4o-mini", messages=hi, extra_body={"helicone": {"user_id": "bob"}})
    raise SystemExit("bob's second request was admitted")
except openai.RateLimitError as e:
    assert "user=bob" in e.message, e.message
print("metadata: ok")

try:
    client.chat.completions.create(model="gpt-4o-mini", messages=hi,
                                   extra_body={"helicone": {"session": {"idd": "x"}}})
    raise SystemExit("a bad helicone object was accepted")
except openai.BadRequestError as e:
    assert "helicone.session.idd" in e.message, e.message
print("bad metadata: ok")
