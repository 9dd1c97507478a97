"""vte_proxy.tracing against a scripted OTLP/HTTP receiver: settings from the file and the
environment, spans and their parents, GenAI attributes, traceparent continuation and
forwarding, sampling, drop counting, reloads, content capture, and nothing at all when off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support import ROOT, chunk, completion, free_port
from vte_proxy.config_telemetry import TelemetryConfig
from vte_proxy.providers.base import EventBatches, JsonAnswer, StreamAnswer
from vte_proxy.tracing import Tracing, resolve, traces_url

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
FAST = {"OTEL_BSP_SCHEDULE_DELAY": "20"}  # export every 20 ms, not every 5 s


@pytest.fixture
def receiver() -> Iterator[tuple[OtlpReceiver, str]]:
    with otlp_receiver() as r:
        yield r


def tracing_to(url: str, env: dict[str, str] | None = None, **config: Any) -> Tracing:
    tracing = Tracing({**FAST, **(env or {})})
    tracing.configure(TelemetryConfig(otlp_endpoint=url, **config))
    assert tracing.current is not None
    return tracing


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def by_name(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    out: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


# ---------------------------------------------------------------- settings
def test_off_by_default_and_without_an_endpoint() -> None:
    assert resolve(TelemetryConfig(), {}) is None
    assert resolve(TelemetryConfig(service_name="x", sample_ratio=0.5), {"OTEL_SERVICE_NAME": "y"}) is None


def test_the_environment_alone_turns_it_on() -> None:
    s = resolve(TelemetryConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
                                    "OTEL_SERVICE_NAME": "gw", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                    "OTEL_TRACES_SAMPLER_ARG": "0.25",
                                    "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20tok,x-a=1"})
    assert s is not None
    assert s.endpoint == "http://collector:4318/v1/traces"
    assert s.service_name == "gw" and s.sample_ratio == 0.25
    assert dict(s.headers) == {"authorization": "Bearer tok", "x-a": "1"}
    signal = resolve(TelemetryConfig(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom/path"})
    assert signal is not None and signal.endpoint == "http://c:4318/custom/path"  # used as is


def test_the_file_wins_field_by_field_and_the_environment_fills_gaps() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318", "OTEL_SERVICE_NAME": "from-env",
           "OTEL_EXPORTER_OTLP_HEADERS": "x-a=env,x-b=env", "OTEL_TRACES_SAMPLER": "always_off"}
    s = resolve(TelemetryConfig(otlp_endpoint="https://file:4318/v1/traces", headers={"X-A": SecretStr("file")}),
                env)
    assert s is not None
    assert s.endpoint == "https://file:4318/v1/traces"
    assert dict(s.headers) == {"x-a": "file", "x-b": "env"}
    assert s.service_name == "from-env" and s.sample_ratio == 0.0
    s = resolve(TelemetryConfig(service_name="from-file", sample_ratio=1.0), env)
    assert s is not None and s.service_name == "from-file" and s.sample_ratio == 1.0
    assert s.endpoint == "http://env:4318/v1/traces"


def test_explicit_switches() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"}
    assert resolve(TelemetryConfig(enabled=False), env) is None
    assert resolve(TelemetryConfig(), {**env, "OTEL_SDK_DISABLED": "true"}) is None
    assert resolve(TelemetryConfig(), {**env, "OTEL_TRACES_EXPORTER": "none"}) is None
    on = resolve(TelemetryConfig(enabled=True), {})  # the OTLP default: a collector on localhost
    assert on is not None and on.endpoint == "http://localhost:4318/v1/traces" and on.service_name == "vte-proxy"


def test_traces_url() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/otlp/") == "http://c:4318/otlp/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_header_values_never_show_in_a_repr() -> None:
    s = resolve(TelemetryConfig(otlp_endpoint="http://c:4318", headers={"authorization": SecretStr("Bearer s3cr3t")}),
                {})
    assert s is not None and "s3cr3t" not in repr(s) and "authorization" in repr(s)
    assert "s3cr3t" not in repr(TelemetryConfig(headers={"authorization": SecretStr("Bearer s3cr3t")}))


@pytest.mark.parametrize("endpoint", ["collector:4318", "ftp://c/x", "http://user:pw@c:4318", "http://c:99999"])
def test_bad_endpoints_are_refused_without_quoting_them(endpoint: str) -> None:
    with pytest.raises(ValidationError) as info:
        TelemetryConfig(otlp_endpoint=endpoint)
    assert "pw@" not in str(info.value).split("input_value")[0]


def test_sample_ratio_is_a_share() -> None:
    with pytest.raises(ValidationError):
        TelemetryConfig(sample_ratio=1.5)


# ---------------------------------------------------------------- off
def test_off_imports_no_opentelemetry_and_builds_nothing(tmp_path: Path) -> None:
    """A whole gateway answering requests with tracing off never loads the SDK."""
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent("""\
        version: 1
        keys: [{name: team, key: sk-test-key-0000}]
        providers: [{name: demo, type: echo, prefix: demo, models: [echo]}]
        telemetry: {service_name: only-a-name}
        """))
    code = textwrap.dedent(f"""\
        import sys
        from starlette.testclient import TestClient
        from vte_proxy.app import create_app
        with TestClient(create_app({str(config)!r})) as client:
            for stream in (False, True):
                r = client.post("/v1/chat/completions", headers={{"authorization": "Bearer sk-test-key-0000",
                                "traceparent": "00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}},
                                json={{"model": "demo/echo", "stream": stream,
                                      "messages": [{{"role": "user", "content": "hi"}}]}})
                assert r.status_code == 200, r.text
        sdk = {"vte_proxy.tracing_sdk", "vte_proxy.tracing_export", "vte_proxy.tracing_spans",
               "vte_proxy.tracing_genai"}
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry") or m in sdk)
        assert not loaded, loaded
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr


# ---------------------------------------------------------------- spans
def chat_request(tracing: Tracing, headers: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """One request with a failed attempt and an answering one; its trace id and the headers
    the answering attempt would send upstream."""
    tracer = tracing.current
    assert tracer is not None
    rs = tracer.request("POST", "/v1/chat/completions", "chat/completions", headers or {})
    rs.key("team")
    rs.model({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
              "temperature": 0.2, "stream": True}, "smart", route="smart")
    first = rs.attempt("up", "openai", "gpt-4o", target="up/gpt-4o", stream=True,
                       base_url="http://127.0.0.1:8000/v1")
    first.failed(503, "status")
    second = rs.attempt("gem", "vertex-express", "gemini-2.5-flash", target="gem/flash", stream=True,
                        upstream_key="main")
    second.answered(200)
    rs.first_token(0.125)
    rs.result(model="gemini-2.5-flash-001", response_id="resp-1", reasons=["stop"],
              usage={"prompt_tokens": 11, "completion_tokens": 4})
    rs.end(200)
    return rs.trace_id, second.headers


def test_one_server_span_and_an_attempt_span_per_try(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracing = tracing_to(url, service_name="gw-test")
    trace_id, _ = chat_request(tracing)
    spans = rx.wait_for(lambda s: len(s) >= 3)
    names = by_name(spans)
    server = names["POST /v1/chat/completions"][0]
    failed, answered = names["chat gpt-4o"][0], names["chat gemini-2.5-flash"][0]
    assert {s.trace_id for s in spans} == {trace_id}
    assert server.kind == "server" and server.parent_span_id == ""
    assert failed.kind == answered.kind == "client"
    assert failed.parent_span_id == answered.parent_span_id == server.span_id
    assert server.resource["service.name"] == "gw-test"
    assert server.attributes == {
        "http.request.method": "POST", "http.route": "/v1/chat/completions", "url.path": "/v1/chat/completions",
        "gen_ai.operation.name": "chat", "vte.key": "team", "gen_ai.request.model": "smart", "vte.route": "smart",
        "gen_ai.request.max_tokens": 50, "gen_ai.request.temperature": 0.2, "gen_ai.request.stream": True,
        "gen_ai.provider.name": "gcp.vertex_ai", "vte.provider": "gem", "vte.time_to_first_token": 0.125,
        "gen_ai.response.model": "gemini-2.5-flash-001", "gen_ai.response.id": "resp-1",
        "gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 4, "http.response.status_code": 200}
    assert server.events == ["first_token"] and server.status == "unset"
    assert failed.attributes["error.type"] == "status" and failed.status == "error"
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.attributes["gen_ai.provider.name"] == "openai" and failed.attributes["vte.attempt"] == 1
    assert failed.attributes["server.address"] == "127.0.0.1" and failed.attributes["server.port"] == 8000
    assert answered.attributes["vte.attempt"] == 2 and answered.attributes["vte.upstream_key"] == "main"
    assert answered.attributes["gen_ai.request.model"] == "gemini-2.5-flash"
    assert answered.attributes["gen_ai.usage.output_tokens"] == 4 and answered.status == "unset"
    assert failed.end_ns <= answered.start_ns and answered.end_ns <= server.end_ns


def test_a_client_traceparent_is_continued_and_the_attempt_is_forwarded(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracing = tracing_to(url)
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=abc"}
    trace_id, forwarded = chat_request(tracing, headers)
    assert trace_id == CLIENT_TRACE
    spans = rx.wait_for(lambda s: len(s) >= 3)
    server = by_name(spans)["POST /v1/chat/completions"][0]
    answered = by_name(spans)["chat gemini-2.5-flash"][0]
    assert server.trace_id == CLIENT_TRACE and server.parent_span_id == CLIENT_SPAN
    assert forwarded == {"traceparent": f"00-{CLIENT_TRACE}-{answered.span_id}-01", "tracestate": "vendor=abc"}


def test_an_invalid_traceparent_starts_a_new_trace(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    trace_id, forwarded = chat_request(tracing_to(url), {"traceparent": "00-garbage-01", "tracestate": "a=1"})
    assert trace_id != CLIENT_TRACE and len(trace_id) == 32
    assert forwarded == {"traceparent": forwarded["traceparent"]}  # no tracestate without its traceparent
    assert forwarded["traceparent"].startswith(f"00-{trace_id}-")
    assert rx.wait_for(lambda s: len(s) >= 3)[0].trace_id == trace_id


def test_sampling_follows_the_ratio_and_the_clients_flag(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracing = tracing_to(url, sample_ratio=0.0)
    unsampled_id, forwarded = chat_request(tracing)
    assert int(forwarded["traceparent"][-2:], 16) & 1 == 0  # the upstream learns it is not sampled
    sampled = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    chat_request(tracing, sampled)
    spans = rx.wait_for(lambda s: len(s) >= 3)
    assert tracing.current is not None and tracing.current.force_flush()
    assert {s.trace_id for s in rx.spans} == {CLIENT_TRACE} and unsampled_id != CLIENT_TRACE
    assert len(spans) == 3


def test_export_headers_reach_the_collector_and_no_secret_reaches_a_span(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracing = tracing_to(url, env={"OTEL_EXPORTER_OTLP_HEADERS": "x-env=from-env"},
                         headers={"Authorization": SecretStr("Bearer collector-token-123")})
    chat_request(tracing, {"authorization": "Bearer sk-client-SECRET", "x-api-key": "sk-other-SECRET"})
    spans = rx.wait_for(lambda s: len(s) >= 3)
    assert rx.headers[0]["authorization"] == "Bearer collector-token-123"
    assert rx.headers[0]["x-env"] == "from-env"
    dumped = json.dumps([s.attributes for s in spans] + [spans[0].resource])
    assert "SECRET" not in dumped and "collector-token" not in dumped


def test_errors_mark_the_spans(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracer = tracing_to(url).current
    assert tracer is not None
    refused = tracer.request("POST", "/v1/chat/completions", "chat/completions", {})
    refused.end(403, "model_not_allowed")
    cut = tracer.request("POST", "/v1/chat/completions", "chat/completions", {})
    attempt = cut.attempt("up", "openai", "gpt-4o")
    attempt.answered(200)
    cut.end(502, "truncated")
    spans = rx.wait_for(lambda s: len(s) >= 3)
    servers = {s.trace_id: s for s in spans if s.kind == "server"}
    assert servers[refused.trace_id].status == "unset"  # a 4xx is the client's error, not the server's
    assert servers[refused.trace_id].attributes["error.type"] == "model_not_allowed"
    assert servers[cut.trace_id].status == "error" and servers[cut.trace_id].attributes["error.type"] == "truncated"
    client = next(s for s in spans if s.kind == "client")
    assert client.status == "error" and client.attributes["error.type"] == "truncated"


def test_a_request_span_ends_once(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracer = tracing_to(url).current
    assert tracer is not None
    rs = tracer.request("POST", "/v1/embeddings", "embeddings", {})
    rs.end(200)
    rs.end(500, "internal_error")
    spans = rx.wait_for(lambda s: len(s) >= 1)
    time.sleep(0.1)
    assert len(rx.spans) == 1 and spans[0].attributes["gen_ai.operation.name"] == "embeddings"
    assert spans[0].attributes["http.response.status_code"] == 200 and tracer.active == 0


# ---------------------------------------------------------------- drops
def test_an_unreachable_collector_drops_and_counts_spans() -> None:
    before = counter("vte_trace_spans_dropped_total", reason="export_failed")
    tracing = tracing_to(f"http://127.0.0.1:{free_port()}", env={"OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"})
    tracer = tracing.current
    assert tracer is not None
    started = time.monotonic()
    chat_request(tracing)
    assert time.monotonic() - started < 5  # ending spans never waits for the collector
    deadline = time.monotonic() + 20
    while counter("vte_trace_spans_dropped_total", reason="export_failed") < before + 3:
        assert time.monotonic() < deadline, "the failed export was not counted"
        time.sleep(0.05)


def test_a_collector_answering_errors_drops_and_counts_spans(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    rx.status = 400  # not retryable: one failed export
    before = counter("vte_trace_spans_dropped_total", reason="export_failed")
    chat_request(tracing_to(url))
    deadline = time.monotonic() + 10
    while counter("vte_trace_spans_dropped_total", reason="export_failed") < before + 3:
        assert time.monotonic() < deadline, "the refused export was not counted"
        time.sleep(0.02)
    assert rx.exports >= 1 and not rx.spans


def test_a_failing_collector_stops_tracing_but_for_probes_until_it_is_back(
        receiver: tuple[OtlpReceiver, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from vte_proxy import tracing_export

    monkeypatch.setattr(tracing_export, "PROBE_EVERY", 0.3)
    rx, url = receiver
    rx.status = 400
    tracer = tracing_to(url).current
    assert tracer is not None and tracer.accepting()
    tracer.request("POST", "/v1/chat/completions", "chat/completions", {}).end(200)
    deadline = time.monotonic() + 10
    while not tracer.processor.exporter.down:
        assert time.monotonic() < deadline, "the failed export did not mark the collector down"
        time.sleep(0.01)
    before = counter("vte_trace_spans_dropped_total", reason="collector_down")
    assert not any(tracer.accepting() for _ in range(4))  # not traced, counted
    assert counter("vte_trace_spans_dropped_total", reason="collector_down") == before + 4
    time.sleep(0.35)
    assert [tracer.accepting() for _ in range(3)] == [True, False, False]  # one probe per period
    rx.status = 200  # the collector is back: the next probe's export says so
    time.sleep(0.35)
    assert tracer.accepting()
    tracer.request("POST", "/v1/chat/completions", "chat/completions", {}).end(200)
    rx.wait_for(lambda s: len(s) == 1)
    deadline = time.monotonic() + 10
    while tracer.processor.exporter.down:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert all(tracer.accepting() for _ in range(5))


def test_a_full_queue_drops_new_spans_and_counts_them(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    rx.gate = threading.Event()  # the collector holds the first export
    tracer = tracing_to(url, env={"OTEL_BSP_MAX_QUEUE_SIZE": "1", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1"}).current
    assert tracer is not None
    before = counter("vte_trace_spans_dropped_total", reason="queue_full")
    exported = counter("vte_trace_spans_exported_total")
    tracer.request("POST", "/v1/chat/completions", "chat/completions", {}).end(200)
    deadline = time.monotonic() + 10
    while tracer.processor.exporter.taken < 1:  # the export thread holds span 1 (blocked in the collector)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(3):  # span 2 waits in the queue; 3 and 4 find it full
        tracer.request("POST", "/v1/chat/completions", "chat/completions", {}).end(200)
    assert counter("vte_trace_spans_dropped_total", reason="queue_full") == before + 2
    assert not tracer.accepting()  # while the queue is full, requests are not even traced
    assert counter("vte_trace_spans_dropped_total", reason="queue_full") == before + 3
    rx.gate.set()
    rx.wait_for(lambda s: len(s) == 2)
    deadline = time.monotonic() + 10
    while counter("vte_trace_spans_exported_total") < exported + 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert tracer.accepting()  # the queue has room again


# ---------------------------------------------------------------- reloads
async def test_a_changed_config_rebuilds_and_the_old_tracer_stops_after_its_last_request(
        receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracing = tracing_to(url, service_name="first")
    old = tracing.current
    assert old is not None
    tracing.configure(TelemetryConfig(otlp_endpoint=url, service_name="first"))
    assert tracing.current is old  # the same settings: nothing rebuilt
    in_flight = old.request("POST", "/v1/chat/completions", "chat/completions", {})
    tracing.configure(TelemetryConfig(otlp_endpoint=url, service_name="second"))
    new = tracing.current
    assert new is not None and new is not old and old.retired
    assert old._stopping is None  # a request still runs on it
    new.request("POST", "/v1/completions", "completions", {}).end(200)
    in_flight.end(200)
    assert old._stopping is not None
    old._stopping.join(10)
    spans = rx.wait_for(lambda s: len(s) >= 2)
    assert {(s.name, s.resource["service.name"]) for s in spans} == {
        ("POST /v1/chat/completions", "first"), ("POST /v1/completions", "second")}
    tracing.configure(TelemetryConfig())
    assert tracing.current is None and new.retired
    await tracing.aclose()


async def test_aclose_sends_what_is_queued(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracing = tracing_to(url, env={"OTEL_BSP_SCHEDULE_DELAY": "60000"})
    assert tracing.current is not None
    tracing.current.request("POST", "/v1/chat/completions", "chat/completions", {}).end(200)
    assert not rx.spans
    await tracing.aclose()
    assert len(rx.spans) == 1 and tracing.current is None


# ---------------------------------------------------------------- content
def test_content_only_for_keys_that_opted_in(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracer = tracing_to(url).current
    assert tracer is not None
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"model": "up/gpt-4o", "messages": [{"role": "system", "content": "be brief"},
                                               {"role": "user", "content": [{"type": "text", "text": "hello"}, image]}]}
    for name, opted in (("quiet", False), ("loud", True)):
        rs = tracer.request("POST", "/v1/chat/completions", "chat/completions", {})
        rs.key(name, trace_content=opted)
        rs.model(body, "up/gpt-4o")
        attempt = rs.attempt("up", "openai", "gpt-4o")
        attempt.answered()
        rs.response(completion("gpt-4o-2024", "hi there"))
        rs.end(200)
    spans = rx.wait_for(lambda s: len(s) >= 4)
    servers = {s.attributes["vte.key"]: s for s in spans if s.kind == "server"}
    assert "gen_ai.input.messages" not in servers["quiet"].attributes
    assert "gen_ai.output.messages" not in servers["quiet"].attributes
    loud = servers["loud"].attributes
    assert json.loads(loud["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hello"}, {"type": "image_url"}]}]
    assert "AAAA" not in loud["gen_ai.input.messages"]
    assert json.loads(loud["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi there"}], "finish_reason": "stop"}]
    assert loud["gen_ai.response.model"] == "gpt-4o-2024"


async def test_a_streamed_answer_is_watched_for_its_facts_and_content(receiver: tuple[OtlpReceiver, str]) -> None:
    rx, url = receiver
    tracer = tracing_to(url).current
    assert tracer is not None
    pieces = ({"role": "assistant", "content": "Hel"}, {"content": "lo"},
              {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})
    events = [b"data: " + orjson.dumps(chunk("gpt-4o-2024", piece, rid="chatcmpl-9")) for piece in pieces]
    events += [b"data: " + orjson.dumps(chunk("gpt-4o-2024", {}, "tool_calls", rid="chatcmpl-9")), b"data: [DONE]"]

    async def upstream() -> EventBatches:
        yield events[:2]
        yield events[2:]

    for name, opted in (("quiet", False), ("loud", True)):
        rs = tracer.request("POST", "/v1/chat/completions", "chat/completions", {})
        rs.key(name, trace_content=opted)
        rs.attempt("up", "openai", "gpt-4o").answered()
        answer = rs.observe(StreamAnswer(upstream()))
        assert isinstance(answer, StreamAnswer)
        async for batch in answer.events:  # the consumer stops at [DONE]: facts are set as they come
            if b"data: [DONE]" in batch:
                break
        rs.end(200)
    spans = rx.wait_for(lambda s: len(s) >= 4)
    servers = {s.attributes["vte.key"]: s.attributes for s in spans if s.kind == "server"}
    for attributes in servers.values():
        assert attributes["gen_ai.response.model"] == "gpt-4o-2024"
        assert attributes["gen_ai.response.id"] == "chatcmpl-9"
        assert attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert "gen_ai.output.messages" not in servers["quiet"]
    assert json.loads(servers["loud"]["gen_ai.output.messages"]) == [
        {"role": "assistant", "finish_reason": "tool_calls",
         "parts": [{"type": "text", "content": "Hello"},
                   {"type": "tool_call", "id": "call_1", "name": "f", "arguments": "{\"a\": 1}"}]}]
    client = next(s for s in spans if s.kind == "client")
    assert client.attributes["gen_ai.response.model"] == "gpt-4o-2024"


def test_message_shapes() -> None:
    from vte_proxy.tracing_content import input_messages, output_messages

    assert input_messages({"prompt": "once upon"}) == [{"role": "user", "parts": [{"type": "text",
                                                                                   "content": "once upon"}]}]
    assert input_messages({"input": "hi"}) == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    tool_turn = input_messages({"messages": [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                               "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]})
    assert tool_turn == [{"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f",
                                                          "arguments": "{}"}]},
                         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "42"}]}]
    anthropic = input_messages({"system": "sys", "messages": [{"role": "user", "content": "q"}]})
    assert anthropic[0] == {"role": "system", "parts": [{"type": "text", "content": "sys"}]}
    long = input_messages({"messages": [{"role": "user", "content": "x" * 10_000}] * 50})
    assert len(long) == 32 and len(long[0]["parts"][0]["content"]) < 4200
    assert input_messages({"messages": 5}) == [] and input_messages({"messages": [3, None]}) == []
    responses = output_messages({"output": [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]})
    assert responses == [{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]
    message = output_messages({"type": "message", "content": [{"type": "text", "text": "yo"}],
                               "stop_reason": "end_turn"})
    assert message == [{"role": "assistant", "parts": [{"type": "text", "content": "yo"}], "finish_reason": "end_turn"}]


def test_the_request_log_carries_the_trace_id_only_when_traced() -> None:
    from vte_proxy.accounting import RequestLine
    from vte_proxy.record import RequestRecord

    record = RequestRecord.start("chat/completions")
    record.status = 200
    assert "trace_id" not in record.entry() and "trace=" not in str(RequestLine(record.entry()))
    record.trace_id = CLIENT_TRACE
    assert record.entry()["trace_id"] == CLIENT_TRACE
    assert str(RequestLine(record.entry())).endswith(f" trace={CLIENT_TRACE}")


async def test_answers_of_odd_shapes_never_fail_a_request(receiver: tuple[OtlpReceiver, str]) -> None:
    """Whatever an upstream sends, watching it for the trace raises nothing."""
    rx, url = receiver
    tracer = tracing_to(url).current
    assert tracer is not None
    odd: list[dict[str, Any]] = [
        {"choices": 5}, {"choices": [{"delta": 3}]}, {"choices": [{"delta": {"tool_calls": [7]}}]},
        {"choices": [{"message": "x", "finish_reason": 1}]}, {"output": [None, {"type": 1}]},
        {"response": {"status": "incomplete", "incomplete_details": 4}}, {"model": ["x"]}]
    for body in odd:
        rs = tracer.request("POST", "/v1/chat/completions", "chat/completions", {})
        rs.key("loud", trace_content=True)
        rs.model({"model": "m", "messages": [{"role": 1, "content": {"a": 1}}, 5], "max_tokens": "x"}, "m")
        rs.attempt("up", "openai", "m").answered()
        assert rs.observe(JsonAnswer(body)).body is body  # type: ignore[union-attr]

        async def events(body: dict[str, Any] = body) -> EventBatches:
            yield [b"data: " + orjson.dumps(body), b"data: {not json", b"event: x", b"data: [DONE]"]

        stream = rs.observe(StreamAnswer(events()))
        assert isinstance(stream, StreamAnswer)
        assert [batch async for batch in stream.events]
        rs.end(200)
    rx.wait_for(lambda s: len(s) >= 2 * len(odd))


def test_each_key_of_a_pool_is_its_own_attempt_span(receiver: tuple[OtlpReceiver, str]) -> None:
    from vte_proxy.tracing import KEY_TRIES

    assert KEY_TRIES.get() is None  # nothing set while nobody traces
    rx, url = receiver
    tracer = tracing_to(url).current
    assert tracer is not None
    rs = tracer.request("POST", "/v1/chat/completions", "chat/completions", {})
    attempt = rs.attempt("pool", "openai", "gpt-4o")
    first = attempt.key("k1", {"traceparent": attempt.headers["traceparent"], "x": "1"})
    assert first["traceparent"] == attempt.headers["traceparent"]  # the first key: the attempt's own span
    attempt.key_failed(429)
    second = attempt.key("k2", first)
    assert second["x"] == "1" and second["traceparent"] != first["traceparent"]
    attempt.answered()
    rs.end(200)
    spans = rx.wait_for(lambda s: len(s) >= 3)
    clients = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.attributes["vte.attempt"])
    assert [(c.attributes["vte.upstream_key"], c.status) for c in clients] == [("k1", "error"), ("k2", "unset")]
    assert second["traceparent"].split("-")[2] == clients[1].span_id


def test_logs_and_pages_name_the_collector_without_path_query_or_credentials() -> None:
    from vte_proxy.tracing import describe, where

    assert where("https://u:p@otlp.example.com/v1/traces?api-key=s3cr3t") == "https://otlp.example.com:443"
    s = resolve(TelemetryConfig(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/t?token=s3cr3t"})
    assert s is not None and "s3cr3t" not in describe(s) and describe(s).startswith("OTLP/HTTP to http://c:4318,")
