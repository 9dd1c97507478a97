"""Traces of a real `vte-proxy serve` process, received by a scripted OTLP/HTTP collector:
retries and fall-overs as attempt spans under one server span, the client's traceparent
continued and each attempt's forwarded upstream, the trace id in the JSON request log,
content only for keys that opted in, hot reload, nothing exported when off, and an
unreachable collector that changes no answer."""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.test_reload import eventually, write_atomic
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support import CLIENT_KEY, UPSTREAM_KEY, GatewayProcess, Reply, ScriptedUpstream, free_port, running_gateway

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
CONTENT_KEY = "sk-content-key-0000"
TINY_KEY = "sk-tiny-key-000000"
POOL_KEYS = {"k1": "sk-pool-SECRET-1111", "k2": "sk-pool-SECRET-2222"}
FAST = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


def config(upstream_url: str, telemetry: str = "") -> str:
    """Two providers on the scripted upstream (``up`` retries once), a fall-over route
    ``smart`` over them, a key that opted in to content capture, and ``telemetry``."""
    text = textwrap.dedent(f"""\
        version: 1
        keys:
          - name: team
            key: ${{TEST_CLIENT_KEY}}
          - name: content
            key: {CONTENT_KEY}
            trace_content: true
            status: true
          - name: tiny
            key: {TINY_KEY}
            limits: {{rpm: 1}}
        providers:
          - name: up
            type: openai
            base_url: {upstream_url}
            api_key: ${{TEST_UPSTREAM_KEY}}
            prefix: up
            models: [gpt-4o]
            retries: 1
          - name: spare
            type: openai
            base_url: {upstream_url}
            api_key: ${{TEST_UPSTREAM_KEY}}
            prefix: spare
            models: [gpt-4o]
          - name: pool
            type: openai
            base_url: {upstream_url}
            api_keys: [{{name: k1, key: {POOL_KEYS["k1"]}}}, {{name: k2, key: {POOL_KEYS["k2"]}}}]
            prefix: pool
            models: [gpt-4o]
        routes:
          - name: smart
            targets: [up/gpt-4o, spare/gpt-4o]
        """)
    return text + (f"telemetry: {telemetry}\n" if telemetry else "")


