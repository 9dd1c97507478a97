"""Reading gateway.yaml: YAML with line numbers, ``${VAR}`` substitution, validation.

:func:`load_config` is the one entry point; serve, reload and ``vte-proxy check`` all call it.
Every problem is reported with its place in the file (``providers[1].name``) and line, and
all problems are collected, not just the first. Reading the YAML within its size, depth and
alias-expansion limits, the line map and the issue types are in :mod:`vte_proxy.config_yaml`.
Messages never quote a value from the file (a value may be a secret): they name the place,
the rule, and at most a ``name``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vte_proxy.config import GatewayConfig, ProviderConfig, RouteConfig
from vte_proxy.config_yaml import ConfigError as ConfigError
from vte_proxy.config_yaml import ConfigIssue as ConfigIssue
from vte_proxy.config_yaml import Lines, Loc, format_place, line_of, read_config, read_yaml, too_large
from vte_proxy.limits.pricing import budget_problems
from vte_proxy.routing import RoutingError, build_routing

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_PLACE = re.compile(r"^((?:[A-Za-z_]+(?:\[\d+\])*)(?:\.[A-Za-z_]+(?:\[\d+\])*)*): (.*)$", re.S)


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with the hash of the bytes it came from.

    ``warnings`` is only ever non-empty for ``allow_missing_env`` (``vte-proxy check``): the
    unset variables that were replaced by their own ``${VAR}`` text.
    """

    config: GatewayConfig
    sha256: str
    path: str
    warnings: tuple[ConfigIssue, ...] = ()


class _Substitution:
    """``${VAR}``, ``${VAR:-default}`` (also when VAR is empty) and ``$$`` (a literal ``$``)."""

    def __init__(self, env: Mapping[str, str], lines: Lines, allow_missing: bool) -> None:
        self.env, self.lines, self.allow_missing = env, lines, allow_missing
        self.missing: list[ConfigIssue] = []
        self.missing_places: list[Loc] = []

    def apply(self, data: Any, path: Loc = ()) -> Any:
        """``data`` with every string's variables substituted (a new tree; ``data`` is not changed)."""
        if isinstance(data, dict):
            return {k: self.apply(v, (*path, str(k))) for k, v in data.items()}
        if isinstance(data, list):
            return [self.apply(v, (*path, i)) for i, v in enumerate(data)]
        if not isinstance(data, str) or "$" not in data:
            return data
        return _VAR.sub(lambda m: self._value(m, path), data)

    def _value(self, m: re.Match[str], path: Loc) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = self.env.get(name)
        if value is not None and not (value == "" and default is not None):
            return value
        if default is not None:
            return default
        note = " (left as is: --allow-missing-env)" if self.allow_missing else ""
        self.missing.append(ConfigIssue(format_place(path), line_of(self.lines, path),
                                        f"environment variable {name} is not set{note}"))
        self.missing_places.append(path)
        # Its own text stands in, so the rest of the file is still checked; what fails at
        # this place only because the variable is missing is not reported twice.
        return m.group(0)


def _parse_place(place: str) -> Loc:
    out: list[str | int] = []
    for part in re.findall(r"[A-Za-z_]+|\[\d+\]", place):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(out)


def _validation_issues(exc: ValidationError, lines: Lines) -> list[tuple[Loc, ConfigIssue]]:
    issues = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        # Drop pydantic's union/function-validator tags so places read like YAML paths.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        msg = err["msg"].removeprefix("Value error, ")
        m = _PLACE.match(msg)
        if m:  # a model validator that knows the exact place says so in its message
            loc, msg = _parse_place(m.group(1)), m.group(2)
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        issues.append((loc, ConfigIssue(format_place(loc), line_of(lines, loc), msg)))
    return issues


def _duplicate_names(data: dict[str, Any], lines: Lines) -> list[ConfigIssue]:
    """Every name given twice among keys, providers and routes (pydantic stops at the first)."""
    issues = []
    for field in ("keys", "providers", "routes"):
        items = data.get(field)
        if not isinstance(items, list):
            continue
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen:
                issues.append(ConfigIssue(f"{field}[{i}].name", line_of(lines, (field, i, "name")),
                                          f"{name!r} is already used by {field}[{seen[name]}]"))
            else:
                seen[name] = i
    return issues


def parse_config(text: str, env: Mapping[str, str] | None = None, path: str = "<string>",
                 allow_missing_env: bool = False) -> LoadedConfig:
    """Parse and fully validate config text; raise :class:`ConfigError` with every issue.

    ``allow_missing_env`` (for ``vte-proxy check`` in CI, where the secrets are not) turns an
    unset variable into a warning and leaves its ``${VAR}`` text in place.
    """
    encoded = text.encode()
    refused = too_large(len(encoded))
    if refused is not None:
        raise refused
    try:
        return _parse(text, os.environ if env is None else env, allow_missing_env, config_hash(encoded), path)
    except RecursionError:  # the limits above should make this unreachable; never let it escape
        raise ConfigError([ConfigIssue("", None, "the file nests too deeply to be read")]) from None


