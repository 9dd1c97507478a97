"""Window arithmetic: fixed minute windows, calendar budget periods (UTC), reset durations.

All times are integer milliseconds since the epoch, so the memory and the Redis store, and
every replica, cut the same windows from the same clock reading.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

MINUTE_MS = 60_000
DAY_MS = 86_400_000
# A period's id names its first day; "total" never rolls over.
PERIODS = ("day", "week", "month", "total")


class Window(NamedTuple):
    """One window: its id (part of the counter's name) and the milliseconds until it ends."""

    id: int
    reset_ms: int


def minute_window(now_ms: int, size_ms: int = MINUTE_MS) -> Window:
    """The fixed window of ``size_ms`` that holds ``now_ms``; windows start at multiples of the size."""
    index = now_ms // size_ms
    return Window(index, (index + 1) * size_ms - now_ms)


class Period(NamedTuple):
    """A budget period: its id (``2026-12-02``, ``2026-W49``, ``2026-12``, ``total``) and the
    milliseconds until it ends (``None`` for ``total``)."""

    id: str
    reset_ms: int | None


def budget_period(now_ms: int, kind: str) -> Period:
    """The calendar period (UTC) of ``kind`` that holds ``now_ms``."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "day":
        return Period(day.strftime("%Y-%m-%d"), _until(now_ms, day + timedelta(days=1)))
    if kind == "week":
        monday = day - timedelta(days=day.weekday())
        year, week, _ = monday.isocalendar()
        return Period(f"{year}-W{week:02d}", _until(now_ms, monday + timedelta(days=7)))
    if kind == "month":
        first = day.replace(day=1)
        following = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(
            month=first.month + 1)
        return Period(first.strftime("%Y-%m"), _until(now_ms, following))
    if kind == "total":
        return Period("total", None)
    raise ValueError(f"unknown budget period {kind!r}")


def _until(now_ms: int, end: datetime) -> int:
    return int(end.timestamp() * 1000) - now_ms


def seconds_up(ms: int) -> int:
    """Whole seconds, rounded up, at least 1: a ``Retry-After`` after which a retry can succeed."""
    return max(1, -(-ms // 1000))


def format_reset(ms: int) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    if ms < MINUTE_MS:  # the common case (a minute window): 6 significant digits hold every ms
        return f"{ms / 1000:g}s"
    seconds = ms / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text
