"""``type: anthropic``: Anthropic's native Messages API (``x-api-key`` + ``anthropic-version``).

Two ways in:

- a Messages body (``/v1/messages``, ``/v1/messages/count_tokens``: the Anthropic dialect) is
  passed through untouched but for ``model``, ``stream`` (the stream policy decides it) and
  thinking blocks without a signature (what another provider's reasoning became; Claude
  would refuse them):
  ``cache_control``, thinking, betas and whatever Anthropic adds later reach it as sent; the
  answer, stream and errors come back as Anthropic wrote them;
- an OpenAI chat body (``/v1/chat/completions``) is translated to Messages
  (:func:`~vte_proxy.anthropic.chat_to_messages`) and the answer, stream and errors back to
  OpenAI's shapes (:mod:`vte_proxy.anthropic`).

The client's ``anthropic-version`` and ``anthropic-beta`` headers are forwarded (Claude Code
needs its betas); without them, ``anthropic-version`` is :data:`DEFAULT_VERSION`. Models are
discovered through ``GET /v1/models`` (paged).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from vte_proxy.anthropic import MessagesToChat, chat_to_messages, message_to_chat, to_openai
from vte_proxy.anthropic.errors import ERROR_TYPES
from vte_proxy.anthropic.to_messages import without_unsigned_thinking
from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import TRACE_HEADERS, Answer, Call, JsonAnswer, Provider, StreamAnswer
from vte_proxy.providers.translated import Feed, translated_events
from vte_proxy.sse import split_events
from vte_proxy.upstream import ConnectorFactory, Upstream

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
NATIVE_ENDPOINTS = ("messages", "messages/count_tokens")
# The client's Anthropic headers, and the W3C trace context (the attempt's span when tracing is on).
CLIENT_HEADERS = ("anthropic-version", "anthropic-beta", *TRACE_HEADERS)
_STATUS_BY_TYPE = {kind: status for status, kind in ERROR_TYPES.items()}
_MAX_MODEL_PAGES = 20


def is_native(call: Call) -> bool:
    """Whether ``call.body`` is a Messages body (the Anthropic dialect) rather than OpenAI chat."""
    return call.dialect == "anthropic"


def api_key_header(key: str) -> dict[str, str]:
    """How Anthropic takes a key."""
    return {"x-api-key": key}


class AnthropicProvider(Provider):
    endpoints = ("chat/completions", *NATIVE_ENDPOINTS)

    def __init__(self, config: ProviderConfig, connector: ConnectorFactory | None = None) -> None:
        super().__init__(config)
        assert config.has_key  # enforced by the config schema
        # Its redactor covers the key(s) and header values; a pool's keys are added per request.
        self.upstream = Upstream(config, connector, auth=api_key_header)
        self._base = (config.base_url or DEFAULT_BASE_URL).removesuffix("/v1") + "/v1/"
        headers = {"anthropic-version": DEFAULT_VERSION}
        headers.update({k.lower(): v for k, v in config.headers.items()})
        headers["content-type"] = "application/json"
        if config.api_key is not None:
            headers.update(api_key_header(config.api_key.get_secret_value()))
        self._headers = headers

    def _request_headers(self, call: Call) -> dict[str, str]:
        """The upstream headers: the client's anthropic-version wins; its betas join the config's."""
        passed = {k.lower(): v for k, v in call.headers.items() if k.lower() in CLIENT_HEADERS}
        if not passed:
            return self._headers
        configured = self._headers.get("anthropic-beta")
        if configured and "anthropic-beta" in passed:
            betas = [b.strip() for b in f"{configured},{passed['anthropic-beta']}".split(",") if b.strip()]
            passed["anthropic-beta"] = ",".join(dict.fromkeys(betas))
        return {**self._headers, **passed}

    def _body(self, call: Call, native: bool) -> dict[str, Any]:
        body = dict(call.body) if native else chat_to_messages(call.body)
        body["model"] = call.target.upstream_model
        if native and "messages" in body:
            body["messages"] = without_unsigned_thinking(body["messages"])
        if call.endpoint == "messages/count_tokens":
            body.pop("stream", None)
        elif call.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body

    async def send(self, call: Call) -> Answer:
        self.check_endpoint(call.endpoint)
        native = is_native(call)
        endpoint = call.endpoint if native else "messages"
        body = orjson.dumps(self._body(call, native))  # a 400 before any network for untranslatable bodies
        response = await self.upstream.send("POST", self._base + endpoint, self._request_headers(call), body,
                                            shaper=None if native else openai_error)
        if call.stream and endpoint == "messages":
            if native:
                return StreamAnswer(split_events(response.iter_bytes(), self.name, redact=self.upstream.redactor.bytes),
                                    response.aclose)
            translator = MessagesToChat(call.target.upstream_model)
            events = translated_events(response, self.upstream.redactor, translator, self._feed(translator))
            return StreamAnswer(events, response.aclose)
        answer = await response.read_json()
        return JsonAnswer(answer if native else message_to_chat(answer, call.target.upstream_model))

    def _feed(self, translator: MessagesToChat) -> Feed:
        """Anthropic events -> OpenAI chunks; an ``error`` event raises."""
        def feed(obj: Any) -> list[dict[str, Any]]:
            chunks = translator.feed("", obj) if isinstance(obj, dict) else []
            if translator.error is not None:
                raise stream_error(self.name, translator.error)
            return chunks

        return feed

    async def discover(self) -> tuple[str, ...]:
        headers = {k: v for k, v in self._headers.items() if k != "content-type"}
        ids: list[str] = []
        after = ""
        for _ in range(_MAX_MODEL_PAGES):
            page = await self._models_page(headers, after)
            data = page.get("data")
            if not isinstance(data, list):
                raise UpstreamError(self.name, 502, f"provider {self.name!r} answered /v1/models without a data "
                                    "list", "discovery")
            ids += [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
            if not page.get("has_more") or not ids:
                break
            after = ids[-1]
        return tuple(ids)

    async def _models_page(self, headers: dict[str, str], after: str) -> dict[str, Any]:
        query = "?limit=1000" + (f"&after_id={quote(after, safe='')}" if after else "")
        response = await self.upstream.send("GET", self._base + "models" + query, headers, reason="discovery")
        return await response.read_json()

    async def aclose(self) -> None:
        await self.upstream.aclose()


def openai_error(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """The error shaper for translated calls: Anthropic's error body in OpenAI's shape."""
    return status, to_openai(status, body)


def stream_error(provider: str, error: dict[str, Any]) -> UpstreamError:
    """An Anthropic mid-stream ``error`` event as an UpstreamError (OpenAI-shaped body)."""
    kind = str(error.get("type") or "api_error")
    status = _STATUS_BY_TYPE.get(kind, 502)
    message = str(error.get("message") or "stream error")
    body = {"error": {"message": message, "type": kind, "code": kind}}
    return UpstreamError(provider, status, f"provider {provider!r} reported an error mid-stream: {message}",
                         "truncated", code=kind, body=orjson.dumps(body))
