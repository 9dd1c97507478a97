"""Accounting (vte_proxy.accounting): what a finished request counts, once; the in-flight gauge
across fall-over; the live log and its subscribers; the text of a request's log line.

Metrics live in this process's registry: each test uses its own provider name and compares
values before and after.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from tests.support import metric
from vte_proxy.accounting import Accounting, RequestLine, safe_text, usage_tokens
from vte_proxy.record import RequestRecord

_names = itertools.count()


@pytest.fixture
def provider() -> str:
    """A provider name no other test counts against."""
    return f"acct{next(_names)}"


def record(provider: str, *, status: int = 200, model: str = "p/m", key: str = "team", stream: bool = False,
           ttft: bool = False, usage: dict[str, Any] | None = None, answered: bool = True) -> RequestRecord:
    rec = RequestRecord.start("chat/completions")
    rec.key, rec.model, rec.requested, rec.provider = key, model, model, provider
    rec.status, rec.stream = status, stream
    if ttft:
        rec.first_byte()
    if answered:
        rec.got_usage(usage)
    return rec


def count(name: str, provider: str, **labels: str) -> float:
    return metric(name, provider=provider, **labels)


def test_finish_counts_a_request_its_duration_ttft_and_tokens_once(provider: str) -> None:
    acc = Accounting()
    rec = record(provider, stream=True, ttft=True, usage={"prompt_tokens": 5, "completion_tokens": 2})
    acc.finish(rec)
    assert count("vte_requests_total", provider, endpoint="chat/completions", model="p/m", key="team",
                 code="200") == 1
    assert count("vte_request_duration_seconds_count", provider, endpoint="chat/completions", model="p/m") == 1
    assert count("vte_time_to_first_token_seconds_count", provider, model="p/m") == 1
    assert count("vte_tokens_total", provider, model="p/m", key="team", type="prompt") == 5
    assert count("vte_tokens_total", provider, model="p/m", key="team", type="completion") == 2
    assert count("vte_usage_missing_total", provider) == 0
    assert acc.finished == 1 and rec.duration >= 0
    [entry] = acc.recent
    assert (entry["prompt_tokens"], entry["completion_tokens"], entry["provider"]) == (5, 2, provider)


def test_no_ttft_for_a_json_answer(provider: str) -> None:
    Accounting().finish(record(provider, usage={"prompt_tokens": 1}))
    assert count("vte_time_to_first_token_seconds_count", provider, model="p/m") == 0


def test_responses_api_usage_is_counted_too(provider: str) -> None:
    Accounting().finish(record(provider, usage={"input_tokens": 4, "output_tokens": 6}))
    assert count("vte_tokens_total", provider, model="p/m", key="team", type="prompt") == 4
    assert count("vte_tokens_total", provider, model="p/m", key="team", type="completion") == 6


def test_usage_missing_is_counted_only_for_answered_requests(provider: str) -> None:
    acc = Accounting()
    acc.finish(record(provider, usage=None))                           # answered, no usage: counted
    acc.finish(record(provider, usage={"total_tokens": 3}))            # nothing usable: counted
    acc.finish(record(provider, status=502, answered=False))           # failed before an answer: not
    assert count("vte_usage_missing_total", provider) == 2
    assert count("vte_tokens_total", provider, model="p/m", key="team", type="prompt") == 0
    assert [e["prompt_tokens"] for e in acc.recent] == [None, None, None]


@pytest.mark.parametrize(("usage", "tokens"), [
    ({"prompt_tokens": 3, "completion_tokens": 4}, (3, 4)),
    ({"input_tokens": 3, "output_tokens": 4}, (3, 4)),
    ({"prompt_tokens": 0}, (0, None)),
    ({"prompt_tokens": True, "completion_tokens": -1}, (None, None)),
    ({"prompt_tokens": "3", "completion_tokens": 1.5}, (None, None)),
])
def test_usage_tokens_takes_only_counts(usage: dict[str, Any], tokens: tuple[int | None, int | None]) -> None:
    assert usage_tokens(usage) == tokens


def test_an_unfinished_status_is_counted_as_an_internal_error(provider: str) -> None:
    acc = Accounting()
    acc.finish(record(provider, status=0, answered=False))
    [entry] = acc.recent
    assert (entry["status"], entry["error"]) == (500, "internal_error")
    assert count("vte_requests_total", provider, endpoint="chat/completions", model="p/m", key="team",
                 code="500") == 1


def test_the_in_flight_gauge_follows_dispatch_across_fall_over_and_returns_to_zero() -> None:
    first, second = f"acct{next(_names)}", f"acct{next(_names)}"
    acc = Accounting()
    rec = RequestRecord.start("chat/completions")

    def in_flight() -> tuple[float, float]:
        return metric("vte_in_flight_requests", provider=first), metric("vte_in_flight_requests", provider=second)

    acc.dispatched(rec, first)
    assert in_flight() == (1, 0) and rec.provider == first
    acc.dispatched(rec, first)  # a retry on the same provider
    assert in_flight() == (1, 0)
    acc.dispatched(rec, second)  # fall-over to the next target
    assert in_flight() == (0, 1) and rec.provider == second
    rec.status = 200
    acc.finish(rec)
    assert in_flight() == (0, 0)


def test_a_request_never_dispatched_moves_no_gauge(provider: str) -> None:
    acc = Accounting()
    rec = RequestRecord.start("chat/completions")
    rec.failed(401, "invalid_api_key")
    acc.finish(rec)
    assert metric("vte_in_flight_requests", provider="-") == 0
    [entry] = acc.recent
    assert entry["provider"] == "-"


def test_the_live_log_keeps_the_newest_and_tells_its_subscribers(provider: str) -> None:
    acc = Accounting(size=2)
    seen: list[dict[str, Any]] = []
    acc.subscribers.add(seen.append)
    for model in ("p/a", "p/b", "p/c"):
        acc.finish(record(provider, model=model))
    assert [e["model"] for e in acc.recent] == ["p/b", "p/c"]
    assert [e["model"] for e in seen] == ["p/a", "p/b", "p/c"] and seen[-1] is acc.recent[-1]
    acc.subscribers.discard(seen.append)
    acc.finish(record(provider, model="p/d"))
    assert len(seen) == 3 and acc.finished == 4


def test_a_subscriber_may_unsubscribe_while_being_told(provider: str) -> None:
    acc = Accounting()
    seen: list[str] = []

    def once(entry: dict[str, Any]) -> None:
        seen.append(entry["model"])
        acc.subscribers.discard(once)

    acc.subscribers.add(once)
    acc.finish(record(provider))
    acc.finish(record(provider))
    assert seen == ["p/m"]


# ---------------------------------------------------------------- the log line
def line(**fields: Any) -> str:
    entry = {"time": 0.0, "key": "team", "model": "up/gpt-4o", "provider": "up", "endpoint": "chat/completions",
             "status": 200, "stream": False, "duration_ms": 12.3, "ttft_ms": None, "prompt_tokens": 7,
             "completion_tokens": 3, "error": None}
    return str(RequestLine({**entry, **fields}))


def test_request_line_names_the_request() -> None:
    assert line() == "200 chat/completions key=team model=up/gpt-4o provider=up duration=12.3ms tokens=7+3"
    assert line(stream=True, ttft_ms=4.1) == ("200 chat/completions key=team model=up/gpt-4o provider=up "
                                              "duration=12.3ms ttft=4.1ms tokens=7+3 stream")


def test_request_line_of_a_failure() -> None:
    assert line(status=401, key="-", model="unknown", provider="-", prompt_tokens=None, completion_tokens=None,
                error="invalid_api_key") == ("401 chat/completions key=- model=unknown provider=- duration=12.3ms "
                                             "tokens=- error=invalid_api_key")
    assert line(prompt_tokens=None, completion_tokens=2).endswith("tokens=0+2")


def test_request_line_quotes_client_text_so_it_cannot_forge_a_line() -> None:
    forged = "bad\nmodel\r\n2025-01-01 FORGED"
    text = line(status=404, model=forged)
    assert "\n" not in text and "\r" not in text
    assert f"model={json.dumps(forged)} " in text
    assert safe_text("a b") == '"a b"' and safe_text('x"y') == '"x\\"y"' and safe_text("") == '""'
    assert safe_text("up/gpt-4o") == "up/gpt-4o"
