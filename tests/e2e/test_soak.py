"""Soak: 16 clients mixing streams and non-streams while the config is rewritten; nothing lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.support import CLIENT_KEY, ScriptedUpstream, gateway_yaml, running_gateway

CLIENTS = 16
SECONDS = 8.0
REWRITES = 5


def test_sixteen_clients_across_config_rewrites_lose_nothing(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    base = gateway_yaml(upstream.url)
    with running_gateway(tmp_path, base) as gw:
        stop = threading.Event()
        ok = [0] * CLIENTS
        failures: list[str] = []

        def client(i: int) -> None:
            model = "up/gpt-4o" if i % 2 else "demo/echo"
            stream = i % 4 < 2
            with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as c:
                while not stop.is_set():
                    body = {"model": model, "messages": [{"role": "user", "content": f"soak {i}"}], "stream": stream}
                    try:
                        if stream:
                            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                                text = r.read().decode()
                            good = r.status_code == 200 and text.endswith("data: [DONE]\n\n") and '"error"' not in text
                        else:
                            r = c.post("/v1/chat/completions", json=body)
                            good = r.status_code == 200 and r.json()["model"] == model
                    except httpx.HTTPError as exc:
                        good, r = False, None  # type: ignore[assignment]
                        failures.append(f"client {i}: {exc!r}")
                    if good:
                        ok[i] += 1
                    elif r is not None:
                        failures.append(f"client {i}: {r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        path = gw.config_path
        for n in range(REWRITES):
            time.sleep(SECONDS / (REWRITES + 1))
            # Each rewrite adds a model and a key: a real new state with new provider clients.
            path.write_text(base.replace("models: [echo]", f"models: [echo, echo{n}]")
                            + f"cors: {{allow_origins: ['https://{n}.example']}}\n")
        time.sleep(SECONDS / (REWRITES + 1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ids = {m["id"] for m in httpx.get(gw.url + "/v1/models", headers={"x-api-key": CLIENT_KEY}).json()["data"]}
            if f"demo/echo{REWRITES - 1}" in ids:
                break
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(30)
        metrics = httpx.get(gw.url + "/metrics").text
    assert not failures, failures[:5]
    assert all(n > 0 for n in ok), ok
    assert f"demo/echo{REWRITES - 1}" in ids
    reloads = [ln for ln in metrics.splitlines() if ln.startswith('vte_config_reloads_total{result="success"}')]
    assert reloads and float(reloads[0].split()[-1]) >= 2  # initial load + at least one reload seen
