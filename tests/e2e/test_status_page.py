"""The status page (``GET /``), its JSON twin and the live log, against a real gateway; the
page itself is opened in Debian's headless Chromium driven by Playwright.

``VTE_SCREENSHOT=1`` also writes the page's screenshot to ``docs/status-page.png`` (the
picture in the docs); otherwise it goes to the test's temporary directory only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, gateway_fixture
from tests.support import (
    ADMIN_KEY,
    CLIENT_KEY,
    LIMITED_KEY,
    ROOT,
    THREE_WORDS,
    UPSTREAM_KEY,
    GatewayProcess,
    ScriptedUpstream,
    gateway_yaml,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRETS = [CLIENT_KEY, ADMIN_KEY, LIMITED_KEY, UPSTREAM_KEY]

EXTRA = """\
- name: lab
  type: openai
  base_url: {url}
  api_key: ${{TEST_UPSTREAM_KEY}}
  prefix: lab
  models: ["gpt-4o*"]
  discover: {{enabled: true, include: ["gpt-4o*"], interval: 1m}}
"""
ROUTES = """\
- name: smart
  targets: [up/gpt-4o, demo/echo]
"""


def config_text(url: str) -> str:
    return gateway_yaml(url, EXTRA.format(url=url), routes=ROUTES)


stack = gateway_fixture(config_text)


@pytest.fixture
def gw(s: Stack[ScriptedUpstream]) -> GatewayProcess:
    return s.gateway


def basic(password: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def chat(gw: GatewayProcess, model: str, key: str = CLIENT_KEY, stream: bool = False) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": THREE_WORDS, "stream": stream}, timeout=10)


def secret_forms() -> list[str]:
    return SECRETS + [hashlib.sha256(s.encode()).hexdigest() for s in SECRETS]


def wait_for_status(gw: GatewayProcess, test: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        s = httpx.get(gw.url + "/status.json", headers=basic(ADMIN_KEY)).json()
        got = test(s)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"status.json never matched; last: {s['config']}")
        time.sleep(0.1)


@pytest.mark.parametrize("path", ["/", "/status.json", "/status/events"])
def test_status_paths_want_a_key_with_status_access(gw: GatewayProcess, path: str) -> None:
    denied: list[dict[str, str]] = [{}, basic(CLIENT_KEY), basic("sk-wrong-key"), basic(""),
                                    {"Authorization": f"Bearer {CLIENT_KEY}"}, {"Authorization": "Basic !!!"}]
    for headers in denied:
        r = httpx.get(gw.url + path, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Basic ")
        assert CLIENT_KEY not in r.text
    for headers in (basic(ADMIN_KEY), basic(ADMIN_KEY, user=""), {"Authorization": f"Bearer {ADMIN_KEY}"}):
        with httpx.stream("GET", gw.url + path, headers=headers) as r:
            assert r.status_code == 200


def test_page_is_one_self_contained_file(gw: GatewayProcess) -> None:
    r = httpx.get(gw.url + "/", headers=basic(ADMIN_KEY))
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["cache-control"] == "no-store"
    html = r.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html  # nothing from elsewhere
    assert "<script src" not in html and "<link rel=\"stylesheet\"" not in html
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html and "document.write" not in html
    assert "new EventSource('/status/events')" in html or 'new EventSource("/status/events")' in html
    assert len(html.splitlines()) <= 350


def test_status_json_shows_names_hosts_and_totals_never_secrets(gw: GatewayProcess) -> None:
    before = httpx.get(gw.url + "/status.json", headers=basic(ADMIN_KEY)).json()
    assert chat(gw, "demo/echo").status_code == 200           # echo: 3 prompt, 3 completion tokens
    assert chat(gw, "up/gpt-4o", stream=True).status_code == 200  # upstream: 7 + 3
    assert chat(gw, "up/gpt-4o").status_code == 200
    assert chat(gw, "nope/<i>junk</i>").status_code == 404
    r = httpx.get(gw.url + "/status.json", headers=basic(ADMIN_KEY))
    assert r.headers["cache-control"] == "no-store"
    s = r.json()
    for secret in secret_forms():
        assert secret not in r.text
    assert gw.url.split("//")[1] not in r.text  # upstream URLs as host only: no port
    assert s["version"] and s["ready"] is True
    assert len(s["config"]["hash"]) == 12 and s["config"]["last_reload_error"] is None
    assert s["config"]["reloads"]["success"] >= 1
    providers = {p["name"]: p for p in s["providers"]}
    assert set(providers) == {"up", "demo", "lab"}
    assert providers["up"] | {"recent_requests": 0, "recent_errors": 0, "error_rate": 0.0} == {
        "name": "up", "type": "openai", "prefix": "up", "host": "127.0.0.1", "models": 2, "stream_mode": "auto",
        "discovery": None, "recent_requests": 0, "recent_errors": 0, "error_rate": 0.0, "upstream_keys": None}
    assert providers["demo"]["host"] is None
    assert providers["lab"]["discovery"]["last_ok"] is not None and providers["lab"]["models"] == 2
    models = {m["id"]: m for m in s["models"]}
    assert {"up/gpt-4o", "up/gpt-4o-mini", "demo/echo", "lab/gpt-4o", "lab/gpt-4o-mini", "smart"} == set(models)
    assert models["smart"]["route"] is True and models["smart"]["targets"] == ["up/gpt-4o", "demo/echo"]
    assert (models["up/gpt-4o"]["provider"], models["up/gpt-4o"]["upstream"]) == ("up", "gpt-4o")
    old = {m["id"]: m for m in before["models"]}

    def grew(model: str, field: str) -> int:
        return int(models[model][field] - old[model][field])

    assert (grew("up/gpt-4o", "requests"), grew("up/gpt-4o", "prompt_tokens"),
            grew("up/gpt-4o", "completion_tokens")) == (2, 14, 6)
    assert (grew("demo/echo", "requests"), grew("demo/echo", "prompt_tokens"),
            grew("demo/echo", "completion_tokens")) == (1, 3, 3)
    assert s["unknown_model_requests"] - before["unknown_model_requests"] == 1
    assert s["totals"]["requests"] - before["totals"]["requests"] == 4
    assert s["totals"]["errors"] - before["totals"]["errors"] == 1
    assert [k["name"] for k in s["keys"]] == ["team", "limited", "admin"]
    assert {k["name"]: k["status"] for k in s["keys"]} == {"team": False, "limited": False, "admin": True}
    assert s["keys"][1]["models"] == ["demo/*"] and set(s["keys"][0]) == {"name", "status", "models", "limits"}
    log = s["log"]
    assert log[0]["model"] == "nope/<i>junk</i>" and log[0]["status"] == 404  # newest first
    assert [e["model"] for e in log[1:4]] == ["up/gpt-4o", "up/gpt-4o", "demo/echo"]
    assert log[2]["stream"] is True and log[2]["ttft_ms"] is not None
    assert log[3] | {"time": 0, "duration_ms": 0} == {
        "time": 0, "key": "team", "model": "demo/echo", "provider": "demo", "endpoint": "chat/completions",
        "status": 200, "stream": False, "duration_ms": 0, "ttft_ms": None, "prompt_tokens": 3,
        "completion_tokens": 3, "error": None}


# ------------------------------------------------------------------ the page in a browser
def launch_chromium(p: Any) -> Any:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: the status-page test needs Debian's chromium "
                    "(apt-get install chromium, or run `make chromium`)", pytrace=False)
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def playwright_api() -> tuple[Any, Any]:
    """(expect, sync_playwright); a missing playwright fails the test, it never skips it."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]' (playwright==1.65.2)", pytrace=False)
    return expect, sync_playwright


