"""The ASGI application as a whole (routes, error pages), served in a thread with its lifespan."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import CLIENT_KEY, ECHO_CONFIG, AppServer, serve_app_in_thread
from vte_proxy.app import create_app

CONFIG = ECHO_CONFIG


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    path = tmp_path_factory.mktemp("app") / "gateway.yaml"
    path.write_text(CONFIG)
    with serve_app_in_thread(create_app(str(path)), lifespan="on") as s:
        yield s


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/chat/completions/"), ("POST", "/v1/responses/"),
                                              ("GET", "/v1/models/"), ("GET", "/healthz/")])
def test_a_trailing_slash_is_an_openai_404_never_a_redirect(server: AppServer, method: str, path: str) -> None:
    # Starlette's redirect_slashes would answer 307 with a Location built from the client's Host header.
    r = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                                           "Host": "evil.example"},
                      json={"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404, (r.status_code, r.headers)
    assert "location" not in r.headers
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] in ("not_found", "model_not_found")  # /v1/models/ is a lookup of ""
    assert "evil.example" not in r.text
