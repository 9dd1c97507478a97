"""Reading gateway.yaml: YAML with line numbers, ``${VAR}`` substitution, validation.

:func:`load_config` is the one entry point; serve, reload and ``vte-proxy check`` all call it.
Every problem is reported with its place in the file (``providers[1].name``) and line, and
all problems are collected, not just the first. Messages never quote a value from the file
(a value may be a secret): they name the place, the rule, and at most a ``name``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vte_proxy.config import GatewayConfig, ProviderConfig, RouteConfig
from vte_proxy.limits.pricing import budget_problems
from vte_proxy.routing import RoutingError, build_routing

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_PLACE = re.compile(r"^((?:[A-Za-z_]+(?:\[\d+\])*)(?:\.[A-Za-z_]+(?:\[\d+\])*)*): (.*)$", re.S)

Loc = tuple[str | int, ...]
Lines = dict[Loc, int]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where (``providers[1].name``), which line, what."""

    place: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.place or "(top level)"
        at = f" (line {self.line})" if self.line else ""
        return f"{where}{at}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; ``issues`` holds every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


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


def format_place(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _LineLoader(yaml.SafeLoader):
    """SafeLoader used for both the data and the node tree (line numbers)."""


def _line_map(node: yaml.Node | None, issues: list[ConfigIssue]) -> Lines:
    """The line of every mapping key and sequence item; a key given twice in one mapping
    (YAML would silently keep the last) is an issue."""
    lines: Lines = {}

    def walk(n: yaml.Node, path: Loc) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in n.value:
                key = str(k.value)
                p = (*path, key)
                line = k.start_mark.line + 1
                if key in seen and key != "<<":
                    issues.append(ConfigIssue(format_place(p), line,
                                              f"duplicate key {key!r} (also on line {seen[key]}); "
                                              "YAML would keep only the last"))
                seen.setdefault(key, line)
                lines[p] = line
                walk(v, p)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    if node is not None:
        walk(node, ())
    return lines


def _line(lines: Lines, loc: Loc) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


class _Substitution:
    """``${VAR}``, ``${VAR:-default}`` (also when VAR is empty) and ``$$`` (a literal ``$``)."""

    def __init__(self, env: Mapping[str, str], lines: Lines, allow_missing: bool) -> None:
        self.env, self.lines, self.allow_missing = env, lines, allow_missing
        self.missing: list[ConfigIssue] = []
        self.missing_places: list[Loc] = []

    def apply(self, data: Any, path: Loc = ()) -> Any:
        if isinstance(data, dict):
            return {k: self.apply(v, (*path, str(k))) for k, v in data.items()}
        if isinstance(data, list):
            return [self.apply(v, (*path, i)) for i, v in enumerate(data)]
        if not isinstance(data, str) or "$" not in data:
            return data

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            value = self.env.get(name)
            if value is not None and not (value == "" and default is not None):
                return value
            if default is not None:
                return default
            note = " (left as is: --allow-missing-env)" if self.allow_missing else ""
            self.missing.append(ConfigIssue(format_place(path), _line(self.lines, path),
                                            f"environment variable {name} is not set{note}"))
            self.missing_places.append(path)
            # Its own text stands in, so the rest of the file is still checked; what fails at
            # this place only because the variable is missing is not reported twice.
            return m.group(0)

        return _VAR.sub(repl, data)


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
        issues.append((loc, ConfigIssue(format_place(loc), _line(lines, loc), msg)))
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
                issues.append(ConfigIssue(f"{field}[{i}].name", _line(lines, (field, i, "name")),
                                          f"{name!r} is already used by {field}[{seen[name]}]"))
            else:
                seen[name] = i
    return issues


def _yaml_error(exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    # Only the parser's own words: str(exc) would quote the offending line, maybe a secret.
    problem = getattr(exc, "problem", None) or exc.__class__.__name__
    context = getattr(exc, "context", None)
    text = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return ConfigError([ConfigIssue("", mark.line + 1 if mark else None, text)])


def parse_config(text: str, env: Mapping[str, str] | None = None, path: str = "<string>",
                 allow_missing_env: bool = False) -> LoadedConfig:
    """Parse and fully validate config text; raise :class:`ConfigError` with every issue.

    ``allow_missing_env`` (for ``vte-proxy check`` in CI, where the secrets are not) turns an
    unset variable into a warning and leaves its ``${VAR}`` text in place.
    """
    env = os.environ if env is None else env
    issues: list[ConfigIssue] = []
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        raw = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    lines = _line_map(node, issues)
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", 1, "the file must be a YAML mapping (version, keys, providers, ...)")])
    sub = _Substitution(env, lines, allow_missing_env)
    data = sub.apply(raw)
    if not allow_missing_env:
        issues.extend(sub.missing)
    issues.extend(_duplicate_names(data, lines))
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        found = _validation_issues(exc, lines)
        for loc, issue in found:
            caused_by_missing = any(loc[:len(p)] == p for p in sub.missing_places)
            # pydantic also calls a list "too short" when its only items are invalid
            too_short_echo = issue.message.startswith("Tuple should have at least") and any(
                len(other) > len(loc) and other[:len(loc)] == loc for other, _ in found)
            if issue not in issues and not (caused_by_missing and not allow_missing_env) and not too_short_echo:
                issues.append(issue)
        taken = {i.place for i in issues}  # e.g. a duplicate route name, already reported
        issues.extend(i for i in _partial_routing_issues(data, lines) if i.place not in taken)
        raise ConfigError(_sorted(issues)) from None
    if issues:
        taken = {i.place for i in issues}
        issues.extend(i for i in _partial_routing_issues(data, lines) if i.place not in taken)
        raise ConfigError(_sorted(issues))
    # Static routing problems (a model claimed twice, a route to nowhere) are config errors too.
    try:
        table = build_routing(config, {})
    except RoutingError as exc:
        raise ConfigError([ConfigIssue(p, _line(lines, _parse_place(p)), m) for p, m in exc.problems]) from None
    # A budget is priced: every model its key may use needs a price (models discovery adds
    # later are refused to that key at run time when they have none).
    unpriced = budget_problems(config, table)
    if unpriced:
        raise ConfigError([ConfigIssue(p, _line(lines, _parse_place(p)), m) for p, m in unpriced])
    return LoadedConfig(config, config_hash(text.encode()), path, tuple(sub.missing))


def _partial_routing_issues(data: dict[str, Any], lines: Lines) -> list[ConfigIssue]:
    """Routing conflicts among the providers and routes that are valid on their own, so a
    file with other errors still gets its "claimed twice" reported in the same run."""
    valid: dict[str, dict[int, Any]] = {"providers": {}, "routes": {}}
    for field, model in (("providers", ProviderConfig), ("routes", RouteConfig)):
        items = data.get(field)
        for i, item in enumerate(items if isinstance(items, list) else []):
            try:
                valid[field][i] = model.model_validate(item)
            except ValidationError:
                continue
    providers, routes = valid["providers"], valid["routes"]
    partial = GatewayConfig.model_construct(version=1, keys=(), providers=tuple(providers.values()),
                                            routes=tuple(routes.values()))
    original = {"providers": list(providers), "routes": list(routes)}

    def remap(text: str) -> str:
        return re.sub(r"\b(providers|routes)\[(\d+)\]",
                      lambda m: f"{m.group(1)}[{original[m.group(1)][int(m.group(2))]}]", text)

    try:
        build_routing(partial, {})
    except RoutingError as exc:
        complete = isinstance(data.get("providers"), list) and len(providers) == len(data["providers"])
        out = []
        for p, m in exc.problems:
            if ".targets[" in p and not complete:  # the target may belong to an invalid provider
                continue
            place = remap(p)
            out.append(ConfigIssue(place, _line(lines, _parse_place(place)), remap(m)))
        return out
    return []


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """In file order (issues without a line first), so a reader can walk down the file."""
    return sorted(issues, key=lambda i: i.line or 0)


def config_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def read_config(path: str | Path) -> bytes:
    """The file's bytes, following symlinks afresh (a ConfigMap update swaps ``..data``)."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("", None, f"config file not found: {p}")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue("", None, f"cannot read {p}: {exc.__class__.__name__}")]) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None, raw: bytes | None = None,
                allow_missing_env: bool = False) -> LoadedConfig:
    """Read ``path`` (or use ``raw``, its bytes) and validate it."""
    data = read_config(path) if raw is None else raw
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("", None, "the file is not valid UTF-8")]) from None
    return parse_config(text, env, str(path), allow_missing_env)
