"""``type: anthropic``: Anthropic's native Messages API (``x-api-key`` + ``anthropic-version``).

Two ways in:

- a Messages body (``/v1/messages``, ``/v1/messages/count_tokens``: the Anthropic dialect) is
  passed through untouched but for ``model`` (and ``stream``, which the stream policy decides):
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

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson

from vte_proxy.anthropic import MessagesToChat, chat_to_messages, message_to_chat, to_openai
from vte_proxy.anthropic.errors import ERROR_TYPES
from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import Answer, Call, JsonAnswer, Provider, StreamAnswer
from vte_proxy.providers.openai import parse_json_answer
from vte_proxy.sse import DONE, data_of, event, split_events
from vte_proxy.upstream import ConnectorFactory, Upstream, UpstreamResponse

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
NATIVE_ENDPOINTS = ("messages", "messages/count_tokens")
CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
_STATUS_BY_TYPE = {kind: status for status, kind in ERROR_TYPES.items()}
_MAX_MODEL_PAGES = 20


def is_native(call: Call) -> bool:
    """Whether ``call.body`` is a Messages body (the Anthropic dialect) rather than OpenAI chat."""
    dialect = getattr(call, "dialect", None)  # set by the pipeline; the endpoint tells before it
    return dialect == "anthropic" if isinstance(dialect, str) else call.endpoint in NATIVE_ENDPOINTS


class AnthropicProvider(Provider):
    endpoints = ("chat/completions", *NATIVE_ENDPOINTS)

    def __init__(self, config: ProviderConfig, connector: ConnectorFactory | None = None) -> None:
        super().__init__(config)
        assert config.api_key is not None  # enforced by the config schema
        self.upstream = Upstream(config, connector)  # its redactor covers api_key and header values
        self._base = (config.base_url or DEFAULT_BASE_URL).removesuffix("/v1") + "/v1/"
        headers = {"anthropic-version": DEFAULT_VERSION}
        headers.update({k.lower(): v for k, v in config.headers.items()})
        headers.update({"content-type": "application/json", "x-api-key": config.api_key.get_secret_value()})
        self._headers = headers

    def _request_headers(self, call: Call) -> dict[str, str]:
        passed = {k: v for k, v in call.headers.items() if k.lower() in CLIENT_HEADERS}
        if not passed:
            return self._headers
        return {**self._headers, **{k.lower(): v for k, v in passed.items()}}

    def _body(self, call: Call, native: bool) -> dict[str, Any]:
        body = dict(call.body) if native else chat_to_messages(call.body)
        body["model"] = call.target.upstream_model
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
                                            raise_for_status=False)
        if response.status >= 300:
            raise await self._error(response, native)
        if call.stream and endpoint == "messages":
            if native:
                return StreamAnswer(split_events(response.iter_bytes()), response.aclose)
            translator = MessagesToChat(call.reply_model)
            return StreamAnswer(self._chat_events(response, translator), response.aclose, rewrite_model=False)
        try:
            raw = await response.read()
        finally:
            await response.aclose()
        answer = parse_json_answer(self.name, raw)
        return JsonAnswer(answer if native else message_to_chat(answer, call.reply_model))

    async def _error(self, response: UpstreamResponse, native: bool) -> UpstreamError:
        """A non-2xx answer: Anthropic's own body for native calls, OpenAI's shape otherwise."""
        raw = await response.error_body()
        retry_after = response.headers.get("retry-after")
        body = raw if native and raw[:1] == b"{" else orjson.dumps(to_openai(response.status, raw))
        return UpstreamError(response.status, f"provider {self.name!r} answered HTTP {response.status}", "status",
                             retryable=response.status == 429 or response.status >= 500, body=body,
                             headers={"retry-after": retry_after} if retry_after else None)

    async def _chat_events(self, response: UpstreamResponse, translator: MessagesToChat) -> AsyncIterator[list[bytes]]:
        """Anthropic events -> OpenAI chunk events, the usage chunk, then ``[DONE]``.

        An ``error`` event, or a stream that ends before its stop_reason, raises UpstreamError
        (the proxy turns it into an SSE error event, or a 502 when it assembles a completion).
        """
        try:
            async for batch in split_events(response.iter_bytes()):
                out = [event(chunk) for ev in batch for chunk in self._translate(ev, translator)]
                if out:
                    yield out
        except UpstreamError as exc:
            if not translator.finished or exc.reason not in ("truncated", "idle", "timeout"):
                raise
        if not translator.finished:
            raise UpstreamError(502, f"provider {self.name!r} ended the stream before it was complete", "truncated")
        yield [event(translator.usage_chunk()), DONE]

    def _translate(self, ev: bytes, translator: MessagesToChat) -> list[dict[str, Any]]:
        payload = data_of(ev)
        if payload is None:
            return []
        if b'"error"' in payload:
            payload = self.upstream.redactor.bytes(payload)
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError(502, f"provider {self.name!r} sent an invalid stream event", "protocol") from None
        chunks = translator.feed("", obj) if isinstance(obj, dict) else []
        if translator.error is not None:
            raise stream_error(self.name, translator.error)
        return chunks

    async def discover(self) -> tuple[str, ...]:
        headers = {k: v for k, v in self._headers.items() if k != "content-type"}
        ids: list[str] = []
        after = ""
        for _ in range(_MAX_MODEL_PAGES):
            page = await self._models_page(headers, after)
            data = page.get("data")
            if not isinstance(data, list):
                raise UpstreamError(502, f"provider {self.name!r} answered /v1/models without a data list",
                                    "discovery")
            ids += [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
            if not page.get("has_more") or not ids:
                break
            after = ids[-1]
        return tuple(ids)

    async def _models_page(self, headers: dict[str, str], after: str) -> dict[str, Any]:
        query = "?limit=1000" + (f"&after_id={quote(after, safe='')}" if after else "")
        response = await self.upstream.send("GET", self._base + "models" + query, headers)
        try:
            raw = await response.read()
        finally:
            await response.aclose()
        return parse_json_answer(self.name, raw)

    async def aclose(self) -> None:
        await self.upstream.aclose()


def stream_error(provider: str, error: dict[str, Any]) -> UpstreamError:
    """An Anthropic mid-stream ``error`` event as an UpstreamError (OpenAI-shaped body)."""
    kind = str(error.get("type") or "api_error")
    status = _STATUS_BY_TYPE.get(kind, 502)
    message = str(error.get("message") or "stream error")
    body = {"error": {"message": message, "type": kind, "code": kind}}
    return UpstreamError(status, f"provider {provider!r} reported an error mid-stream: {message}", "truncated",
                         code=kind, body=orjson.dumps(body))
