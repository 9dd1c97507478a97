"""Secrets never leak: after a run of failures of every kind, no client key, upstream key or
hash of either appears in logs (debug level), error bodies, /metrics, the status page or
/status.json."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import httpx
import openai

from tests.support import (
    ADMIN_KEY,
    CLIENT_KEY,
    LIMITED_KEY,
    UPSTREAM_KEY,
    Hang,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    free_port,
    gateway_yaml,
    running_gateway,
)

HEADER_SECRET = "hdr-SECRET-value-42"
SECRETS = [CLIENT_KEY, UPSTREAM_KEY, ADMIN_KEY, LIMITED_KEY, HEADER_SECRET, "sk-wrong-SECRET-guess"]
FORBIDDEN = SECRETS + [hashlib.sha256(s.encode()).hexdigest() for s in SECRETS] + [
    base64.b64encode(f"ops:{ADMIN_KEY}".encode()).decode()]


def extra(dead: int) -> str:
    return f"""\
- name: dead
  type: openai
  base_url: http://127.0.0.1:{dead}/v1
  api_key: ${{TEST_UPSTREAM_KEY}}
  prefix: dead
  models: [m]
- name: hdr
  type: openai
  base_url: http://127.0.0.1:{dead}/v1
  headers: {{api-key: "{HEADER_SECRET}"}}
  prefix: hdr
  models: [m]
"""


def test_no_secret_anywhere_after_a_run_of_failures(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    cfg = gateway_yaml(upstream.url, extra(free_port()), server="header_timeout: 5s\n")
    cfg = cfg.replace("    models: [gpt-4o, gpt-4o-mini]",
                      "    models: [gpt-4o, gpt-4o-mini]\n    timeouts: {first_byte: 1s}")
    seen: list[str] = []
    with running_gateway(tmp_path, cfg, log_level="debug", log_format="json") as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        upstream.push(
            Reply({"error": {"message": f"invalid key {UPSTREAM_KEY}"}}, 401),
            Reply(f"<html>key={UPSTREAM_KEY}</html>".encode(), 500),
            Hang(3),
            Stream([chunk("gpt-4o", {"content": "partial"})], cut=True),
        )
        for model, stream in (("up/gpt-4o", False), ("up/gpt-4o", False), ("up/gpt-4o", False), ("up/gpt-4o", True),
                              ("dead/m", False), ("hdr/m", True), ("nope/x", False)):
            try:
                out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                                     stream=stream)  # type: ignore[call-overload]
                if stream:
                    seen.extend(c.model_dump_json() for c in out)
            except openai.APIError as exc:
                seen.append(str(exc))
                seen.append(repr(getattr(exc, "body", None)))
        for bad in ("sk-wrong-SECRET-guess", "x"):
            r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "up/gpt-4o"},
                           headers={"Authorization": f"Bearer {bad}"})
            seen.append(r.text)
        seen.append(httpx.get(gw.url + "/v1/models", headers={"x-api-key": "sk-wrong-SECRET-guess"}).text)
        seen.append(httpx.get(gw.url + "/metrics").text)
        seen.append(httpx.get(gw.url + "/", auth=("ops", ADMIN_KEY)).text)
        status = httpx.get(gw.url + "/status.json", auth=("ops", ADMIN_KEY))
        assert status.status_code == 200
        seen.append(status.text)
        seen.append(httpx.get(gw.url + "/status.json", auth=("ops", "sk-wrong-SECRET-guess")).text)
        logs = gw.logs()
    assert "did not answer" in logs or "failed" in logs  # the failures were logged...
    blob = "\n".join([*seen, logs])
    for secret in FORBIDDEN:
        assert secret not in blob, f"secret leaked: {secret[:6]}..."  # ...without any secret