def _parse(text: str, env: Mapping[str, str], allow_missing_env: bool, sha256: str, path: str) -> LoadedConfig:
    issues: list[ConfigIssue] = []
    raw, lines = read_yaml(text, issues)
    sub = _Substitution(env, lines, allow_missing_env)
    data = sub.apply(raw)
    if not allow_missing_env:
        issues.extend(sub.missing)
    issues.extend(_duplicate_names(data, lines))
    config = _validate(data, lines, issues, sub)
    # Static routing problems (a model claimed twice, a route to nowhere) are config errors too.
    try:
        table = build_routing(config, {})
    except RoutingError as exc:
        raise ConfigError([ConfigIssue(p, line_of(lines, _parse_place(p)), m) for p, m in exc.problems]) from None
    # A budget is priced: every model its key may use needs a price (models discovery adds
    # later are refused to that key at run time when they have none).
    unpriced = budget_problems(config, table)
    if unpriced:
        raise ConfigError([ConfigIssue(p, line_of(lines, _parse_place(p)), m) for p, m in unpriced])
    return LoadedConfig(config, sha256, path, tuple(sub.missing))


def _validate(data: dict[str, Any], lines: Lines, issues: list[ConfigIssue], sub: _Substitution) -> GatewayConfig:
    """The validated config, or :class:`ConfigError` with ``issues``, pydantic's and the routing
    conflicts among the parts that are valid on their own."""
    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        _add_validation_issues(issues, _validation_issues(exc, lines), sub)
    if config is None or issues:
        taken = {i.place for i in issues}  # e.g. a duplicate route name, already reported
        issues.extend(i for i in _partial_routing_issues(data, lines) if i.place not in taken)
        raise ConfigError(_sorted(issues))
    return config


def _add_validation_issues(issues: list[ConfigIssue], found: list[tuple[Loc, ConfigIssue]], sub: _Substitution) -> None:
    """pydantic's issues, less repeats, echoes of a missing variable, and "too short" echoes."""
    for loc, issue in found:
        caused_by_missing = any(loc[:len(p)] == p for p in sub.missing_places)
        # pydantic also calls a list "too short" when its only items are invalid
        too_short_echo = issue.message.startswith("Tuple should have at least") and any(
            len(other) > len(loc) and other[:len(loc)] == loc for other, _ in found)
        if issue not in issues and not (caused_by_missing and not sub.allow_missing) and not too_short_echo:
            issues.append(issue)


def _partial_routing_issues(data: dict[str, Any], lines: Lines) -> list[ConfigIssue]:
    """Routing conflicts among the providers and routes that are valid on their own, so a
    file with other errors still gets its "claimed twice" reported in the same run."""
    providers, routes = _valid_items(data, "providers", ProviderConfig), _valid_items(data, "routes", RouteConfig)
    partial = GatewayConfig.model_construct(version=1, keys=(), providers=tuple(providers.values()),
                                            routes=tuple(routes.values()))
    try:
        build_routing(partial, {})
    except RoutingError as exc:
        complete = isinstance(data.get("providers"), list) and len(providers) == len(data["providers"])
        remap = _renumber({"providers": list(providers), "routes": list(routes)})
        # A target may belong to an invalid provider: only a complete set can tell it is missing.
        kept = [(remap(p), remap(m)) for p, m in exc.problems if complete or ".targets[" not in p]
        return [ConfigIssue(place, line_of(lines, _parse_place(place)), message) for place, message in kept]
    return []


def _valid_items(data: dict[str, Any], field: str, model: type[ProviderConfig | RouteConfig]) -> dict[int, Any]:
    """The items of the list ``field`` that validate on their own, by their index in the file."""
    items = data.get(field)
    valid: dict[int, Any] = {}
    for i, item in enumerate(items if isinstance(items, list) else []):
        try:
            valid[i] = model.model_validate(item)
        except ValidationError:
            continue
    return valid


def _renumber(original: dict[str, list[int]]) -> Callable[[str], str]:
    """``providers[i]`` / ``routes[i]`` of the partial config -> their index in the file."""
    def remap(text: str) -> str:
        return re.sub(r"\b(providers|routes)\[(\d+)\]",
                      lambda m: f"{m.group(1)}[{original[m.group(1)][int(m.group(2))]}]", text)
    return remap


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """In file order (issues without a line first), so a reader can walk down the file."""
    return sorted(issues, key=lambda i: i.line or 0)


def config_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def load_config(path: str | Path, env: Mapping[str, str] | None = None, raw: bytes | None = None,
                allow_missing_env: bool = False) -> LoadedConfig:
    """Read ``path`` (or use ``raw``, its bytes) and validate it."""
    data = read_config(path) if raw is None else raw
    refused = too_large(len(data))
    if refused is not None:
        raise refused
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("", None, "the file is not valid UTF-8")]) from None
    return parse_config(text, env, str(path), allow_missing_env)
