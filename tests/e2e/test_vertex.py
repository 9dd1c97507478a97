"""``type: vertex-express`` end to end: the official openai SDK -> a real gateway process -> a scripted
Vertex AI endpoint (:mod:`tests.vertex_upstream`) on loopback.

The scripted endpoint answers 400, like Vertex, to any body google-genai's own types (plus Vertex's
server-side rules) would reject, to a key in the URL and to a missing or wrong ``x-goog-api-key``;
so every successful call below also proves the request was well formed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import Stack, gateway_fixture
from tests.support import HELLO, free_port, gateway_yaml, loopback_connector, serve_app_in_thread
from tests.vertex_upstream import (
    USAGE,
    VertexUpstream,
    function_call_response,
    google_error,
    text_event,
    text_response,
)
from tests.vertex_wire import validate_gemini_request
from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import Call
from vte_proxy.providers.vertex import VertexExpressProvider
from vte_proxy.providers.vertex_mapping import thought_signature_from_id
from vte_proxy.routing import Target

VERTEX_KEY = "vertex-key-SECRET-123"
WRONG_KEY = "vertex-key-WRONG-456"
MODEL = "gemini/gemini-2.5-flash"
PATH = "/v1/publishers/google/models/gemini-2.5-flash"
SIG = "CiQBVKh0a+Om/x9z8Qk1Pn3+tP8yB2w/aGVsbG8gd29ybGQ="  # standard base64 with '+', '/' and '='
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
TOOLS: Any = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}]
PROVIDERS = """\
- name: gemini
  type: vertex-express
  base_url: {url}
  api_key: {key}
  prefix: gemini
  models: [gemini-2.5-flash]
- name: gfs
  type: vertex-express
  base_url: {url}
  api_key: {key}
  prefix: gfs
  models: [gemini-2.5-flash]
  stream_mode: force_stream
- name: gfn
  type: vertex-express
  base_url: {url}
  api_key: {key}
  prefix: gfn
  models: [gemini-2.5-flash]
  stream_mode: force_non_stream
- name: gbad
  type: vertex-express
  base_url: {url}
  api_key: {wrong}
  prefix: gbad
  models: [gemini-2.5-flash]
