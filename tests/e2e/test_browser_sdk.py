"""The OpenAI JS SDK in Debian's headless Chromium, calling the gateway across origins.

The page and the SDK (the npm package's ESM files, installed into the test cache; no CDN) are
served from a second loopback origin; the gateway allows that origin in ``cors``. The browser
sends the SDK's own headers (``x-stainless-*``), so the preflight must allow them.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_status_page import launch_chromium, playwright_api
from tests.support import (
    CLIENT_KEY,
    OPENAI_JS,
    AppServer,
    GatewayProcess,
    free_port,
    gateway_yaml,
    npm_package,
    running_gateway,
    serve_app_in_thread,
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<script type="importmap">{"imports": {"openai": "/openai/index.mjs", "openai/": "/openai/"}}</script>
</head><body><script type="module">
import OpenAI from "openai";
const q = new URLSearchParams(location.search);
const client = new OpenAI({baseURL: q.get("gw") + "/v1", apiKey: q.get("key"), dangerouslyAllowBrowser: true,
                           maxRetries: 0});
const model = "demo/echo";
try {
  const chat = await client.chat.completions.create({model, messages: [{role: "user", content: "hello chromium"}]});
  const stream = await client.chat.completions.create({model, stream: true,
                                                       messages: [{role: "user", content: "one two three"}]});
  let streamed = "";
  for await (const c of stream) streamed += c.choices[0]?.delta?.content ?? "";
  const rs = client.responses.stream({model, input: "four five"});
  for await (const ev of rs) {}
  const final = await rs.finalResponse();
  window.__result = {chat: chat.choices[0].message.content, stream: streamed, responses: final.output_text};
} catch (e) {
  window.__result = {error: String(e)};
}
</script></body></html>
"""


def page_app(sdk: Path) -> Any:
    """``/`` is the page; ``/openai/...`` the SDK's files, with a JavaScript type for ``.mjs``."""
    root = sdk.resolve()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/":
            body, ctype, status = PAGE.encode(), "text/html; charset=utf-8", 200
        else:
            file = (root / path.removeprefix("/openai/")).resolve()
            ok = path.startswith("/openai/") and file.is_relative_to(root) and file.is_file()
            body = file.read_bytes() if ok else b"not found"
            ctype = "text/javascript" if file.suffix in (".mjs", ".js") else (
                mimetypes.guess_type(file.name)[0] or "application/octet-stream")
            status = 200 if ok else 404
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture(scope="module")
def page_server() -> Iterator[AppServer]:
    with serve_app_in_thread(page_app(npm_package(OPENAI_JS))) as server:
        yield server


@pytest.fixture(scope="module")
def gw(page_server: AppServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    cfg = gateway_yaml(f"http://127.0.0.1:{free_port()}/v1", cors=f'allow_origins: ["{page_server.url}"]\n')
    with running_gateway(tmp_path_factory.mktemp("browser"), cfg) as g:
        yield g


def run_page(url: str) -> dict[str, Any]:
    _, sync_playwright = playwright_api()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("() => window.__result !== undefined", timeout=30_000)
            result: dict[str, Any] = page.evaluate("window.__result")
            return result
        finally:
            browser.close()


def test_js_sdk_in_chromium_calls_the_gateway_across_origins(page_server: AppServer, gw: GatewayProcess) -> None:
    result = run_page(f"{page_server.url}/?gw={gw.url}&key={CLIENT_KEY}")
    assert result == {"chat": "hello chromium", "stream": "one two three", "responses": "four five"}, result
