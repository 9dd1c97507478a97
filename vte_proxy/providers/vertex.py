"""``type: vertex-express``: Gemini on Vertex AI in express mode (an API key, no project).

Express keys do not work on Vertex's OpenAI-compatible endpoint, so this provider translates:
the client's chat/completions body becomes a ``generateContent`` body
(:mod:`~vte_proxy.providers.vertex_mapping`), and Gemini's answers, SSE events and errors become
OpenAI's. Only ``/v1/chat/completions`` is served; the models come from the config.

The key travels in the ``x-goog-api-key`` header, never in the URL (URLs end up in exception
texts and logs). Stream policy, usage visibility, completeness and model names in answers are
left to :mod:`vte_proxy.shaping`, exactly as for ``openai`` providers.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import quote

import orjson

from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import Answer, Call, EventBatches, JsonAnswer, Provider, StreamAnswer
from vte_proxy.providers.vertex_mapping import GeminiStreamTranslator, chat_to_gemini, gemini_error, gemini_to_chat
from vte_proxy.sse import DONE, data_of, event, split_events
from vte_proxy.upstream import ConnectorFactory, Upstream, UpstreamResponse

DEFAULT_BASE_URL = "https://aiplatform.googleapis.com"


def _response_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def goog_key(key: str) -> dict[str, str]:
    """Vertex express takes its key in a header, never in the URL (URLs reach logs)."""
    return {"x-goog-api-key": key}


class VertexExpressProvider(Provider):
    endpoints = ("chat/completions",)

    def __init__(self, config: ProviderConfig, connector: ConnectorFactory | None = None) -> None:
        super().__init__(config)
        assert config.has_key  # enforced by the config schema
        # Its redactor covers the key(s) and header values; a pool's keys are added per request.
        self.upstream = Upstream(config, connector, auth=goog_key)
        base = config.base_url or DEFAULT_BASE_URL
        self._base = base.removesuffix("/v1") + "/v1/publishers/google/models/"
        self._urls: dict[str, tuple[str, str]] = {}
        for model in config.models:
            self._url(model, True)
        headers = {k.lower(): v for k, v in config.headers.items()}
        headers["content-type"] = "application/json"
        if config.api_key is not None:
            headers.update(goog_key(config.api_key.get_secret_value()))
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    def _url(self, model: str, stream: bool) -> str:
        """The generateContent (or streaming) URL of ``model``, built once per model."""
        urls = self._urls.get(model)
        if urls is None:
            root = self._base + quote(model, safe="@")
            urls = self._urls[model] = (f"{root}:generateContent", f"{root}:streamGenerateContent?alt=sse")
        return urls[1] if stream else urls[0]

    async def send(self, call: Call) -> Answer:
        self.check_endpoint(call.endpoint)
        body = orjson.dumps(chat_to_gemini(call.body))  # 400 before any network for untranslatable bodies
        model = call.target.upstream_model
        response = await self.upstream.send("POST", self._url(model, call.stream),
                                            self._stream_headers if call.stream else self._headers, body,
                                            shaper=gemini_error)
        if call.stream:
            translator = GeminiStreamTranslator(model, _response_id(), int(time.time()), provider=self.name)
            return StreamAnswer(self._events(response, translator), response.aclose)
        return JsonAnswer(gemini_to_chat(await response.read_json(), model, _response_id(), int(time.time()),
                                         provider=self.name))

    async def _events(self, response: UpstreamResponse, translator: GeminiStreamTranslator) -> EventBatches:
        """Gemini SSE events -> OpenAI chunk events; once every choice finished, the usage chunk
        and ``[DONE]``. A stream that ends before that simply ends: shaping judges it truncated."""
        try:
            async for batch in split_events(response.iter_bytes()):
                out = [event(chunk) for ev in batch for chunk in self._translate(ev, translator)]
                if out:
                    yield out
        except UpstreamError as exc:
            # A connection lost after every finishReason (while waiting for a trailing usage
            # event) loses nothing the client needs.
            if not translator.finished or exc.reason not in ("truncated", "idle", "timeout"):
                raise
        if translator.finished:
            usage = translator.usage_chunk()  # always sent: shaping drops it unless the client asked
            yield [event(usage), DONE] if usage is not None else [DONE]

    def _translate(self, ev: bytes, translator: GeminiStreamTranslator) -> list[dict[str, Any]]:
        payload = data_of(ev)
        if payload is None:  # comments, bare event: lines
            return []
        if b'"error"' in payload:
            payload = self.upstream.redactor.bytes(payload)
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError(self.name, 502, f"provider {self.name!r} sent an invalid stream event",
                                "protocol") from None
        return translator.feed(obj)

    async def aclose(self) -> None:
        await self.upstream.aclose()
