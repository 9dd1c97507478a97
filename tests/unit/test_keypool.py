"""The upstream key pool: weighted picks, 429 cool-downs, 401/403 take-outs, Retry-After."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from vte_proxy.keypool import MAX_COOLDOWN, KeyPool, PoolKey, parse_retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(*weights: float, clock: Clock | None = None) -> KeyPool:
    keys = [PoolKey(f"k{i}", f"secret-{i}", w) for i, w in enumerate(weights)]
    return KeyPool(keys, 30.0, clock=clock or Clock(), rng=random.Random(7))


def test_picks_follow_the_weights() -> None:
    p = pool(3, 1)
    picks = Counter(p.pick().name for _ in range(4000))  # type: ignore[union-attr]
    assert 0.70 < picks["k0"] / 4000 < 0.80


def test_a_cooling_key_is_skipped_until_its_time_is_up() -> None:
    clock = Clock()
    p = pool(1, 1, clock=clock)
    assert p.cool("k0", 5.0) == 5.0
    assert {p.pick().name for _ in range(50)} == {"k1"}  # type: ignore[union-attr]
    assert p.states() == {"k0": "cooling", "k1": "ready"}
    assert p.seconds_left() == {"k0": 5.0}
    clock.now += 5.0
    assert p.states()["k0"] == "ready"


def test_a_429_without_retry_after_uses_the_pool_cooldown() -> None:
    p = pool(1)
    assert p.cool("k0") == 30.0
    assert p.retry_after() == 30.0


def test_a_shorter_retry_after_does_not_shorten_a_longer_cool_down() -> None:
    p = pool(1)
    p.cool("k0", 60.0)
    p.cool("k0", 1.0)
    assert p.retry_after() == 60.0


def test_a_rejected_key_stays_out() -> None:
    clock = Clock()
    p = pool(1, 1, clock=clock)
    p.disable("k1")
    clock.now += 1e6
    assert {p.pick().name for _ in range(50)} == {"k0"}  # type: ignore[union-attr]
    assert p.states() == {"k0": "ready", "k1": "disabled"}


def test_when_every_key_is_cooling_the_earliest_retry_after_is_given() -> None:
    clock = Clock()
    p = pool(1, 1, 1, clock=clock)
    p.cool("k0", 20.0)
    p.cool("k1", 7.0)
    p.disable("k2")
    assert p.pick() is None
    assert p.retry_after() == 7.0
    clock.now += 7.0
    assert p.pick().name == "k1"  # type: ignore[union-attr]


def test_all_disabled_means_no_key_and_no_retry_after() -> None:
    p = pool(1)
    p.disable("k0")
    assert p.pick() is None
    assert p.retry_after() is None


def test_exclude_skips_keys_this_request_already_tried() -> None:
    p = pool(1, 1)
    assert p.pick(exclude=["k0"]).name == "k1"  # type: ignore[union-attr]
    assert p.pick(exclude=["k0", "k1"]) is None


def test_the_secret_is_not_in_the_repr() -> None:
    p = pool(1)
    assert "secret" not in repr(p.keys) and "k0" in repr(p.keys)


def test_an_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError):
        KeyPool([], 1.0)


@pytest.mark.parametrize(("value", "seconds"), [
    ("12", 12.0), (" 1.5 ", 1.5), ("-4", 0.0), ("", None), (None, None), ("soon", None), ("nan", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0), ("99999999", MAX_COOLDOWN),
])
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=1445412420.0) == seconds


def test_a_reload_keeps_the_standing_of_unchanged_keys_only() -> None:
    clock = Clock()
    old = KeyPool([PoolKey("a", "sa"), PoolKey("b", "sb"), PoolKey("c", "sc")], 30.0, clock=clock)
    old.cool("a", 10.0)
    old.disable("b")
    old.disable("c")
    new = KeyPool([PoolKey("a", "sa"), PoolKey("b", "sb"), PoolKey("c", "sc-fixed"), PoolKey("d", "sd")], 30.0,
                  clock=clock)
    new.adopt(old)
    assert new.states() == {"a": "cooling", "b": "disabled", "c": "ready", "d": "ready"}
    assert new.seconds_left() == {"a": 10.0}