def test_page_in_headless_chromium(gw: GatewayProcess, tmp_path: Path) -> None:
    expect, sync_playwright = playwright_api()
    # Some history for the tables and the log before the page opens.
    for model, key, stream in [("up/gpt-4o", CLIENT_KEY, False), ("up/gpt-4o-mini", CLIENT_KEY, True),
                               ("smart", CLIENT_KEY, True), ("lab/gpt-4o", CLIENT_KEY, False),
                               ("demo/echo", LIMITED_KEY, True), ("up/gpt-4o", LIMITED_KEY, False),
                               ("gpt-5-turbo", CLIENT_KEY, False)]:
        chat(gw, model, key, stream)
    httpx.get(gw.url + "/v1/models", headers={"Authorization": "Bearer sk-bad"})
    chat(gw, "demo/echo", "sk-not-a-key")

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            context = browser.new_context(http_credentials={"username": "ops", "password": ADMIN_KEY},
                                          viewport={"width": 1360, "height": 900}, device_scale_factor=1)
            page = context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error"
                    else None)
            page.goto(gw.url + "/")

            providers, models = page.locator("#providers"), page.locator("#models")
            expect(providers).to_contain_text("openai")
            for name in ("up", "demo", "lab"):
                expect(providers.locator("td.mono", has_text=name).first).to_be_visible()
            expect(providers).to_contain_text("127.0.0.1")
            expect(providers).to_contain_text("built in")
            for name in ("up/gpt-4o", "up/gpt-4o-mini", "demo/echo", "lab/gpt-4o", "smart"):
                expect(models.get_by_text(name, exact=True)).to_be_visible()
            expect(models).to_contain_text("route (fallback) → up/gpt-4o, demo/echo")
            expect(page.locator("#keys")).to_contain_text("limited")
            expect(page.locator("#hash")).to_have_text(httpx.get(gw.url + "/status.json", headers=basic(ADMIN_KEY))
                                                       .json()["config"]["hash"])
            expect(page.locator("#conn")).to_have_class("live", timeout=10_000)
            log = page.locator("#log")
            expect(log).to_contain_text("gpt-5-turbo")  # the history, from status.json

            # A request made while the page is open shows up without a reload.
            page.evaluate("window.__same_document = true")
            assert chat(gw, "demo/echo", LIMITED_KEY).status_code == 200
            line = log.locator(".l").first
            expect(line).to_contain_text("limited", timeout=10_000)
            expect(line).to_contain_text("demo/echo")
            # Request text is shown as text, never markup.
            hostile = "<b>x</b>"
            assert chat(gw, hostile).status_code == 404
            assert chat(gw, '<img src=x onerror="window.__pwned=1">').status_code == 404
            expect(log.locator(".l").nth(1)).to_contain_text(hostile, timeout=10_000)
            expect(log.locator(".l").first).to_contain_text("<img src=x onerror=")
            assert page.evaluate("window.__same_document") is True
            assert page.evaluate("document.querySelectorAll('b, img').length") == 0
            assert page.evaluate("window.__pwned") is None
            assert hostile in page.inner_text("#log")
            # The tables refresh by themselves (every ~5 s).
            expect(page.locator("#totals")).to_contain_text("unknown model requests")
            status = httpx.get(gw.url + "/status.json", headers=basic(ADMIN_KEY)).json()
            served = next(m["requests"] for m in status["models"] if m["id"] == "demo/echo")  # the one sent above too
            page.wait_for_function(
                "n => [...document.querySelectorAll('#models tr')].some(tr => tr.cells[0]?.textContent === "
                "'demo/echo' && Number(tr.cells[2].textContent.replace(/,/g, '')) >= n)", arg=served, timeout=15_000)

            html = page.content()
            for secret in secret_forms():
                assert secret not in html
            shot = tmp_path / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("VTE_SCREENSHOT"):
                shutil.copyfile(shot, ROOT / "docs" / "status-page.png")
            assert not problems, problems
        finally:
            browser.close()


