"""``type: openai``: any OpenAI-compatible API (OpenAI, Azure, Anthropic's compat API, Ollama, vLLM).

The client's body is forwarded with only ``model`` (and, for streams, ``stream_options``)
changed. The upstream key is sent as ``Authorization: Bearer``; the client's own headers never
are, except an allow-list of harmless ones (see :data:`vte_proxy.pipeline.FORWARDED_HEADERS`).
"""

from __future__ import annotations

from typing import Any

import orjson

from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import ENDPOINTS, Answer, Call, JsonAnswer, Provider, StreamAnswer
from vte_proxy.sse import split_events
from vte_proxy.upstream import ConnectorFactory, Upstream

_STREAMING = ("chat/completions", "completions", "responses")


def upstream_body(call: Call) -> bytes:
    """The body for the upstream: the client's, with the upstream model and the stream flags
    (usage always asked for in streams: accounting needs it; shaping hides it again)."""
    body: dict[str, Any] = dict(call.body)
    body["model"] = call.target.upstream_model
    if call.endpoint in ("chat/completions", "completions"):
        if call.stream:
            body["stream"] = True
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        else:
            if "stream" in body:
                body["stream"] = False
            body.pop("stream_options", None)  # strict upstreams reject it on a non-stream call
    elif call.endpoint == "responses":
        body["stream"] = call.stream
    return orjson.dumps(body)


def bearer(key: str) -> dict[str, str]:
    """How OpenAI-compatible APIs take a key (each key of a pool too)."""
    return {"authorization": f"Bearer {key}"}


class OpenAIProvider(Provider):
    def __init__(self, config: ProviderConfig, connector: ConnectorFactory | None = None) -> None:
        super().__init__(config)
        assert config.base_url is not None
        self.upstream = Upstream(config, connector, auth=bearer)
        self._base = config.base_url
        self._urls = {ep: f"{self._base}/{ep}" for ep in ENDPOINTS}
        # Built once per config: the hot path only copies this dict.
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if config.api_key is not None:  # a pool's keys are added per request by the upstream
            headers.update(bearer(config.api_key.get_secret_value()))
        headers.update({k.lower(): v for k, v in config.headers.items()})
        self._headers = headers

    async def send(self, call: Call) -> Answer:
        self.check_endpoint(call.endpoint)
        headers = self._headers
        if call.headers:
            headers = {**call.headers, **headers}
        response = await self.upstream.send("POST", self._urls[call.endpoint], headers, upstream_body(call))
        headers = response.passed_headers()
        if call.stream and call.endpoint in _STREAMING:
            events = split_events(response.iter_bytes(), self.name, redact=self.upstream.redactor.bytes)
            return StreamAnswer(events, response.aclose, headers)
        return JsonAnswer(await response.read_json(), headers)

    async def discover(self) -> tuple[str, ...]:
        response = await self.upstream.send("GET", f"{self._base}/models",
                                            {k: v for k, v in self._headers.items() if k != "content-type"},
                                            reason="discovery")
        data = (await response.read_json("discovery")).get("data")
        if not isinstance(data, list):
            raise UpstreamError(self.name, 502, f"provider {self.name!r} answered /models without a data list",
                                "discovery")
        return tuple(m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str))

    async def aclose(self) -> None:
        await self.upstream.aclose()
