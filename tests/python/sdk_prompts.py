"""Prompt templates with the official openai SDK: `prompt_id`, `inputs`, `environment` and
`version` in `extra_body`; a change to the prompt file picked up without a restart; a broken
change that keeps the old version serving; every bad input a 400 the SDK raises; GET /v1/prompts
behind the gateway key. Run by tests/prompts.rs (SWITCHYARD_URL, GATEWAY_KEY, PROMPTS_DIR)."""
import os
import pathlib
import time

import httpx
import openai

url, key = os.environ["SWITCHYARD_URL"], os.environ["GATEWAY_KEY"]
prompts = pathlib.Path(os.environ["PROMPTS_DIR"])
client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
inputs = {"incident": "the 09:12 provider slowdown", "bullets": 3}


def ask(**extra):
    """A chat completion rendered from the incident prompt; (text, prompt version)."""
    r = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[], extra_body={"prompt_id": "incident", **extra})
    return r.parse().choices[0].message.content, r.headers["helicone-prompt-version"]


assert ask(inputs=inputs) == ("Hello from mock", "1"), "production is version 1"
print("production: ok")
v2 = {**inputs, "blameless": True}
assert ask(inputs=v2, environment="development")[1] == "2"
print("environment: ok")
assert ask(inputs=inputs, version=1)[1] == "1"
assert ask(inputs=v2, version="2")[1] == "2"
print("versions: ok")

# the request's own messages follow the prompt's
r = client.chat.completions.create(model="gpt-4o-mini", extra_body={"prompt_id": "incident", "inputs": inputs},
                                   messages=[{"role": "user", "content": "Keep it under 50 words."}])
assert r.choices[0].message.content == "Hello from mock"
with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[], stream=True, extra_body={"prompt_id": "incident", "inputs": inputs}) as s:
    assert s.headers["helicone-prompt-id"] == "incident"
    text = "".join(c.choices[0].delta.content or "" for c in s.parse() if c.choices)
assert text == "Hello from mock", text
print("messages and stream: ok")


def listed():
    r = httpx.get(f"{url}/v1/prompts", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(what, check):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if check(listed()):
            return
        time.sleep(0.1)
    raise SystemExit(f"not picked up within 10 s: {what}: {listed()}")


p = listed()["data"][0]
assert p["id"] == "incident" and [v["version"] for v in p["versions"]] == [1, 2], p
assert p["versions"][0]["inputs"] == {"bullets": "integer", "incident": "string"}
assert p["environments"] == {"development": 2, "production": 1}
assert httpx.get(f"{url}/v1/prompts").status_code == 401, "behind the gateway key"
print("list: ok")

# a new version promoted to production by editing the file: no restart
path = prompts / "incident.yaml"
original = path.read_text()
v3 = original.replace("{production: 1, development: 2}", "{production: 3, development: 2}") + """
  - version: 3
    model: gpt-4o-mini
    inputs: {incident: string}
    messages:
      - {role: user, content: "Three words on {{incident}}."}
"""
tmp = prompts / ".incident.yaml.tmp"
tmp.write_text(v3)
tmp.rename(path)  # atomic, as config management writes files
wait_for("version 3", lambda d: d["data"] and d["data"][0]["environments"]["production"] == 3)
assert ask(inputs={"incident": "the outage"})[1] == "3"
print("reload: ok")

# a broken edit: the error is reported, version 3 keeps serving
path.write_text(v3 + "\n  - version: [broken\n")
wait_for("the error", lambda d: d["errors"])
err = listed()["errors"][0]
assert err["file"] == "incident.yaml", err
assert ask(inputs={"incident": "the outage"})[1] == "3"
print("broken file keeps the old version: ok")

# a new prompt file appears
(prompts / "greeting.yaml").write_text(
    "versions: [{version: 1, model: gpt-4o-mini, inputs: {name: string}, "
    "messages: [{role: user, content: 'Say hello to {{name}}.'}]}]\nenvironments: {production: 1}\n")
wait_for("greeting", lambda d: any(x["id"] == "greeting" for x in d["data"]))
r = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=[], extra_body={"prompt_id": "greeting", "inputs": {"name": "Ada"}})
assert r.headers["helicone-prompt-id"] == "greeting"
print("new prompt: ok")

for extra, want in [
    ({"prompt_id": "nope"}, "unknown prompt 'nope'"),
    ({"prompt_id": "incident", "version": 7, "inputs": inputs}, "has no version 7"),
    ({"prompt_id": "incident", "environment": "staging"}, "no environment 'staging'"),
    ({"prompt_id": "incident", "version": 1, "inputs": {"incident": "x"}}, "missing input(s) bullets"),
    ({"prompt_id": "incident", "version": 1, "inputs": {**inputs, "tone": "dry"}}, "unknown input(s) tone"),
    ({"prompt_id": "incident", "version": 1, "inputs": {"incident": "x", "bullets": "three"}},
     "input 'bullets' must be a integer, got a string"),
    ({"prompt_id": "incident", "version": 2, "inputs": {**inputs, "blameless": "yes"}},
     "input 'blameless' must be a boolean"),
    ({"prompt_id": "incident", "version": 1, "environment": "production", "inputs": inputs}, "not both"),
    ({"prompt_id": "incident", "inputs": ["incident"]}, "`inputs` must be an object"),
]:
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[], extra_body=extra)
        raise SystemExit(f"accepted: {extra}")
    except openai.BadRequestError as e:
        assert want in e.message, (extra, e.message)
print("bad inputs: ok")