"""


VertexStack = Stack[VertexUpstream]


def tokens(v: VertexStack, provider: str) -> float:
    text = httpx.get(v.gateway.url + "/metrics").text
    return sum(float(n) for n in re.findall(rf'^vte_tokens_total{{[^}}]*provider="{provider}"[^}}]*}} (\S+)$',
                                            text, re.M))


@pytest.fixture(scope="module")
def vertex_upstream() -> Iterator[VertexUpstream]:
    upstream = VertexUpstream(api_key=VERTEX_KEY)
    with serve_app_in_thread(upstream.app) as server:
        upstream.url = server.url
        yield upstream


def vertex_config(url: str) -> str:
    unused = f"http://127.0.0.1:{free_port()}/v1"  # the config's openai provider, never called here
    return gateway_yaml(unused, PROVIDERS.format(url=url, key=VERTEX_KEY, wrong=WRONG_KEY))


stack = gateway_fixture(vertex_config, upstream="vertex_upstream", log_level="debug")


@pytest.fixture
def v(s: VertexStack) -> Iterator[VertexStack]:
    yield s
    assert not s.upstream.script, "a scripted Vertex reply was not used"
    for record in s.upstream.requests:
        assert "key" not in record.query and "key=" not in record.path


def assert_no_key(text: str) -> None:
    assert VERTEX_KEY not in text and WRONG_KEY not in text


# --- plain chat, mapping ------------------------------------------------------------------------

def test_plain_chat_calls_generate_content_with_the_key_in_a_header_and_answers_openai_shaped(v: VertexStack) -> None:
    v.upstream.push_json(text_response("Hello there!"))
    r = v.client().chat.completions.create(model=MODEL, messages=HELLO)
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.id.startswith("chatcmpl-") and abs(r.created - time.time()) < 60
    assert r.choices[0].message.content == "Hello there!" and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 3, 8)
    [rec] = v.upstream.requests
    assert (rec.path, rec.action, rec.query, rec.answered) == (f"{PATH}:generateContent", "generateContent", {}, 200)
    assert rec.headers["x-goog-api-key"] == VERTEX_KEY and "authorization" not in rec.headers
    validate_gemini_request(rec.body)
    assert rec.body == {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}


def test_system_prompt_and_generation_settings_are_mapped(v: VertexStack) -> None:
    v.upstream.push_json(text_response('{"greeting": "hi"}'))
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"],
              "additionalProperties": False}
    v.client().chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be terse."}, *HELLO],
        temperature=0.3, top_p=0.9, max_tokens=64, stop=["END"], seed=7, presence_penalty=0.5, n=1,
        response_format={"type": "json_schema", "json_schema": {"name": "g", "schema": schema, "strict": True}})
    body = v.upstream.requests[0].body
    validate_gemini_request(body)
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hello"}]}]
    assert body["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "maxOutputTokens": 64, "stopSequences": ["END"], "seed": 7,
        "presencePenalty": 0.5, "candidateCount": 1, "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"greeting": {"type": "STRING"}},
                           "required": ["greeting"]}}


def test_image_data_url_becomes_inline_data(v: VertexStack) -> None:
    v.upstream.push_json(text_response("A red pixel."))
    content: Any = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]
    r = v.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    assert r.choices[0].message.content == "A red pixel."
    assert v.upstream.requests[0].body["contents"] == [{"role": "user", "parts": [
        {"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]}]


def test_untranslatable_request_is_a_400_before_any_call_to_vertex(v: VertexStack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        v.client().chat.completions.create(model=MODEL, messages=HELLO, logit_bias={"1": 5})
    assert "logit_bias" in info.value.message and v.upstream.requests == []


def test_only_chat_completions_is_served(v: VertexStack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        v.client().embeddings.create(model=MODEL, input="hi")
    assert info.value.code == "unsupported_endpoint" and v.upstream.requests == []


# --- streaming ----------------------------------------------------------------------------------

def test_streaming_with_include_usage_ends_with_a_usage_chunk(v: VertexStack) -> None:
    v.upstream.push_stream([text_event("Hel"), text_event("lo", "STOP", USAGE)])
    chunks = list(v.client().chat.completions.create(model=MODEL, messages=HELLO, stream=True,
                                                     stream_options={"include_usage": True}))
    [rec] = v.upstream.requests
    assert (rec.path, rec.query) == (f"{PATH}:streamGenerateContent", {"alt": "sse"})
    assert rec.headers["x-goog-api-key"] == VERTEX_KEY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.model for c in chunks} == {MODEL} and len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)


def test_streaming_without_include_usage_sends_no_usage_chunk_but_counts_the_tokens(v: VertexStack) -> None:
    before = tokens(v, "gemini")
    v.upstream.push_stream([text_event("Hel"), text_event("lo", "STOP", USAGE)])
    chunks = list(v.client().chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert all(c.usage is None and c.choices for c in chunks)
    assert tokens(v, "gemini") - before == 8


def test_stream_cut_without_finish_reason_raises_api_error(v: VertexStack) -> None:
    v.upstream.push_stream([text_event("Hel")], abort=True)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for c in v.client().chat.completions.create(model=MODEL, messages=HELLO, stream=True):
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "Hel" and info.value.code == "truncated" and "mid-answer" in info.value.message


def test_stream_that_ends_cleanly_without_finish_reason_is_reported_truncated(v: VertexStack) -> None:
    v.upstream.push_stream([text_event("Hel"), text_event("lo")])
    with pytest.raises(openai.APIError) as info:
        list(v.client().chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert info.value.code == "truncated" and "before it was complete" in info.value.message


def test_connection_lost_after_the_finish_reason_still_completes_the_stream(v: VertexStack) -> None:
    v.upstream.push_stream([text_event("Hello", "STOP", USAGE)], abort=True)
    chunks = list(v.client().chat.completions.create(model=MODEL, messages=HELLO, stream=True,
                                                     stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8


def test_garbage_stream_event_ends_the_stream_with_a_protocol_error(v: VertexStack) -> None:
    v.upstream.push_stream([text_event("Hel"), "this is not json"])
    with pytest.raises(openai.APIError) as info:
        list(v.client().chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert "invalid stream event" in info.value.message


def test_garbage_json_answer_is_a_502(v: VertexStack) -> None:
    v.upstream.push_raw(200, b"<html>not json</html>", "text/html")
    with pytest.raises(openai.InternalServerError) as info:
        v.client().chat.completions.create(model=MODEL, messages=HELLO)
    assert info.value.status_code == 502 and info.value.code == "protocol"


# --- tools --------------------------------------------------------------------------------------

def test_tool_call_and_its_answer_across_two_turns_round_trip_the_thought_signature(v: VertexStack) -> None:
    v.upstream.push_json(function_call_response("get_weather", {"city": "Oslo"}, thought_signature=SIG))
    v.upstream.push_json(text_response("It is 3C in Oslo."))
    client = v.client()
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    message = first.choices[0].message
    [call] = message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert thought_signature_from_id(call.id) == SIG
    messages += [message, {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 3}'}]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "It is 3C in Oslo."
    body = v.upstream.requests[1].body
    validate_gemini_request(body)
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]
    assert body["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                                     "thoughtSignature": SIG}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 3}}}]},
    ]


def test_streamed_tool_call_is_rebuilt_by_the_sdk_stream_helper(v: VertexStack) -> None:
    v.upstream.push_stream([text_event("Checking. "),
                            function_call_response("get_weather", {"city": "Paris"}, thought_signature=SIG)])
    with v.client().chat.completions.stream(model=MODEL, messages=HELLO, tools=TOOLS,
                                            stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking. "
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert thought_signature_from_id(call.id) == SIG
    assert final.model == MODEL and final.usage is not None and final.usage.total_tokens == 8


# --- stream policy ------------------------------------------------------------------------------

def test_force_stream_provider_assembles_one_completion_for_a_non_streaming_client(v: VertexStack) -> None:
    v.upstream.push_stream([text_event("Hel"), text_event("lo", "STOP", USAGE)])
    r = v.client().chat.completions.create(model="gfs/gemini-2.5-flash", messages=HELLO)
    [rec] = v.upstream.requests
    assert (rec.path, rec.query) == (f"{PATH}:streamGenerateContent", {"alt": "sse"})
    assert r.object == "chat.completion" and r.model == "gfs/gemini-2.5-flash"
    assert r.choices[0].message.content == "Hello" and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.total_tokens == 8


def test_force_stream_provider_reports_a_truncated_stream_as_502(v: VertexStack) -> None:
    v.upstream.push_stream([text_event("Hel")])
    with pytest.raises(openai.InternalServerError) as info:
        v.client().chat.completions.create(model="gfs/gemini-2.5-flash", messages=HELLO)
    assert info.value.status_code == 502 and info.value.code == "truncated"


def test_force_non_stream_provider_synthesises_a_stream_for_a_streaming_client(v: VertexStack) -> None:
    v.upstream.push_json(text_response("Hello"))
    v.upstream.push_json(text_response("Hello"))
    client = v.client()
    chunks = list(client.chat.completions.create(model="gfn/gemini-2.5-flash", messages=HELLO, stream=True))
    assert [r.action for r in v.upstream.requests] == ["generateContent"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in chunks)
    chunks = list(client.chat.completions.create(model="gfn/gemini-2.5-flash", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8


# --- errors and the key -------------------------------------------------------------------------

def test_429_becomes_rate_limit_error_with_an_openai_shaped_body_without_the_key(v: VertexStack) -> None:
    v.upstream.push_error(429, "Resource exhausted, please retry.")
    with pytest.raises(openai.RateLimitError) as info:
        v.client().chat.completions.create(model=MODEL, messages=HELLO)
    assert info.value.status_code == 429
    assert info.value.response.json() == {"error": {"message": "Vertex AI: Resource exhausted, please retry.",
                                                    "type": "rate_limit_error", "code": "resource_exhausted"}}
    assert_no_key(info.value.response.text)


def test_429_on_a_stream_call_is_a_429_too(v: VertexStack) -> None:
    v.upstream.push_error(429, "Resource exhausted, please retry.")
    with pytest.raises(openai.RateLimitError):
        list(v.client().chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert v.upstream.requests[0].action == "streamGenerateContent"


def test_vertex_error_that_echoes_the_key_reaches_the_client_redacted(v: VertexStack) -> None:
    v.upstream.push_error(400, f"Bad request for key {VERTEX_KEY} (see ?key={VERTEX_KEY})")
    with pytest.raises(openai.BadRequestError) as info:
        v.client().chat.completions.create(model=MODEL, messages=HELLO)
    assert "[redacted]" in info.value.message and info.value.code == "invalid_argument"
    assert_no_key(info.value.response.text)


def test_refused_credentials_become_a_502_that_does_not_show_the_key(v: VertexStack) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        v.client().chat.completions.create(model="gbad/gemini-2.5-flash", messages=HELLO)
    assert info.value.status_code == 502 and "refused the gateway's credentials" in info.value.message
    assert v.upstream.requests[0].answered == 403
    assert_no_key(info.value.response.text)


def test_the_vertex_key_never_appears_in_the_gateway_log(v: VertexStack) -> None:
    v.upstream.push_json(text_response("ok"))
    v.upstream.push_error(429, f"quota of {VERTEX_KEY} exhausted")
    v.upstream.push_stream([text_event("cut")], abort=True)
    client = v.client()
    client.chat.completions.create(model=MODEL, messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=HELLO)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gbad/gemini-2.5-flash", messages=HELLO)
    logs = v.gateway.logs()
    assert "chat/completions" in logs and "provider=gbad" in logs  # the log is there and covers these calls
    assert_no_key(logs)


# --- the provider in-process (what a scripted endpoint cannot send) --------------------------------

async def test_retry_after_passes_through_and_5xx_is_retryable_with_the_key_redacted() -> None:
    seen: list[Request] = []

    async def answer(request: Request) -> Response:
        seen.append(request)
        return JSONResponse(google_error(503, f"overloaded ({VERTEX_KEY})"), status_code=503,
                            headers={"retry-after": "7"})

    app = Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])
    with serve_app_in_thread(app) as server:
        config = ProviderConfig(name="g", type="vertex-express", api_key=VERTEX_KEY, models=("gemini-2.5-flash",),
                                base_url=f"http://vertex.invalid:{server.port}")
        provider = VertexExpressProvider(config, loopback_connector)
        call = Call("chat/completions", {"model": MODEL, "messages": HELLO},
                    Target(MODEL, "g", "gemini-2.5-flash"), stream=False)
        try:
            with pytest.raises(UpstreamError) as info:
                await provider.send(call)
        finally:
            await provider.aclose()
    err = info.value
    assert (err.status, err.reason, err.retryable, err.headers) == (503, "status", True, {"retry-after": "7"})
    assert seen[0].url.path == f"{PATH}:generateContent" and seen[0].url.hostname == "vertex.invalid"
    assert "key=" not in str(seen[0].url)
    assert seen[0].headers["x-goog-api-key"] == VERTEX_KEY
    assert json.loads(err.json())["error"]["type"] == "service_unavailable"
    assert_no_key(err.json().decode() + str(err))


def test_default_base_url_is_vertex_express() -> None:
    config = ProviderConfig(name="g", type="vertex-express", api_key=VERTEX_KEY, models=("gemini-2.5-flash",))
    provider = VertexExpressProvider(config)
    assert provider._url("gemini-2.5-flash", False) == f"https://aiplatform.googleapis.com{PATH}:generateContent"
    assert provider._url("gemini-2.5-flash", True) == (f"https://aiplatform.googleapis.com{PATH}"
                                                       ":streamGenerateContent?alt=sse")
