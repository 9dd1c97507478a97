"""Test support: a scripted OpenAI-compatible upstream, a real `vte-proxy serve` process
(tests/e2e), the gateway app in this process with an injected loopback connector (tests/unit,
:func:`in_process_gateway`), and the keys and messages tests share.

Both listen on loopback. The upstream runs uvicorn in a thread with its own event loop
(:func:`serve_app_in_thread` does the same for any ASGI app), so
sync clients (the openai SDK) and async tests can use it alike; it records every request it
receives and answers from a script (a queue of behaviours) or, by default, like a plain
OpenAI-compatible API would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiohttp.abc
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
# npm packages the tests use (the OpenAI JS SDK), installed once per version into this cache.
NPM_CACHE = ROOT / ".cache" / "npm"
OPENAI_JS = "openai@7.59.0"
UPSTREAM_KEY = "sk-upstream-SECRET-0123456789"
CLIENT_KEY = "sk-client-SECRET-abcdef"
LIMITED_KEY = "sk-limited-key-000"  # gateway_yaml's key `limited`: only demo/* models
ADMIN_KEY = "sk-admin-key-000"      # gateway_yaml's key `admin`: status: true

# Chat messages the tests send. The echo provider answers with the last user message and counts
# words as tokens: HELLO is answered "Say hello"; THREE_WORDS is 3 prompt and 3 completion tokens.
HELLO: Any = [{"role": "user", "content": "Say hello"}]
THREE_WORDS: Any = [{"role": "user", "content": "one two three"}]


# The smallest config: one key, the built-in echo provider (exposed as ``demo/echo``).
ECHO_CONFIG = f"""\
version: 1
keys:
  - name: team
    key: {CLIENT_KEY}
