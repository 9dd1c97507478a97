"""Prices and spend: USD per 1M tokens by exposed model name or glob, costs in nano-USD.

Spend is counted in integer nano-USD (1e-9 USD) so that both stores add exactly (Redis
``HINCRBY``) and one token of the cheapest model still costs something countable.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

from vte_proxy.config import GatewayConfig
from vte_proxy.config_limits import Price
from vte_proxy.routing import RoutingTable, is_glob

NANO = 1_000_000_000
# A price is USD per 1M tokens: tokens x price x 1e9 / 1e6 nano-USD.
_PER_TOKEN = NANO / 1_000_000


class Usage(NamedTuple):
    """Tokens one exchange used; ``cached`` is the part of ``prompt`` served from the cache."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    @classmethod
    def from_wire(cls, usage: Mapping[str, Any]) -> Usage:
        """From an OpenAI (chat, completions, embeddings, Responses) or Anthropic ``usage`` object."""
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
        if "cache_read_input_tokens" in usage:  # Anthropic counts cache reads and writes apart from input
            cached = _int(usage.get("cache_read_input_tokens"))
            prompt += cached + _int(usage.get("cache_creation_input_tokens"))
        return cls(prompt, completion, cached)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class PriceBook:
    """The ``prices`` of one config: an exact name wins, then the first glob in file order."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._exact = {name: p for name, p in prices.items() if not is_glob(name)}
        self._globs = [(name, p) for name, p in prices.items() if is_glob(name)]
        self._memo: dict[str, Price | None] = {}

    def __bool__(self) -> bool:
        return bool(self._exact or self._globs)

    def price(self, model: str) -> Price | None:
        """The price of an exposed model name, or ``None`` when no entry matches."""
        if model not in self._memo:
            found = self._exact.get(model)
            if found is None:
                found = next((p for name, p in self._globs if fnmatchcase(model, name)), None)
            self._memo[model] = found
        return self._memo[model]

    def cost_nano(self, model: str, usage: Usage) -> int:
        """What ``usage`` of ``model`` costs, in nano-USD (0 when the model has no price)."""
        price = self.price(model)
        if price is None:
            return 0
        cached = min(usage.cached, usage.prompt)
        cached_price = price.input if price.cached_input is None else price.cached_input
        usd_e6 = (usage.prompt - cached) * price.input + cached * cached_price + usage.completion * price.output
        return round(usd_e6 * _PER_TOKEN)


def usable_models(table: RoutingTable, allow: tuple[str, ...]) -> list[str]:
    """The exposed models (route targets included) a key with allow-list ``allow`` may reach."""
    out: dict[str, None] = {}
    for entry in table.entries.values():
        if any(fnmatchcase(entry.name, g) for g in allow):
            out.update((t.exposed, None) for t in entry.targets)
    return list(out)


def budget_problems(config: GatewayConfig, table: RoutingTable) -> list[tuple[str, str]]:
    """(place, message) for each key with a budget that may use a model without a price.

    Models that discovery adds at run time cannot be checked here; a key with a budget is
    refused those that have no price (see :mod:`vte_proxy.limits.limiter`).
    """
    book = PriceBook(config.prices)
    problems = []
    for i, key in enumerate(config.keys):
        if key.budget is None:
            continue
        if not book:
            problems.append((f"keys[{i}].budget", "a budget needs prices: add a prices entry for its models"))
            continue
        missing = [m for m in usable_models(table, key.models) if book.price(m) is None]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            problems.append((f"keys[{i}].budget", f"no price for {shown} (a key with a budget may only use "
                                                  "priced models: add them to prices, or narrow keys[].models)"))
    return problems