def client(gw: GatewayProcess, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def chat(gw: GatewayProcess, key: str = CLIENT_KEY, **extra: Any) -> Any:
    return client(gw, key).chat.completions.create(model=extra.pop("model", "smart"),
                                                   messages=[{"role": "user", "content": "hi there"}], **extra)


def trace_spans(rx: OtlpReceiver, trace_id: str, n: int) -> list[ReceivedSpan]:
    return [s for s in rx.wait_for(lambda spans: len([s for s in spans if s.trace_id == trace_id]) >= n)
            if s.trace_id == trace_id]


def json_log_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    out = []
    for line in gw.logs().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("logger") == "vte_proxy.access":
            out.append(obj)
    return out


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[OtlpReceiver, str]]:
    with otlp_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def traced(module_upstream: ScriptedUpstream, collector: tuple[OtlpReceiver, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway exporting to the collector, for the tests that only read spans."""
    text = config(module_upstream.url, f"{{otlp_endpoint: '{collector[1]}', service_name: vte-e2e}}")
    with running_gateway(tmp_path_factory.mktemp("gw"), text, env=FAST, log_format="json") as gw:
        yield gw


@pytest.fixture
def up(module_upstream: ScriptedUpstream) -> ScriptedUpstream:
    module_upstream.script.clear()
    module_upstream.requests.clear()
    return module_upstream


def test_a_retry_and_a_fall_over_give_one_server_span_and_three_attempt_spans(
        traced: GatewayProcess, up: ScriptedUpstream, collector: tuple[OtlpReceiver, str]) -> None:
    rx, _ = collector
    up.push(Reply({"error": {"message": "busy"}}, 503), Reply({"error": {"message": "still busy"}}, 503))
    answer = chat(traced, extra_headers={"traceparent": TRACEPARENT, "tracestate": "app=1"})
    assert answer.model == "smart" and answer.choices[0].message.content == "Hello world"
    spans = trace_spans(rx, CLIENT_TRACE, 4)
    servers = [s for s in spans if s.kind == "server"]
    attempts = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.attributes["vte.attempt"])
    assert len(servers) == 1 and len(attempts) == 3
    server = servers[0]
    assert server.name == "POST /v1/chat/completions" and server.parent_span_id == CLIENT_SPAN
    assert server.resource["service.name"] == "vte-e2e"
    assert {a.parent_span_id for a in attempts} == {server.span_id}
    assert [a.attributes["vte.provider"] for a in attempts] == ["up", "up", "spare"]
    assert [a.attributes.get("http.response.status_code") for a in attempts] == [503, 503, 200]
    assert [a.status for a in attempts] == ["error", "error", "unset"]
    assert attempts[0].attributes["error.type"] == attempts[1].attributes["error.type"] == "status"
    for a in attempts:
        assert a.name == "chat gpt-4o"
        assert a.attributes["gen_ai.operation.name"] == "chat" and a.attributes["gen_ai.provider.name"] == "openai"
        assert a.attributes["gen_ai.request.model"] == "gpt-4o"
        assert a.attributes["server.address"] == "127.0.0.1" and a.attributes["server.port"] == up.port
    assert attempts[2].attributes["gen_ai.usage.input_tokens"] == 7
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "smart" and a["vte.route"] == "smart"
    assert a["gen_ai.provider.name"] == "openai" and a["vte.provider"] == "spare" and a["vte.key"] == "team"
    assert a["gen_ai.response.model"] == "gpt-4o" and a["gen_ai.response.id"] == "chatcmpl-up"
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.usage.input_tokens"] == 7 and a["gen_ai.usage.output_tokens"] == 3
    assert a["gen_ai.request.stream"] is False and a["http.response.status_code"] == 200
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    # Each upstream request carried the trace context of its own attempt.
    sent = [r.headers for r in up.requests]
    assert [h["traceparent"] for h in sent] == [f"00-{CLIENT_TRACE}-{a.span_id}-01" for a in attempts]
    assert {h["tracestate"] for h in sent} == {"app=1"}
    dumped = json.dumps([s.attributes for s in spans])
    assert CLIENT_KEY not in dumped and UPSTREAM_KEY not in dumped


def test_a_broken_client_context_is_replaced_as_a_whole(traced: GatewayProcess, up: ScriptedUpstream) -> None:
    chat(traced, model="up/gpt-4o", extra_headers={"traceparent": "00-not-a-trace-01", "tracestate": "app=1"})
    sent = up.last().headers
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]", sent["traceparent"]) and "tracestate" not in sent


def test_a_stream_has_its_time_to_first_token_and_the_log_its_trace_id(
        traced: GatewayProcess, up: ScriptedUpstream, collector: tuple[OtlpReceiver, str]) -> None:
    rx, _ = collector
    stream = chat(traced, model="up/gpt-4o", stream=True, max_tokens=40, temperature=0.5,
                  stream_options={"include_usage": True})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello world"
    trace_id = up.last("/chat/completions").headers["traceparent"].split("-")[1]
    server = next(s for s in trace_spans(rx, trace_id, 2) if s.kind == "server")
    a = server.attributes
    assert a["gen_ai.request.stream"] is True and a["gen_ai.request.max_tokens"] == 40
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.usage.input_tokens"] == 7 and a["gen_ai.usage.output_tokens"] == 3
    assert a["gen_ai.response.finish_reasons"] == ["stop"] and a["gen_ai.response.model"] == "gpt-4o"
    assert a["vte.time_to_first_token"] > 0 and "first_token" in server.events
    line = eventually(lambda: [e for e in json_log_lines(traced) if e.get("trace_id") == trace_id],
                      "the request's log line with its trace id")
    assert line[0]["model"] == "up/gpt-4o" and line[0]["status"] == 200


def test_content_is_recorded_only_for_keys_that_opted_in(
        traced: GatewayProcess, up: ScriptedUpstream, collector: tuple[OtlpReceiver, str]) -> None:
    rx, _ = collector
    for key in (CLIENT_KEY, CONTENT_KEY):
        chat(traced, key, model="up/gpt-4o")
    ids = [r.headers["traceparent"].split("-")[1] for r in up.requests]
    servers = [next(s for s in trace_spans(rx, t, 2) if s.kind == "server") for t in ids]
    assert [s.attributes["vte.key"] for s in servers] == ["team", "content"]
    assert "gen_ai.input.messages" not in servers[0].attributes
    loud = servers[1].attributes
    assert json.loads(loud["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text",
                                                                                     "content": "hi there"}]}]
    assert json.loads(loud["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": "Hello world"}]
    assert CONTENT_KEY not in json.dumps(loud)


def test_the_status_page_says_where_spans_go(traced: GatewayProcess, collector: tuple[OtlpReceiver, str]) -> None:
    status = httpx.get(traced.url + "/status.json", auth=("ops", CONTENT_KEY)).json()
    assert status["tracing"] == f"OTLP/HTTP to {collector[1]}, sample ratio 1, service.name vte-e2e"


def test_errors_before_any_upstream_have_a_server_span_only(
        traced: GatewayProcess, up: ScriptedUpstream, collector: tuple[OtlpReceiver, str]) -> None:
    rx, _ = collector
    trace = "1" * 32
    r = httpx.post(traced.url + "/v1/chat/completions", json={"model": "nope", "messages": []},
                   headers={"authorization": f"Bearer {CLIENT_KEY}", "traceparent": f"00-{trace}-{'2' * 16}-01"})
    assert r.status_code == 404
    (server,) = trace_spans(rx, trace, 1)
    assert server.kind == "server" and server.status == "unset"
    assert server.attributes["error.type"] == "model_not_found"
    assert server.attributes["http.response.status_code"] == 404 and not up.requests


def test_an_anthropic_messages_request_is_traced_too(
        traced: GatewayProcess, up: ScriptedUpstream, collector: tuple[OtlpReceiver, str]) -> None:
    rx, _ = collector
    trace = "5" * 32
    r = httpx.post(traced.url + "/v1/messages", headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01",
                                                          "traceparent": f"00-{trace}-{'6' * 16}-01"},
                   json={"model": "up/gpt-4o", "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["type"] == "message"
    spans = trace_spans(rx, trace, 2)
    server = next(s for s in spans if s.kind == "server")
    attempt = next(s for s in spans if s.kind == "client")
    assert server.name == "POST /v1/messages" and server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.max_tokens"] == 30
    assert server.attributes["gen_ai.usage.input_tokens"] == 7 and attempt.parent_span_id == server.span_id
    assert up.last().headers["traceparent"] == f"00-{trace}-{attempt.span_id}-01"


def test_each_key_a_pool_tries_is_an_attempt_span(
        traced: GatewayProcess, up: ScriptedUpstream, collector: tuple[OtlpReceiver, str]) -> None:
    rx, _ = collector
    up.push(Reply({"error": {"message": "slow down"}}, 429, headers={"retry-after": "1"}))
    trace = "7" * 32
    answer = chat(traced, model="pool/gpt-4o", extra_headers={"traceparent": f"00-{trace}-{'8' * 16}-01"})
    assert answer.choices[0].message.content == "Hello world"
    spans = trace_spans(rx, trace, 3)
    server = next(s for s in spans if s.kind == "server")
    first, second = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.attributes["vte.attempt"])
    assert first.parent_span_id == second.parent_span_id == server.span_id
    assert first.attributes["http.response.status_code"] == 429 and first.status == "error"
    assert second.status == "unset" and second.attributes["gen_ai.usage.output_tokens"] == 3
    keys = {first.attributes["vte.upstream_key"], second.attributes["vte.upstream_key"]}
    assert keys == {"k1", "k2"}
    sent = up.requests[-2:]
    assert [r.headers["traceparent"] for r in sent] == [f"00-{trace}-{s.span_id}-01" for s in (first, second)]
    assert {r.headers["authorization"] for r in sent} == {f"Bearer {k}" for k in POOL_KEYS.values()}
    assert "SECRET" not in json.dumps([s.attributes for s in spans])


def test_a_request_refused_by_a_limit_has_its_code_and_no_attempt(
        traced: GatewayProcess, up: ScriptedUpstream, collector: tuple[OtlpReceiver, str]) -> None:
    rx, _ = collector
    chat(traced, TINY_KEY, model="up/gpt-4o")
    trace = "3" * 32
    with pytest.raises(openai.RateLimitError):
        chat(traced, TINY_KEY, model="up/gpt-4o", extra_headers={"traceparent": f"00-{trace}-{'4' * 16}-01"})
    (server,) = trace_spans(rx, trace, 1)
    assert server.attributes["error.type"] == "rate_limited" and server.attributes["vte.key"] == "tiny"
    assert server.attributes["http.response.status_code"] == 429 and server.status == "unset"
    time.sleep(0.2)
    assert len(rx.by_trace(trace)) == 1 and len(up.requests) == 1  # no attempt: no upstream call


def test_a_reload_that_changes_telemetry_takes_effect(
        up: ScriptedUpstream, collector: tuple[OtlpReceiver, str], tmp_path: Path) -> None:
    rx, url = collector
    with running_gateway(tmp_path, config(up.url, f"{{otlp_endpoint: '{url}', service_name: before}}"),
                         env=FAST) as gw:
        write_atomic(gw.config_path, config(up.url, f"{{otlp_endpoint: '{url}', service_name: after}}"))

        def renamed() -> bool:
            chat(gw, model="up/gpt-4o")
            trace_id = up.last().headers["traceparent"].split("-")[1]
            return trace_spans(rx, trace_id, 2)[0].resource["service.name"] == "after"

        eventually(renamed, "spans with the reloaded service.name", timeout=20)
        write_atomic(gw.config_path, config(up.url))  # telemetry removed: off again
        eventually(lambda: "tracing: off" in gw.logs(), "tracing turned off by the reload", timeout=20)
        up.requests.clear()
        chat(gw, model="up/gpt-4o", extra_headers={"traceparent": TRACEPARENT})
        assert up.last().headers["traceparent"] == TRACEPARENT  # off: the client's context passes through


@pytest.mark.parametrize("switched_off", [False, True], ids=["default", "enabled-false-over-env"])
def test_nothing_is_exported_when_off(up: ScriptedUpstream, tmp_path: Path, switched_off: bool) -> None:
    with otlp_receiver() as (rx, url):
        # Off by default; and `enabled: false` wins over an endpoint in the environment.
        text = config(up.url, "{enabled: false}") if switched_off else config(up.url)
        env = {**FAST, "OTEL_EXPORTER_OTLP_ENDPOINT": url} if switched_off else FAST
        with running_gateway(tmp_path, text, env=env) as gw:
            chat(gw)
            chat(gw, model="up/gpt-4o", stream=True, extra_headers={"traceparent": TRACEPARENT}).close()
            time.sleep(0.5)  # ten export periods of a tracer, had one been built
            assert rx.exports == 0 and not rx.spans
            assert "tracing:" not in gw.logs()
            assert up.last().headers["traceparent"] == TRACEPARENT  # passed through untouched
            assert "vte_trace_spans_exported_total 0.0" in httpx.get(gw.url + "/metrics").text


def test_an_unreachable_collector_changes_no_answer(up: ScriptedUpstream, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**FAST, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    with running_gateway(tmp_path, config(up.url, f"{{otlp_endpoint: '{dead}'}}"), env=env) as gw:

        def dropped(reason: str) -> float:
            m = re.search(rf'^vte_trace_spans_dropped_total\{{reason="{reason}"\}} (\S+)$',
                          httpx.get(gw.url + "/metrics").text, re.M)
            return float(m.group(1)) if m else 0.0

        def answers() -> None:
            up.push(Reply({"error": {"message": "busy"}}, 503))
            answer = chat(gw)
            assert answer.choices[0].message.content == "Hello world" and answer.model == "smart"
            stream = chat(gw, model="up/gpt-4o", stream=True, extra_headers={"traceparent": TRACEPARENT})
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello world"
            with pytest.raises(openai.NotFoundError):
                chat(gw, model="nope")

        answers()  # traced: their spans fail to export (or, once the first export failed, are not made)
        assert eventually(lambda: dropped("export_failed") >= 1, "the failed export counted", timeout=20)
        before = dropped("collector_down")
        answers()  # the collector is known to be down: not traced, counted, answered the same
        assert dropped("collector_down") == before + 3
        assert up.last().headers["traceparent"] == TRACEPARENT  # untraced: the client's context passes