def test_reload_error_is_highlighted_on_the_page(gw: GatewayProcess) -> None:
    expect, sync_playwright = playwright_api()

    good = gw.config_path.read_text()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_context(http_credentials={"username": "x", "password": ADMIN_KEY}).new_page()
            page.goto(gw.url + "/")
            expect(page.locator("#error")).to_be_hidden()
            gw.config_path.write_text(good.replace("version: 1", "version: 1\nunknown_top: <script>1</script>"))
            banner = page.locator("#error")
            expect(banner).to_be_visible(timeout=20_000)
            expect(banner).to_contain_text("Last reload failed")
            expect(banner).to_contain_text("unknown_top")
        finally:
            gw.config_path.write_text(good + "\n# fixed\n")
            browser.close()
    wait_for_status(gw, lambda s: s["config"]["last_reload_error"] is None)


def test_a_failed_reload_is_shown_until_a_good_config_loads(gw: GatewayProcess, module_upstream: ScriptedUpstream,
                                                            ) -> None:
    good = gw.config_path.read_text()
    try:
        gw.config_path.write_text(good.replace("prefix: demo", "prefix: demo\n    bogus_field: 1"))
        err = wait_for_status(gw, lambda s: s["config"]["last_reload_error"])
        assert "bogus_field" in err["message"]
    finally:
        gw.config_path.write_text(good + "\n# touched\n")
    wait_for_status(gw, lambda s: s["config"]["last_reload_error"] is None)
