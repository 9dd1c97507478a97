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

from vte_proxy.config import Breaker, GatewayConfig, ProviderConfig, RouteConfig, Strategy


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
    build = _Build(config)
    # Static claims first (literal models, then route names): who owns each written name.
    build.claim_models()
    build.claim_routes()
    for pi, provider in enumerate(config.providers):
        build.add_provider(pi, provider, discovered.get(provider.name))
    for ri, route in enumerate(config.routes):
        build.add_route(ri, route)
    if build.problems:
        raise RoutingError(build.problems)
    return RoutingTable(build.entries, build.counts, tuple(build.conflicts))


@dataclass
class _Build:
    """A table being built. ``claims`` maps each name written in the config to (its place,
    the claiming provider's index, or None for a route)."""

    config: GatewayConfig
    claims: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # static: the config is refused
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # discovered names left out

    def claim_models(self) -> None:
        for pi, provider in enumerate(self.config.providers):
            for mi, model in enumerate(provider.models):
                if not is_glob(model):
                    self._claim(exposed_name(provider, model), f"providers[{pi}].models[{mi}]", pi, "exposed model")

    def claim_routes(self) -> None:
        for ri, route in enumerate(self.config.routes):
            self._claim(route.name, f"routes[{ri}].name", None, "route")

    def _claim(self, name: str, place: str, owner: int | None, what: str) -> None:
        if name in self.claims:
            self.problems.append((place, f"{what} {name!r} is already claimed by {self.claims[name][0]}"))
        else:
            self.claims[name] = (place, owner)

    def add_provider(self, pi: int, provider: ProviderConfig, discovered: tuple[str, ...] | None) -> None:
        """An entry per model the provider serves, unless another provider owns its name."""
        literal = set(provider.models)
        n = 0
        for model in provider_models(provider, discovered):
            name = exposed_name(provider, model)
            owner = self.claims.get(name)
            if name in self.entries or (owner is not None and owner[1] != pi):
                if model not in literal:  # a literal one was reported as a problem by claim_models
                    self._discovered_conflict(pi, model, name, owner)
                continue
            self.entries[name] = Entry(name, (Target(name, provider.name, model),))
            n += 1
        self.counts[provider.name] = n

    def _discovered_conflict(self, pi: int, model: str, name: str, owner: tuple[str, int | None] | None) -> None:
        by = owner[0] if owner else f"provider {self.entries[name].targets[0].provider!r}"
        self.conflicts.append((f"providers[{pi}].discover", f"discovered model {model!r} is not exposed: "
                               f"{name!r} is already claimed by {by}"))

    def add_route(self, ri: int, route: RouteConfig) -> None:
        """The route's entry: its targets' targets, in order (a duplicate route was reported)."""
        if self.claims[route.name][0] != f"routes[{ri}].name":
            return
        targets: list[Target] = []
        weights: list[float] = []
        for ti, rt in enumerate(route.targets):
            found = self._route_target(f"routes[{ri}].targets[{ti}]", rt.model)
            targets.extend(found)
            weights.extend(rt.weight for _ in found)
        self.entries[route.name] = Entry(route.name, tuple(targets), route=True, strategy=route.strategy,
                                         weights=tuple(weights), breaker=route.breaker)

    def _route_target(self, place: str, name: str) -> tuple[Target, ...]:
        entry = self.entries.get(name)
        if entry is not None and not entry.route:
            return entry.targets
        # A discovered model may appear later; only flag what can never resolve.
        if name in self.claims and self.claims[name][1] is None:
            self.problems.append((place, f"{name!r} is a route; a route targets models"))
        elif not _may_be_discovered(self.config, name):
            self.problems.append((place, f"{name!r} is not an exposed model"))
        return ()


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