providers:
  - name: demo
    type: echo
    prefix: demo
    models: [echo]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AppServer:
    """An ASGI app served by uvicorn on a free loopback port, in a daemon thread with its own
    event loop (so sync clients like the openai SDK and async tests can both reach it)."""

    def __init__(self, app: Any, lifespan: str = "off", **options: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # An answer still hanging when a test ends (a scripted Hang) is cut after a second, not
        # waited for: the thread's join below gives up after 5.
        options.setdefault("timeout_graceful_shutdown", 1)
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan=lifespan, **options))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self, timeout: float = 10) -> AppServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("app server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)


class LoopbackResolver(aiohttp.abc.AbstractResolver):
    """Every host name resolves to 127.0.0.1: the connector tests inject instead of patching
    (``create_app(..., connector=loopback_connector)``, base URLs like ``http://upstream.test:PORT``)."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


def loopback_connector(provider: object = None) -> aiohttp.TCPConnector:
    """An upstream connector factory whose every host is loopback."""
    return aiohttp.TCPConnector(resolver=LoopbackResolver())


@contextlib.contextmanager
def serve_app_in_thread(app: Any, lifespan: str = "off", **options: Any) -> Iterator[AppServer]:
    """Serve ``app`` on loopback for the duration of the block (``.url`` has no path);
    ``lifespan="on"`` runs the app's startup and shutdown (a whole gateway); ``options`` go to
    ``uvicorn.Config`` (e.g. ``http=`` a protocol class)."""
    server = AppServer(app, lifespan, **options).start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- behaviours
@dataclass
class Reply:
    """Answer with this status and JSON body (or raw bytes)."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Stream:
    """Answer with these SSE events (dicts become ``data: {json}``, strings are sent as is)."""

    events: list[Any]
    delay: float = 0.0          # between events
    done: bool = True           # end with data: [DONE]
    cut: bool = False           # drop the connection after the events (no [DONE])
    first_delay: float = 0.0    # before the response headers
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    """Accept the request and send nothing for ``seconds``."""

    seconds: float = 30.0


def chunk(model: str, delta: dict[str, Any] | None = None, finish: str | None = None, *,
          usage: dict[str, Any] | None = None, choices: bool = True, rid: str = "chatcmpl-up") -> dict[str, Any]:
    body: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    if usage is not None:
        body["usage"] = usage
    return body


def completion(model: str, content: str | None = "hi", *, tool_calls: list[dict[str, Any]] | None = None,
               finish: str = "stop", usage: dict[str, int] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage or {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedUpstream:
    """An OpenAI-compatible API on loopback that records requests and follows a script."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: deque[Reply | Stream | Hang] = deque()
        self.models = ["gpt-4o", "gpt-4o-mini"]
        self.models_status = 200
        self.open_streams = 0
        self.closed_streams = 0
        # Upstream keys (the Bearer token) answered with this reply on every path (a pool key
        # the upstream rejects or rate-limits), whatever the script says.
        self.key_replies: dict[str, Reply] = {}
        self.delay = 0.0  # before every unscripted answer (a slow upstream)
        routes = [Route("/v1/models", self._models, methods=["GET"]),
                  Route("/v1/{endpoint:path}", self._handle, methods=["POST"])]
        self._server = AppServer(Starlette(routes=routes))
        self.port = self._server.port
        self.url = f"{self._server.url}/v1"

    def push(self, *behaviours: Reply | Stream | Hang) -> None:
        self.script.extend(behaviours)

    def reset(self) -> None:
        """An empty script and no recorded requests (for the next test)."""
        self.script.clear()
        self.requests.clear()

    def start(self) -> ScriptedUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def last(self, path: str | None = None) -> Received:
        for r in reversed(self.requests):
            if path is None or r.path.endswith(path):
                return r
        raise AssertionError(f"no request to {path}")

    def _key_reply(self, request: Request) -> Response | None:
        reply = self.key_replies.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if reply is None:
            return None
        return Response(json.dumps(reply.body).encode(), status_code=reply.status, headers=reply.headers,
                        media_type="application/json")

    async def _models(self, request: Request) -> Response:
        self.requests.append(Received("GET", request.url.path, dict(request.headers), None))
        if (keyed := self._key_reply(request)) is not None:
            return keyed
        if self.models_status != 200:
            return JSONResponse({"error": {"message": "down"}}, status_code=self.models_status)
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": 1, "owned_by": "up"}
                                                        for m in self.models]})

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        self.requests.append(Received("POST", request.url.path, dict(request.headers), body))
        if (keyed := self._key_reply(request)) is not None:
            return keyed
        behaviour = self.script.popleft() if self.script else None
        if behaviour is None:
            if self.delay:
                await asyncio.sleep(self.delay)
            behaviour = self._default(request.path_params["endpoint"], body)
        if isinstance(behaviour, Hang):
            await asyncio.sleep(behaviour.seconds)
            return Response(status_code=504)
        if isinstance(behaviour, Reply):
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            content = behaviour.body if isinstance(behaviour.body, bytes) else json.dumps(behaviour.body).encode()
            return Response(content, status_code=behaviour.status, headers=behaviour.headers,
                            media_type="application/json")
        if behaviour.first_delay:
            await asyncio.sleep(behaviour.first_delay)
        return StreamingResponse(self._events(behaviour), media_type="text/event-stream", headers=behaviour.headers)

    async def _events(self, s: Stream) -> AsyncIterator[bytes]:
        self.open_streams += 1
        try:
            for i, ev in enumerate(s.events):
                if i and s.delay:
                    await asyncio.sleep(s.delay)
                yield (ev if isinstance(ev, str) else "data: " + json.dumps(ev) + "\n\n").encode()
            if s.cut:
                raise ConnectionResetError("scripted cut")  # uvicorn drops the connection mid-body
            if s.done:
                yield b"data: [DONE]\n\n"
        finally:
            self.open_streams -= 1
            self.closed_streams += 1

    def _default(self, endpoint: str, body: Any) -> Reply | Stream:
        model = body.get("model", "?") if isinstance(body, dict) else "?"
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        if endpoint == "embeddings":
            return Reply({"object": "list", "model": model, "usage": {"prompt_tokens": 2, "total_tokens": 2},
                          "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]})
        if endpoint == "completions":
            if body.get("stream"):
                ev = [{"id": "cmpl-up", "object": "text_completion", "created": 1, "model": model,
                       "choices": [{"index": 0, "text": t, "finish_reason": f}]} for t, f in (("Hel", None),
                                                                                              ("lo", "stop"))]
                if (body.get("stream_options") or {}).get("include_usage"):
                    ev.append({"id": "cmpl-up", "object": "text_completion", "created": 1, "model": model,
                               "choices": [], "usage": usage})
                return Stream(ev)
            return Reply({"id": "cmpl-up", "object": "text_completion", "created": 1, "model": model,
                          "choices": [{"index": 0, "text": "Hello", "finish_reason": "stop", "logprobs": None}],
                          "usage": usage})
        if endpoint == "responses":
            resp = {"id": "resp_up", "object": "response", "created_at": 1, "status": "completed", "model": model,
                    "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                                "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}],
                    "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6}}
            if body.get("stream"):
                return Stream([f"event: response.created\ndata: {json.dumps({'type': 'response.created', 'sequence_number': 0, 'response': {**resp, 'status': 'in_progress', 'output': []}})}\n\n",  # noqa: E501
                               f"event: response.completed\ndata: {json.dumps({'type': 'response.completed', 'sequence_number': 1, 'response': resp})}\n\n"],  # noqa: E501
                              done=False)
            return Reply(resp)
        if body.get("stream"):
            ev = [chunk(model, {"role": "assistant", "content": ""}), chunk(model, {"content": "Hello"}),
                  chunk(model, {"content": " world"}), chunk(model, {}, "stop")]
            if (body.get("stream_options") or {}).get("include_usage"):
                ev = [{**e, "usage": None} for e in ev] + [chunk(model, usage=usage, choices=False)]
            return Stream(ev)
        return Reply(completion(model, "Hello world", usage=usage))


@contextlib.contextmanager
def scripted_upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream().start()
    try:
        yield up
    finally:
        up.stop()


# ---------------------------------------------------------------- the gateway
def gateway_yaml(upstream_url: str, extra_providers: str = "", **top: str) -> str:
    """A config with key ``CLIENT_KEY`` (name ``team``), a status key, an ``up`` provider
    (prefix ``up``, models gpt-4o and gpt-4o-mini) pointing at ``upstream_url``, and echo."""
    text = textwrap.dedent(f"""\
        version: 1
        stream_mode: {top.get('stream_mode', 'auto')}
        keys:
          - name: team
            key: ${{TEST_CLIENT_KEY}}
          - name: limited
            key: sk-limited-key-000
            models: ["demo/*"]
          - name: admin
            key: sk-admin-key-000
            status: true
        providers:
          - name: up
            type: openai
            base_url: {upstream_url}
            api_key: ${{TEST_UPSTREAM_KEY}}
            prefix: up
            models: [gpt-4o, gpt-4o-mini]
            headers: {{X-Custom: custom-value}}
          - name: demo
            type: echo
            prefix: demo
            models: [echo]
        """)
    if extra_providers:
        text += textwrap.indent(textwrap.dedent(extra_providers), "  ")
    for key in ("routes", "server", "metrics", "cors"):
        if key in top:
            text += f"{key}:\n" + textwrap.indent(textwrap.dedent(top[key]), "  ")
    return text


class GatewayProcess:
    """`python -m vte_proxy serve` as a subprocess on a free loopback port."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None, workers: int = 1,
                 log_format: str = "text", log_level: str = "info") -> None:
        self.config_path = config_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = config_path.parent / f"gateway-{self.port}.log"
        self.env = {**os.environ, "TEST_CLIENT_KEY": CLIENT_KEY, "TEST_UPSTREAM_KEY": UPSTREAM_KEY,
                    "VTE_LOG_FORMAT": log_format, "VTE_LOG_LEVEL": log_level, **(env or {})}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> GatewayProcess:
        cmd = [sys.executable, "-m", "vte_proxy", "serve", "--config", str(self.config_path), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(self.workers)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not become ready:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running_gateway(tmp_path: Path, config_text: str, **kw: Any) -> Iterator[GatewayProcess]:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text)
    gw = GatewayProcess(path, **kw).start()
    try:
        yield gw
    finally:
        gw.stop()


def npm_package(spec: str) -> Path:
    """``node_modules/<name>`` of ``spec`` (``name@version``), installed into NPM_CACHE with npm
    on first use; a missing node or npm fails the test, it never skips it."""
    import pytest

    name = spec.rsplit("@", 1)[0]
    prefix = NPM_CACHE / spec.replace("/", "+")
    package = prefix / "node_modules" / name
    if (package / "package.json").exists():
        return package
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: the JS SDK tests need Debian's nodejs and npm", pytrace=False)
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(prefix), spec],
                   check=True, capture_output=True, timeout=300)
    return package


