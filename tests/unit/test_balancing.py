"""Route strategies (pure ordering) and the circuit breaker."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from vte_proxy.balancing import DECAY, Balancer, CircuitBreaker, TargetStats, order
from vte_proxy.config import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stats(*in_flight: int) -> list[TargetStats]:
    return [TargetStats(in_flight=n) for n in in_flight]


def test_fallback_keeps_the_config_order() -> None:
    assert order("fallback", [1, 1, 1], stats(5, 0, 0), random.Random(1), 0.0) == [0, 1, 2]


def test_weighted_first_choices_follow_the_weights_and_every_target_stays_in_the_order() -> None:
    rng = random.Random(3)
    firsts: Counter[int] = Counter()
    for _ in range(6000):
        o = order("weighted", [3, 1, 2], stats(0, 0, 0), rng, 0.0)
        assert sorted(o) == [0, 1, 2]
        firsts[o[0]] += 1
    assert [firsts[i] / 6000 for i in range(3)] == pytest.approx([0.5, 1 / 6, 1 / 3], abs=0.03)


def test_least_busy_orders_by_requests_in_flight_ties_at_random() -> None:
    rng = random.Random(5)
    assert order("least_busy", [1, 1, 1], stats(4, 0, 2), rng, 0.0) == [1, 2, 0]
    firsts = Counter(order("least_busy", [1, 1, 1], stats(1, 0, 0), rng, 0.0)[0] for _ in range(400))
    assert set(firsts) == {1, 2}


def test_peak_ewma_takes_peaks_at_once_and_decays_drops() -> None:
    s = TargetStats()
    s.observe(0.1, 0.0)
    s.observe(2.0, 1.0)
    assert s.ewma == 2.0  # a peak counts at once
    s.observe(0.1, 1.0 + DECAY)
    assert 0.1 < s.ewma < 2.0 * 0.4  # one decay time later it has mostly followed


def test_latency_prefers_the_faster_target_of_the_two_choices() -> None:
    fast, slow = TargetStats(), TargetStats()
    fast.observe(0.05, 0.0)
    slow.observe(1.0, 0.0)
    rng = random.Random(9)
    assert all(order("latency", [1, 1], [slow, fast], rng, 0.0) == [1, 0] for _ in range(50))


def test_latency_counts_requests_in_flight_and_tries_unmeasured_targets() -> None:
    a, b = TargetStats(), TargetStats()
    a.observe(0.1, 0.0)
    b.observe(0.1, 0.0)
    a.in_flight = 5
    assert order("latency", [1, 1], [a, b], random.Random(1), 0.0) == [1, 0]
    fresh = TargetStats()
    assert order("latency", [1, 1], [a, fresh], random.Random(1), 0.0)[0] == 1


def test_an_idle_slow_targets_estimate_ages_so_it_is_tried_again() -> None:
    slow, fast = TargetStats(), TargetStats()
    slow.observe(1.0, 0.0)
    fast.observe(0.1, 60.0)
    assert slow.cost(60.0) < fast.cost(60.0)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker(3, 10.0, Clock())
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    assert b.retry_after() == 10.0


def test_half_open_lets_one_probe_through_and_success_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 10.0, clock)
    b.failure()
    clock.now += 10.0
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # only one probe at a time
    b.success()
    assert b.state == "closed" and b.allow()


def test_a_failed_probe_opens_again_for_another_pause() -> None:
    clock = Clock()
    b = CircuitBreaker(2, 10.0, clock)
    b.failure()
    b.failure()
    clock.now += 10.0
    assert b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.now += 10.0
    assert b.allow()


def test_a_probe_that_never_reports_is_replaced_after_a_pause() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 10.0, clock)
    b.failure()
    clock.now += 10.0
    assert b.allow()
    clock.now += 10.0
    assert b.allow()


def test_failures_zero_never_opens() -> None:
    b = CircuitBreaker(0, 10.0, Clock())
    for _ in range(100):
        b.failure()
    assert b.state == "closed"


def test_balancer_keeps_slots_by_name_and_renews_a_changed_breaker() -> None:
    bal = Balancer(clock=Clock(), rng=random.Random(1))
    slot = bal.slot("smart", "a/x", Breaker(failures=1, pause=5))
    slot.breaker.failure()
    assert bal.slot("smart", "a/x", Breaker(failures=1, pause=5)).breaker.state == "open"
    assert bal.slot("smart", "a/x", Breaker(failures=2, pause=5)).breaker.state == "closed"
    bal.slot("smart", "b/y")
    bal.keep([("smart", "a/x")])
    assert list(bal.breakers()) == [("smart", "a/x")]


def test_balancer_order_uses_each_targets_stats() -> None:
    bal = Balancer(clock=Clock(), rng=random.Random(1))
    bal.slot("r", "a").stats.in_flight = 3
    assert bal.order("r", "least_busy", ["a", "b"], [1, 1]) == [1, 0]
