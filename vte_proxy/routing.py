"""The routing table: exposed model names -> ordered (provider, upstream model) targets.

An exposed name is ``prefix/model`` (the bare id when the prefix is empty). A route is an
exposed name with several targets tried in order. The table is built once per config (and per
discovery result) and only read on the hot path.

Names written in the config (literal models, route names) are checked strictly: a name claimed
twice is a config error. Names that come from discovery are looked at when a provider's list
arrives: one that collides with a name already taken is skipped (and reported), so one odd id
on an upstream never blocks the rest of its list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from vte_proxy.config import Breaker, GatewayConfig, ProviderConfig, Strategy


@dataclass(frozen=True, slots=True)
class Target:
    """One place a request can go: the provider's name and the model id it knows."""

    exposed: str
    provider: str
    upstream_model: str


@dataclass(frozen=True, slots=True)
class Entry:
    """What an exposed name resolves to; ``route`` is true for a fall-over route.

    A route's ``strategy`` orders its targets per request (:mod:`vte_proxy.balancing`);
    ``weights`` has one weight per target; ``breaker`` guards each target.
    """

    name: str
    targets: tuple[Target, ...]
    route: bool = False
    strategy: Strategy = "fallback"
    weights: tuple[float, ...] = ()
    breaker: Breaker | None = None


class RoutingError(Exception):
    """Static conflicts in a config; ``problems`` holds (YAML place, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def exposed_name(provider: ProviderConfig, model: str) -> str:
    return f"{provider.prefix}/{model}" if provider.prefix else model


def discoverable(provider: ProviderConfig, model: str) -> bool:
    """Whether an id the upstream lists is enabled: it matches ``discover.include``, no
    ``discover.exclude`` pattern, and (when ``models`` holds globs) one of those globs."""
    d = provider.discover
    if not any(fnmatchcase(model, p) for p in d.include) or any(fnmatchcase(model, p) for p in d.exclude):
        return False
    globs = [m for m in provider.models if is_glob(m)]
    return not globs or any(fnmatchcase(model, g) for g in globs)


def provider_models(provider: ProviderConfig, discovered: tuple[str, ...] | None) -> list[str]:
    """The upstream ids a provider serves: its literal ``models`` (always), plus the
    discovered ids that are :func:`discoverable`. Without discovery, globs enable nothing."""
    literal = [m for m in provider.models if not is_glob(m)]
    if not discovered or not provider.discover.enabled:
        return literal
    return list(dict.fromkeys([*literal, *(m for m in discovered if discoverable(provider, m))]))


@dataclass(frozen=True)
class RoutingTable:
    entries: Mapping[str, Entry]
    # Per provider, how many models it exposes (for the models-available gauge).
    counts: Mapping[str, int] = field(default_factory=dict)
    # Discovered ids left out because their exposed name was taken: (place, message).
    conflicts: tuple[tuple[str, str], ...] = ()

    def resolve(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def names(self) -> list[str]:
        return list(self.entries)


def build_routing(config: GatewayConfig, discovered: Mapping[str, tuple[str, ...]]) -> RoutingTable:
    """Build the table; raise :class:`RoutingError` naming every static conflict's place."""
    problems: list[tuple[str, str]] = []
    # Static claims first (literal models, then route names): who owns each written name.
    claims: dict[str, tuple[str, int | None]] = {}
    for pi, provider in enumerate(config.providers):
        for mi, model in enumerate(provider.models):
            if is_glob(model):
                continue
            name, place = exposed_name(provider, model), f"providers[{pi}].models[{mi}]"
            if name in claims:
                problems.append((place, f"exposed model {name!r} is already claimed by {claims[name][0]}"))
            else:
                claims[name] = (place, pi)
    for ri, route in enumerate(config.routes):
        place = f"routes[{ri}].name"
        if route.name in claims:
            problems.append((place, f"route {route.name!r} is already claimed by {claims[route.name][0]}"))
        else:
            claims[route.name] = (place, None)

    entries: dict[str, Entry] = {}
    counts: dict[str, int] = {}
    conflicts: list[tuple[str, str]] = []
    for pi, provider in enumerate(config.providers):
        literal = set(provider.models)
        n = 0
        for model in provider_models(provider, discovered.get(provider.name)):
            name = exposed_name(provider, model)
            owner = claims.get(name)
            if name in entries or (owner is not None and owner[1] != pi):
                if model not in literal:  # a literal one was reported above
                    by = owner[0] if owner else f"provider {entries[name].targets[0].provider!r}"
                    conflicts.append((f"providers[{pi}].discover", f"discovered model {model!r} is not exposed: "
                                      f"{name!r} is already claimed by {by}"))
                continue
            entries[name] = Entry(name, (Target(name, provider.name, model),))
            n += 1
        counts[provider.name] = n

    for ri, route in enumerate(config.routes):
        if claims[route.name][0] != f"routes[{ri}].name":
            continue  # a duplicate, reported above
        targets: list[Target] = []
        weights: list[float] = []
        for ti, rt in enumerate(route.targets):
            t = rt.model
            entry = entries.get(t)
            if entry is None or entry.route:
                # A discovered model may appear later; only flag what can never resolve.
                if t in claims and claims[t][1] is None:
                    problems.append((f"routes[{ri}].targets[{ti}]", f"{t!r} is a route; a route targets models"))
                elif not _may_be_discovered(config, t):
                    problems.append((f"routes[{ri}].targets[{ti}]", f"{t!r} is not an exposed model"))
                continue
            targets.extend(entry.targets)
            weights.extend(rt.weight for _ in entry.targets)
        entries[route.name] = Entry(route.name, tuple(targets), route=True, strategy=route.strategy,
                                    weights=tuple(weights), breaker=route.breaker)
    if problems:
        raise RoutingError(problems)
    return RoutingTable(entries, counts, tuple(conflicts))


def _may_be_discovered(config: GatewayConfig, name: str) -> bool:
    """Whether discovery could ever expose ``name`` (a route may target it before it exists)."""
    for p in config.providers:
        if not p.discover.enabled:
            continue
        if p.prefix:
            if name.startswith(p.prefix + "/") and discoverable(p, name[len(p.prefix) + 1:]):
                return True
        elif discoverable(p, name):
            return True
    return False