# ---------------------------------------------------------------- the gateway in this process
def eventually(check: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll ``check`` until it returns something truthy and return that; fail after ``timeout``
    seconds (a deadline for what must happen, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def metric(name: str, **labels: str) -> float:
    """The current value of one sample in this process's Prometheus registry (0 when absent)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def inline_secrets(config_text: str) -> str:
    """A gateway_yaml config with its ``${TEST_*}`` variables written out (no environment needed)."""
    return config_text.replace("${TEST_CLIENT_KEY}", CLIENT_KEY).replace("${TEST_UPSTREAM_KEY}", UPSTREAM_KEY)


def upstream_test_url(upstream: ScriptedUpstream) -> str:
    """``upstream``'s base URL under a host name only the injected loopback connector resolves."""
    return f"http://upstream.test:{upstream.port}/v1"


@dataclass
class InProcessGateway:
    """``create_app`` served by uvicorn in a thread of this process: its Gateway and Accounting
    objects can be read directly."""

    url: str
    config_path: Path
    app: Any  # the GuardMiddleware create_app returns
    gateway: Any
    accounting: Any

    def client(self, key: str = CLIENT_KEY, timeout: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=timeout)

    def entries_after(self, count: int, new: int = 1) -> list[dict[str, Any]]:
        """The live-log entries of the ``new`` requests finished after the first ``count``."""
        acc = self.accounting
        eventually(lambda: acc.finished >= count + new, f"{new} more request(s) reported")
        return list(acc.recent)[-(acc.finished - count):]


@contextlib.contextmanager
def in_process_gateway(tmp_path: Path, config_text: str, connector: Any = loopback_connector,
                       **create_app_kw: Any) -> Iterator[InProcessGateway]:
    """The gateway app for ``config_text`` in this process, its lifespan run; upstream host names
    resolve to loopback through the injected ``connector`` (no subprocess, nothing patched)."""
    from vte_proxy.app import create_app

    path = tmp_path / "gateway.yaml"
    path.write_text(inline_secrets(config_text))
    app: Any = create_app(str(path), connector=connector, **create_app_kw)
    with serve_app_in_thread(app, lifespan="on") as server:
        yield InProcessGateway(server.url, path, app, app.gateway, app.accounting)


# ---------------------------------------------------------------- an outbound proxy
class ForwardProxy:
    """A tiny HTTP forward proxy on loopback (plain http:// targets, one request per
    connection): records each request line and its Proxy-Authorization, then relays it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[tuple[str, str | None]] = []  # (request line, Proxy-Authorization)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> ForwardProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop).result(5)
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, version = head[0].split(" ")
            headers = [h.split(":", 1) for h in head[1:] if h]
            auth = next((v.strip() for k, v in headers if k.lower() == "proxy-authorization"), None)
            self.seen.append((head[0], auth))
            url = httpx.URL(target)
            length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
            body = await reader.readexactly(length) if length else b""
            kept = [f"{k}:{v}" for k, v in headers if k.lower() not in ("proxy-authorization", "connection")]
            request = "\r\n".join([f"{method} {url.raw_path.decode()} {version}", *kept, "Connection: close", "", ""])
            up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
            up_writer.write(request.encode("latin-1") + body)
            await up_writer.drain()
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            up_writer.close()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextlib.contextmanager
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy().start()
    try:
        yield proxy
    finally:
        proxy.stop()
