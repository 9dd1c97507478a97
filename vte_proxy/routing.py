"""The routing table: exposed model names -> ordered (provider, upstream model) targets.

An exposed name is ``prefix/model`` (the bare id when the prefix is empty). A route is an
exposed name with several targets tried in order. The table is built once per config (and per
discovery result) and only read on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from vte_proxy.config import GatewayConfig, ProviderConfig


@dataclass(frozen=True, slots=True)
class Target:
    """One place a request can go: the provider's name and the model id it knows."""

    exposed: str
    provider: str
    upstream_model: str


@dataclass(frozen=True, slots=True)
class Entry:
    """What an exposed name resolves to; ``route`` is true for a fall-over route."""

    name: str
    targets: tuple[Target, ...]
    route: bool = False


class RoutingError(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def exposed_name(provider: ProviderConfig, model: str) -> str:
    return f"{provider.prefix}/{model}" if provider.prefix else model


def provider_models(provider: ProviderConfig, discovered: tuple[str, ...] | None) -> list[str]:
    """The upstream ids a provider serves: its literal ``models``, plus discovered ids that
    match ``discover.include`` (and the globs in ``models``, when there are any) and no
    ``discover.exclude`` pattern."""
    literal = [m for m in provider.models if not is_glob(m)]
    if not discovered:
        return literal
    globs = [m for m in provider.models if is_glob(m)]
    d = provider.discover
    found = [
        m for m in discovered
        if any(fnmatchcase(m, p) for p in d.include)
        and not any(fnmatchcase(m, p) for p in d.exclude)
        and (not globs or any(fnmatchcase(m, g) for g in globs))
    ]
    return list(dict.fromkeys([*literal, *found]))


@dataclass(frozen=True)
class RoutingTable:
    entries: Mapping[str, Entry]
    # Per provider, how many models it exposes (for the models-available gauge).
    counts: Mapping[str, int] = field(default_factory=dict)

    def resolve(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def names(self) -> list[str]:
        return list(self.entries)


def build_routing(config: GatewayConfig, discovered: Mapping[str, tuple[str, ...]]) -> RoutingTable:
    """Build the table; raise :class:`RoutingError` naming every conflict's place."""
    entries: dict[str, Entry] = {}
    places: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    for pi, provider in enumerate(config.providers):
        models = provider_models(provider, discovered.get(provider.name))
        counts[provider.name] = len(models)
        for mi, model in enumerate(models):
            name = exposed_name(provider, model)
            place = f"providers[{pi}].models[{mi}]" if mi < len(provider.models) else f"providers[{pi}].discover"
            if name in entries:
                problems.append((place, f"exposed model {name!r} is already claimed by {places[name]}"))
                continue
            entries[name] = Entry(name, (Target(name, provider.name, model),))
            places[name] = place
    for ri, route in enumerate(config.routes):
        place = f"routes[{ri}].name"
        if route.name in entries:
            problems.append((place, f"route {route.name!r} is already claimed by {places[route.name]}"))
            continue
        targets: list[Target] = []
        for ti, t in enumerate(route.targets):
            entry = entries.get(t)
            if entry is None or entry.route:
                # A discovered model may appear later; only flag what can never resolve.
                if not _may_be_discovered(config, t):
                    problems.append((f"routes[{ri}].targets[{ti}]", f"{t!r} is not an exposed model"))
                continue
            targets.extend(entry.targets)
        entries[route.name] = Entry(route.name, tuple(targets), route=True)
        places[route.name] = place
    if problems:
        raise RoutingError(problems)
    return RoutingTable(entries, counts)


def _may_be_discovered(config: GatewayConfig, name: str) -> bool:
    for p in config.providers:
        if not p.discover.enabled:
            continue
        if p.prefix and name.startswith(p.prefix + "/"):
            return True
        if not p.prefix:
            return True
    return False
