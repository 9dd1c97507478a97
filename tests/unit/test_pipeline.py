"""The pipeline below the exchange (vte_proxy.pipeline): resolve (404/403/503), the stream policy,
and the order and rules of tries: retries on connect errors, timeouts, 502/503/504; the next
target also on 429 and other 5xx; nothing more on a 4xx.

``dispatch`` runs on a GatewayState built from a config whose providers reach a scripted
upstream as ``http://upstream.test:PORT`` through the injected loopback connector.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from tests.support import (
    CLIENT_KEY,
    HELLO,
    LIMITED_KEY,
    Hang,
    Reply,
    ScriptedUpstream,
    free_port,
    loopback_connector,
    metric,
    upstream_test_url,
)
from vte_proxy.auth import ClientKey
from vte_proxy.errors import GatewayError, UpstreamError
from vte_proxy.limits import Ticket
from vte_proxy.loader import load_config
from vte_proxy.pipeline import Request, dispatch, resolve, upstream_streams
from vte_proxy.record import RequestRecord
from vte_proxy.routing import Entry
from vte_proxy.shaping import JsonReply
from vte_proxy.state import GatewayState, build_state


def provider(name: str, url: str, more: str = "") -> str:
    return (f"  - name: {name}\n    type: openai\n    base_url: {url}\n    prefix: {name}\n    models: [m]\n"
            f"    headers: {{X-Provider: {name}}}\n{more}")


def config(url: str) -> str:
    dead = f"http://upstream.test:{free_port()}/v1"
    return (f"version: 1\nkeys:\n  - name: team\n    key: {CLIENT_KEY}\n  - name: limited\n    key: {LIMITED_KEY}\n"
            "    models: [\"demo/*\"]\nproviders:\n"
            + provider("a", url, "    retries: 2\n")
            + provider("b", url)
            + provider("c", url)
            + provider("dead", dead, "    retries: 1\n    timeouts: {connect: 1s}\n")
            + provider("slow", url, "    retries: 1\n    timeouts: {first_byte: 0.3s}\n")
            + provider("fs", url, "    stream_mode: force_stream\n")
            + provider("fn", url, "    stream_mode: force_non_stream\n")
            + "  - name: demo\n    type: echo\n    prefix: demo\n    models: [echo]\n"
            + "routes:\n  - name: abc\n    targets: [a/m, b/m, c/m]\n  - name: ab\n    targets: [a/m, b/m]\n"
            + "  - name: dead-c\n    targets: [dead/m, c/m]\n")


class Tracker:
    """What the exchange would be told: the providers a request was sent to, in order."""

    def __init__(self) -> None:
        self.record = RequestRecord.start("chat/completions")
        self.sent: list[str] = []
        self.tickets: list[Ticket] = []
        self.routes: list[tuple[str, str]] = []

    def dispatched(self, provider: str) -> None:
        self.sent.append(provider)

    def admitted(self, ticket: Ticket) -> None:
        self.tickets.append(ticket)

    def routed(self, route: str, target: str) -> None:
        self.routes.append((route, target))


@pytest.fixture
def up(module_upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    module_upstream.reset()
    yield module_upstream
    assert not module_upstream.script, "a scripted reply was not used"


@pytest.fixture
async def state(up: ScriptedUpstream, tmp_path: Path) -> AsyncIterator[GatewayState]:
    """The state of the config above (built in the test's event loop: its connection pools live there)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config(upstream_test_url(up)))
    state = build_state(load_config(path), {}, loopback_connector)
    yield state
    await state.providers.aclose()


def key(state: GatewayState, presented: str = CLIENT_KEY) -> ClientKey:
    found = state.keys.authenticate(presented)
    assert found is not None
    return found


def request(state: GatewayState, model: str, *, stream: bool = False, endpoint: str = "chat/completions",
            presented: str = CLIENT_KEY) -> Request:
    return Request(endpoint, {"model": model, "messages": HELLO, "stream": stream}, key(state, presented), stream)


async def answer(state: GatewayState, model: str, tracker: Tracker | None = None) -> dict[str, Any]:
    reply = await dispatch(state, request(state, model), tracker or Tracker())
    assert isinstance(reply, JsonReply)
    body: dict[str, Any] = orjson.loads(reply.body)
    return body


async def refused(state: GatewayState, model: str, tracker: Tracker | None = None) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await dispatch(state, request(state, model), tracker or Tracker())
    return info.value


def providers_called(up: ScriptedUpstream) -> list[str]:
    return [r.headers["x-provider"] for r in up.requests]


# ---------------------------------------------------------------- resolve
def test_an_unknown_model_is_404_and_recorded_as_requested(state: GatewayState) -> None:
    rec = RequestRecord.start("chat/completions")
    with pytest.raises(GatewayError) as info:
        resolve(state, request(state, "nope/m"), rec)
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    assert (rec.requested, rec.model) == ("nope/m", "unknown")  # client text never becomes a label


def test_a_model_outside_the_keys_allow_list_is_403(state: GatewayState) -> None:
    rec = RequestRecord.start("chat/completions")
    with pytest.raises(GatewayError) as info:
        resolve(state, request(state, "a/m", presented=LIMITED_KEY), rec)
    assert (info.value.status, info.value.code) == (403, "model_not_allowed")
    assert rec.model == "a/m"
    assert resolve(state, request(state, "demo/echo", presented=LIMITED_KEY), rec).name == "demo/echo"


def test_an_entry_without_targets_is_503(state: GatewayState) -> None:
    class Empty:
        def resolve(self, name: str) -> Entry:
            return Entry(name, ())

    class Stub:
        routing = Empty()

    with pytest.raises(GatewayError) as info:
        resolve(cast(GatewayState, Stub()), request(state, "gone"), RequestRecord.start("chat/completions"))
    assert (info.value.status, info.value.code) == (503, "no_target")


# ---------------------------------------------------------------- stream policy
@pytest.mark.parametrize(("model", "endpoint", "client_stream", "upstream_stream"), [
    ("a/m", "chat/completions", False, False),
    ("a/m", "chat/completions", True, True),
    ("fs/m", "chat/completions", False, True),      # force_stream
    ("fs/m", "chat/completions", True, True),
    ("fn/m", "chat/completions", True, False),      # force_non_stream
    ("fn/m", "completions", True, True),            # the policy is for chat only
    ("fs/m", "responses", False, False),
    ("a/m", "embeddings", True, False),             # never streams
])
def test_upstream_streams_follows_the_policy_then_the_client(state: GatewayState, model: str, endpoint: str,
                                                             client_stream: bool, upstream_stream: bool) -> None:
    [target] = state.routing.entries[model].targets
    got = upstream_streams(state, request(state, model, stream=client_stream, endpoint=endpoint), target)
    assert got is upstream_stream


async def test_force_stream_calls_the_upstream_streaming_and_answers_json(state: GatewayState,
                                                                         up: ScriptedUpstream) -> None:
    body = await answer(state, "fs/m")
    assert up.last().body["stream"] is True and body["object"] == "chat.completion" and body["model"] == "fs/m"


# ---------------------------------------------------------------- tries
async def test_targets_are_tried_in_order_on_429_and_5xx(state: GatewayState, up: ScriptedUpstream) -> None:
    up.push(Reply({"error": {"message": "slow down"}}, 429), Reply({"error": {"message": "boom"}}, 500))
    tracker = Tracker()
    body = await answer(state, "abc", tracker)
    assert tracker.sent == ["a", "b", "c"] and providers_called(up) == ["a", "b", "c"]  # no retry on 429/500
    assert body["model"] == "abc" and tracker.record.model == "abc"


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_provider_retries_502_503_504(state: GatewayState, up: ScriptedUpstream, status: int) -> None:
    up.push(Reply({"error": {"message": "x"}}, status), Reply({"error": {"message": "x"}}, status))
    tracker = Tracker()
    assert (await answer(state, "a/m", tracker))["model"] == "a/m"
    assert providers_called(up) == ["a", "a", "a"] and tracker.sent == ["a"]


async def test_retries_run_out_then_the_next_target_is_tried(state: GatewayState, up: ScriptedUpstream) -> None:
    up.push(*[Reply({"error": {"message": "x"}}, 503)] * 3)
    tracker = Tracker()
    await answer(state, "abc", tracker)
    assert providers_called(up) == ["a", "a", "a", "b"] and tracker.sent == ["a", "b"]


async def test_a_connect_error_is_retried_then_falls_over(state: GatewayState, up: ScriptedUpstream) -> None:
    before = metric("vte_upstream_errors_total", provider="dead", reason="connect")
    tracker = Tracker()
    assert (await answer(state, "dead-c", tracker))["model"] == "dead-c"
    assert tracker.sent == ["dead", "c"] and providers_called(up) == ["c"]
    assert metric("vte_upstream_errors_total", provider="dead", reason="connect") == before + 2  # retries: 1


async def test_a_first_byte_timeout_is_retried(state: GatewayState, up: ScriptedUpstream) -> None:
    up.push(Hang(3))
    assert (await answer(state, "slow/m"))["model"] == "slow/m"
    assert providers_called(up) == ["slow", "slow"]


@pytest.mark.parametrize("status", [429, 500])
async def test_429_and_500_are_not_retried_on_the_same_provider(state: GatewayState, up: ScriptedUpstream,
                                                                status: int) -> None:
    up.push(Reply({"error": {"message": "x"}}, status))
    err = await refused(state, "a/m")
    assert isinstance(err, UpstreamError) and err.status == status
    assert providers_called(up) == ["a"]


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_a_client_error_is_neither_retried_nor_fallen_over(state: GatewayState, up: ScriptedUpstream,
                                                                  status: int) -> None:
    up.push(Reply({"error": {"message": "bad request", "code": "bad"}}, status))
    tracker = Tracker()
    err = await refused(state, "ab", tracker)
    assert err.status == status and orjson.loads(err.json())["error"]["code"] == "bad"
    assert providers_called(up) == ["a"] and tracker.sent == ["a"]


async def test_the_last_failure_is_raised_when_every_target_failed(state: GatewayState, up: ScriptedUpstream) -> None:
    up.push(Reply({"error": {"message": "x"}}, 429), Reply({"error": {"message": "last"}}, 500))
    err = await refused(state, "ab")
    assert isinstance(err, UpstreamError) and (err.status, err.provider) == (500, "b")


async def test_provider_request_has_the_upstream_model_and_only_allow_listed_headers(state: GatewayState,
                                                                                     up: ScriptedUpstream) -> None:
    req = request(state, "b/m")
    req.headers = {"x-request-id": "r-1"}
    await dispatch(state, req, Tracker())
    sent = up.last()
    assert sent.body["model"] == "m" and sent.headers["x-request-id"] == "r-1"
    assert "authorization" not in sent.headers  # the provider has no key; the client's is never forwarded

