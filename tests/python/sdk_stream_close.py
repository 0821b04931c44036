"""The openai SDK streams through Switchyard and closes each connection as its stream ends.

The mock holds the body's end back (`tail_ms`) after `data: [DONE]`, so a client that stops at
[DONE] closes the connection before the last chunk of the body: the gateway must still log a
complete request. Run by tests/sdk.rs with SWITCHYARD_URL, MOCK_ORIGIN and STREAMS set."""
import os

import httpx
import openai

gw = os.environ["SWITCHYARD_URL"]
n = int(os.environ.get("STREAMS", "100"))
ids = []
for i in range(n):
    # a fresh connection per stream, closed when the stream is done, as a short-lived client does
    http = httpx.Client()
    client = openai.OpenAI(
        base_url=gw + "/v1",
        api_key="provider-key",
        http_client=http,
        default_headers={"Helicone-Target-Url": os.environ["MOCK_ORIGIN"]},
    )
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"stream {i}"}],
        stream=True,
        extra_query={"tail_ms": "150"},
    )
    ids.append(stream.headers["helicone-id"])
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text == "Hello from mock", text
    http.close()
print("ids:", ",".join(ids))
print(f"streams: {n} ok")
