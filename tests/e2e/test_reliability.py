"""Failure behaviour: fall-over routes, retries, timeouts, limits, slow clients, shutdown."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import Stack, gateway_fixture
from tests.support import (
    CLIENT_KEY,
    HELLO,
    LIMITED_KEY,
    Hang,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    completion,
    free_port,
    gateway_yaml,
    running_gateway,
)

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def providers(url: str, dead: int) -> str:
    return f"""\
- name: dead
  type: openai
  base_url: http://127.0.0.1:{dead}/v1
  prefix: dead
  models: [m]
  timeouts: {{connect: 1s}}
  retries: 1
- name: flaky
  type: openai
  base_url: {url}
  prefix: flaky
  models: [m]
  retries: 2
- name: slow
  type: openai
  base_url: {url}
  prefix: slow
  models: [m]
  timeouts: {{first_byte: 1s, idle: 1s}}
"""


ROUTES = """\
- name: smart
  targets: [dead/m, up/gpt-4o]
- name: busy
  targets: [up/gpt-4o, demo/echo]
- name: never
  targets: [up/gpt-4o, flaky/m]
"""


stack = gateway_fixture(lambda url: gateway_yaml(url, providers(url, free_port()), routes=ROUTES,
                                                  server="max_concurrency: 4\nbody_timeout: 1s\nheader_timeout: 1s\n"))


def test_unreachable_upstream_is_502_with_an_openai_error(s: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        s.client().chat.completions.create(model="dead/m", messages=HELLO)
    assert exc.value.status_code == 502
    assert exc.value.body["code"] == "connect"  # type: ignore[index]
    assert "127.0.0.1" not in exc.value.message  # no upstream address in client errors


def test_route_falls_over_to_the_next_target_on_connect_error(s: Stack) -> None:
    got = s.client().chat.completions.create(model="smart", messages=HELLO)
    assert got.model == "smart" and got.choices[0].message.content == "Hello world"
    assert s.upstream.last().body["model"] == "gpt-4o"


def test_route_falls_over_on_429_and_5xx_for_streams_too(s: Stack) -> None:
    s.upstream.push(Reply({"error": {"message": "slow down"}}, 429))
    assert s.client().chat.completions.create(model="busy", messages=HELLO).choices[0].message.content == "Say hello"
    s.upstream.push(Reply({"error": {"message": "boom"}}, 500))
    chunks = list(s.client().chat.completions.create(model="busy", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Say hello"
    assert {c.model for c in chunks} == {"busy"}


def test_route_does_not_fall_over_on_a_client_error(s: Stack) -> None:
    s.upstream.push(Reply({"error": {"message": "bad request"}}, 400))
    with pytest.raises(openai.BadRequestError):
        s.client().chat.completions.create(model="never", messages=HELLO)
    assert len(s.upstream.requests) == 1


def test_route_does_not_fall_over_once_bytes_reached_the_client(s: Stack) -> None:
    s.upstream.push(Stream([chunk("gpt-4o", {"content": "part"})], cut=True))
    with pytest.raises(openai.APIError):
        list(s.client().chat.completions.create(model="busy", messages=HELLO, stream=True))
    assert len(s.upstream.requests) == 1  # demo/echo was never tried


def test_routes_are_listed_and_obey_allow_lists(s: Stack) -> None:
    assert {"smart", "busy", "never"} <= {m.id for m in s.client().models.list()}
    with pytest.raises(openai.PermissionDeniedError):
        s.client(LIMITED_KEY).chat.completions.create(model="busy", messages=HELLO)


def test_retries_absorb_a_flaky_upstream(s: Stack) -> None:
    s.upstream.push(Reply({"error": {"message": "x"}}, 503), Reply({"error": {"message": "x"}}, 502))
    got = s.client().chat.completions.create(model="flaky/m", messages=HELLO)
    assert got.choices[0].message.content == "Hello world"
    assert len(s.upstream.requests) == 3


def test_retries_give_up_after_the_configured_count(s: Stack) -> None:
    s.upstream.push(*[Reply({"error": {"message": "x"}}, 503)] * 3)
    with pytest.raises(openai.InternalServerError) as exc:
        s.client().chat.completions.create(model="flaky/m", messages=HELLO)
    assert exc.value.status_code == 503
    assert len(s.upstream.requests) == 3


def test_retries_do_not_repeat_a_429_or_500(s: Stack) -> None:
    s.upstream.push(Reply({"error": {"message": "x"}}, 500))
    with pytest.raises(openai.InternalServerError):
        s.client().chat.completions.create(model="flaky/m", messages=HELLO)
    assert len(s.upstream.requests) == 1


def test_first_byte_timeout_is_504(s: Stack) -> None:
    s.upstream.push(Hang(5))
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        s.client().chat.completions.create(model="slow/m", messages=HELLO)
    assert exc.value.status_code == 504
    assert time.monotonic() - t0 < 4  # bounded by the 1 s timeout, not the 5 s hang


def test_idle_timeout_ends_a_silent_stream_with_an_error_event(s: Stack) -> None:
    s.upstream.push(Stream([chunk("m", {"content": "a"}), chunk("m", {"content": "b"})], delay=3))
    with httpx.stream("POST", s.gateway.url + "/v1/chat/completions", headers=AUTH, timeout=10,
                      json={"model": "slow/m", "messages": HELLO, "stream": True}) as resp:
        lines = [ln for ln in resp.iter_lines() if ln.startswith("data: ")]
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["content"] == "a"
    assert json.loads(lines[-1][6:])["error"]["code"] == "idle"


def test_concurrency_cap_answers_503_beyond_it(s: Stack) -> None:
    s.upstream.push(*[Stream([chunk("gpt-4o", {"content": "x"})] * 20, delay=0.1) for _ in range(4)])
    done = threading.Barrier(5)

    def hold() -> None:
        with httpx.stream("POST", s.gateway.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as resp:
            lines = resp.iter_lines()
            next(lines)
            done.wait()
            for _ in lines:
                pass

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while s.upstream.open_streams < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    over = httpx.post(s.gateway.url + "/v1/chat/completions", headers=AUTH,
                      json={"model": "demo/echo", "messages": HELLO})
    done.wait()
    for t in threads:
        t.join()
    assert over.status_code == 503 and over.json()["error"]["code"] == "overloaded"
    metrics = httpx.get(s.gateway.url + "/metrics").text
    assert 'vte_requests_total{code="503",endpoint="chat/completions",key="-",model="unknown",provider="-"}' in metrics
    assert httpx.post(s.gateway.url + "/v1/chat/completions", headers=AUTH,
                      json={"model": "demo/echo", "messages": HELLO}).status_code == 200


def raw_conn(s: Stack) -> socket.socket:
    return socket.create_connection(("127.0.0.1", s.gateway.port), timeout=10)


def test_slow_request_body_is_408(s: Stack) -> None:
    with raw_conn(s) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"model\":")
        answer = b""
        while b"}}" not in answer:  # status line and body may arrive in separate segments
            part = sock.recv(4096)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"body_timeout"' in answer


def test_slow_request_headers_get_the_connection_closed(s: Stack) -> None:
    with raw_conn(s) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the gateway
        assert time.monotonic() - t0 < 8


def test_oversized_headers_are_431(s: Stack) -> None:
    with raw_conn(s) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431")


def answer_then_eof(sock: socket.socket, more: bytes = b"x") -> bytes:
    """Everything the gateway sends until it closes the connection; ``more`` (one more body
    byte, which used to cancel uvicorn's keep-alive timer for good) is sent after the answer.
    A socket the gateway keeps open fails the test with a timeout (10 s)."""
    answer = b""
    while not answer.endswith(b"}}"):
        part = sock.recv(4096)
        assert part, answer
        answer += part
    with contextlib.suppress(OSError):
        sock.sendall(more)
    rest = b""
    with contextlib.suppress(ConnectionResetError):  # closed: EOF, or a reset once "more" hit the closed socket
        while part := sock.recv(4096):
            rest += part
    return answer + rest


@pytest.mark.parametrize(("request_head", "status"), [
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-wrong\r\n"
     b"Content-Length: 100\r\n\r\n{\"model\":", b"401"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_KEY.encode()
     + b"\r\nContent-Length: 999999999\r\n\r\n{", b"413"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_KEY.encode()
     + b"\r\nContent-Length: 200\r\n\r\n{\"model\":", b"408"),
    (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", b"401"),
], ids=["401-unread-body", "413", "408", "get-with-body"])
def test_an_answer_to_an_incompletely_read_body_closes_the_connection(s: Stack, request_head: bytes,
                                                                      status: bytes) -> None:
    with raw_conn(s) as sock:
        sock.sendall(request_head)
        answer = answer_then_eof(sock)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
    if status in (b"408", b"413"):
        assert b"\r\nconnection: close\r\n" in answer.lower()


def test_a_complete_body_keeps_the_connection_alive(s: Stack) -> None:
    body = b'{"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}'
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-wrong\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with raw_conn(s) as sock:
        for _ in range(2):  # the same connection answers twice
            sock.sendall(head + body)
            answer = b""
            while not answer.endswith(b"}}"):  # status line and body may arrive in separate segments
                part = sock.recv(4096)
                assert part, answer
                answer += part
            assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" not in answer.lower()


def test_gateway_still_serves_after_all_of_that(s: Stack) -> None:
    answer = s.client().chat.completions.create(model="demo/echo", messages=HELLO)
    assert answer.choices[0].message.content == "Say hello"


def test_sigterm_lets_an_open_stream_finish_then_exits(tmp_path, upstream: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    upstream.push(Stream([chunk("gpt-4o", {"content": f"{i} "}) for i in range(15)] + [chunk("gpt-4o", {}, "stop")],
                         delay=0.1))
    with running_gateway(tmp_path, gateway_yaml(upstream.url, server="shutdown_grace: 20s\n")) as gw:
        got: list[str] = []

        def consume() -> None:
            with httpx.stream("POST", gw.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                              json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as resp:
                got.extend(ln for ln in resp.iter_lines() if ln.startswith("data: "))

        t = threading.Thread(target=consume)
        t.start()
        deadline = time.monotonic() + 5
        while upstream.open_streams == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        gw.signal(signal.SIGTERM)
        time.sleep(0.2)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(gw.url + "/healthz", timeout=2)
        t.join(20)
        # uvicorn re-raises the captured SIGTERM once drained: death by SIGTERM, after the stream ended.
        assert gw.proc is not None and gw.proc.wait(20) in (0, -signal.SIGTERM)
        assert "Waiting for connections to close" in gw.logs() or "Finished server process" in gw.logs()
    assert got[-1] == "data: [DONE]"
    assert sum('"content"' in g for g in got) == 15


def test_a_stream_cut_at_shutdown_grace_ends_with_an_error_event(tmp_path, upstream: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    upstream.push(Stream([chunk("gpt-4o", {"content": f"{i} "}) for i in range(100)] + [chunk("gpt-4o", {}, "stop")],
                         delay=0.2))  # 20 s of stream, 1 s of grace
    with running_gateway(tmp_path, gateway_yaml(upstream.url, server="shutdown_grace: 1s\n")) as gw:
        got: list[str] = []
        with httpx.stream("POST", gw.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    got.append(line)
                    if len(got) == 2:
                        gw.signal(signal.SIGTERM)
        assert gw.proc is not None and gw.proc.wait(20) in (0, -signal.SIGTERM)
        logs = gw.logs()
    assert got[-1] != "data: [DONE]" and 2 <= len(got) < 100
    error = json.loads(got[-1][6:])["error"]
    assert error["code"] == "shutdown" and error["type"] == "service_unavailable"
    line = next(ln for ln in logs.splitlines() if " chat/completions key=team" in ln)
    assert " 503 chat/completions" in line and "error=shutdown" in line


def test_timeouts_total_is_a_deadline_for_the_whole_call(tmp_path, upstream: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    cfg = gateway_yaml(upstream.url).replace("    models: [gpt-4o, gpt-4o-mini]\n",
                                             "    models: [gpt-4o, gpt-4o-mini]\n    timeouts: {idle: 3s, total: 1s}\n")
    with running_gateway(tmp_path, cfg) as gw:
        # a stream that goes silent: the deadline passes while nothing arrives (not the idle timeout)
        upstream.push(Stream([chunk("gpt-4o", {"content": "a"}), chunk("gpt-4o", {}, "stop")], delay=6))
        with httpx.stream("POST", gw.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as resp:
            lines = [ln for ln in resp.iter_lines() if ln.startswith("data: ")]
        assert json.loads(lines[-1][6:])["error"]["code"] == "timeout", lines
        # headers that come later than the deadline (first_byte is 60 s)
        upstream.push(Reply(completion("gpt-4o"), delay=4))
        r = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                       json={"model": "up/gpt-4o", "messages": HELLO})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_an_exhausted_upstream_pool_is_503_overloaded_not_a_fall_over(tmp_path, upstream: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    cfg = gateway_yaml(upstream.url, routes="- name: busy\n  targets: [up/gpt-4o, demo/echo]\n").replace(
        "    models: [gpt-4o, gpt-4o-mini]\n",
        "    models: [gpt-4o, gpt-4o-mini]\n    max_connections: 1\n    timeouts: {connect: 1s}\n")
    with running_gateway(tmp_path, cfg) as gw:
        upstream.push(Reply(completion("gpt-4o"), delay=4))  # holds the only connection
        first: list[httpx.Response] = []
        t = threading.Thread(target=lambda: first.append(httpx.post(
            gw.url + "/v1/chat/completions", headers=AUTH, timeout=30,
            json={"model": "up/gpt-4o", "messages": HELLO})))
        t.start()
        deadline = time.monotonic() + 5
        while not upstream.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                       json={"model": "busy", "messages": HELLO})
        t.join(30)
        metrics = httpx.get(gw.url + "/metrics").text
    assert r.status_code == 503, r.text  # not echo's answer: a busy pool is no reason to fall over
    assert r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"
    assert first[0].status_code == 200
    assert 'vte_upstream_errors_total{provider="up",reason="pool"} 1.0' in metrics
