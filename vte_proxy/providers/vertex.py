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
from urllib.parse import quote

import orjson

from vte_proxy.config import ProviderConfig
from vte_proxy.providers.base import Answer, Call, JsonAnswer, Provider, StreamAnswer, trace_context
from vte_proxy.providers.translated import translated_events
from vte_proxy.providers.vertex_mapping import GeminiStreamTranslator, chat_to_gemini, gemini_error, gemini_to_chat
from vte_proxy.upstream import ConnectorFactory, Upstream

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
        headers = self._stream_headers if call.stream else self._headers
        if call.headers:  # only the trace context: the OpenAI client headers mean nothing to Google
            headers = {**trace_context(call.headers), **headers}
        response = await self.upstream.send("POST", self._url(model, call.stream), headers, body,
                                            shaper=gemini_error)
        if call.stream:
            translator = GeminiStreamTranslator(model, _response_id(), int(time.time()), provider=self.name)
            events = translated_events(response, self.upstream.redactor, translator, translator.feed)
            return StreamAnswer(events, response.aclose)
        return JsonAnswer(gemini_to_chat(await response.read_json(), model, _response_id(), int(time.time()),
                                         provider=self.name))

    async def aclose(self) -> None:
        await self.upstream.aclose()
