"""Reading gateway.yaml: YAML with line numbers, ``${VAR}`` substitution, validation.

:func:`load_config` is the one entry point; serve, reload and ``vte-proxy check`` all call it.
Every problem is reported with its place in the file (``providers[1].name``) and line, and
all problems are collected, not just the first. A file over :data:`MAX_CONFIG_BYTES`, nested
deeper than :data:`MAX_DEPTH` or holding more than :data:`MAX_NODES` nodes (aliases expanded) is
refused before anything is built from it, so no file can exhaust memory or the stack.
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


# Limits that keep a hostile or broken file from taking the process down (`check` and reload alike).
MAX_CONFIG_BYTES = 1024 * 1024  # 1 MiB, also Kubernetes' ConfigMap limit
MAX_DEPTH = 64  # levels of nesting, aliases expanded (a real gateway.yaml uses about 6)
MAX_NODES = 100_000  # YAML nodes once every alias is expanded (a real one has hundreds)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses, while it composes the node tree, what would blow up later:
    nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_NODES` nodes once aliases are
    expanded (a "billion laughs" alias bomb), and an alias inside the node it names (a cycle).
    The tree and the data are built in one pass; later walks stay within these bounds."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # nesting of the node being composed
        self._reached = 0  # deepest level reached so far under it, aliases expanded
        self._nodes = 0  # nodes so far, aliases expanded
        self._anchored: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (expanded nodes, height)

    def _next(self) -> yaml.NodeEvent:
        event: yaml.NodeEvent = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        return event

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            return self._alias(parent, index)
        event = self._next()
        self._depth += 1
        self._grow(1, self._depth, event.start_mark)
        start, outer_reached, self._reached = self._nodes, self._reached, self._depth
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._anchored[id(node)] = (self._nodes - start, self._reached - self._depth + 1)
        self._depth -= 1
        self._reached = max(outer_reached, self._reached)
        return node

    def _alias(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        mark = self._next().start_mark
        node = super().compose_node(parent, index)
        measured = self._anchored.get(id(node))
        if measured is None:  # its anchor's node is still being composed: the alias is inside it
            raise _limit(mark, "an alias inside the node its anchor names (a recursive alias) is not allowed")
        nodes, height = measured
        self._grow(nodes, self._depth + height, mark)
        return node

    def _grow(self, nodes: int, depth: int, mark: Any) -> None:
        self._nodes += nodes
        self._reached = max(self._reached, depth)
        if depth > MAX_DEPTH:
            raise _limit(mark, f"the YAML nests deeper than {MAX_DEPTH} levels (aliases expanded)")
        if self._nodes > MAX_NODES:
            raise _limit(mark, f"the YAML holds more than {MAX_NODES} nodes once its aliases are expanded")


def _limit(mark: Any, message: str) -> ConfigError:
    """A located issue; ``mark`` is a yaml.Mark (pure-Python or libyaml flavour)."""
    return ConfigError([ConfigIssue("", mark.line + 1 if mark is not None else None, message)])


def _too_large(size: int) -> ConfigError | None:
    if size <= MAX_CONFIG_BYTES:
        return None
    return ConfigError([ConfigIssue("", None, f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB "
                                              f"({MAX_CONFIG_BYTES} bytes), the most a config may be")])


def _line_map(node: yaml.Node | None, issues: list[ConfigIssue]) -> Lines:
    """The line of every mapping key and sequence item; a key given twice in one mapping
    (YAML would silently keep the last) is an issue."""
    lines: Lines = {}
    if node is not None:
        _walk(node, (), lines, issues)
    return lines


def _walk(n: yaml.Node, path: Loc, lines: Lines, issues: list[ConfigIssue]) -> None:
    lines.setdefault(path, n.start_mark.line + 1)
    if isinstance(n, yaml.MappingNode):
        _walk_mapping(n, path, lines, issues)
    elif isinstance(n, yaml.SequenceNode):
        for i, item in enumerate(n.value):
            _walk(item, (*path, i), lines, issues)


def _walk_mapping(n: yaml.MappingNode, path: Loc, lines: Lines, issues: list[ConfigIssue]) -> None:
    seen: dict[str, int] = {}
    for k, v in n.value:
        key = str(k.value)
        p = (*path, key)
        line = k.start_mark.line + 1
        if key in seen and key != "<<":
            issues.append(ConfigIssue(format_place(p), line, f"duplicate key {key!r} (also on line {seen[key]}); "
                                                             "YAML would keep only the last"))
        seen.setdefault(key, line)
        lines[p] = line
        _walk(v, p, lines, issues)


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
        self.missing.append(ConfigIssue(format_place(path), _line(self.lines, path),
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
    encoded = text.encode()
    too_large = _too_large(len(encoded))
    if too_large is not None:
        raise too_large
    try:
        return _parse(text, os.environ if env is None else env, allow_missing_env, config_hash(encoded), path)
    except RecursionError:  # the limits above should make this unreachable; never let it escape
        raise ConfigError([ConfigIssue("", None, "the file nests too deeply to be read")]) from None


def _parse(text: str, env: Mapping[str, str], allow_missing_env: bool, sha256: str, path: str) -> LoadedConfig:
    issues: list[ConfigIssue] = []
    raw, lines = _read_yaml(text, issues)
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
        raise ConfigError([ConfigIssue(p, _line(lines, _parse_place(p)), m) for p, m in exc.problems]) from None
    # A budget is priced: every model its key may use needs a price (models discovery adds
    # later are refused to that key at run time when they have none).
    unpriced = budget_problems(config, table)
    if unpriced:
        raise ConfigError([ConfigIssue(p, _line(lines, _parse_place(p)), m) for p, m in unpriced])
    return LoadedConfig(config, sha256, path, tuple(sub.missing))


def _read_yaml(text: str, issues: list[ConfigIssue]) -> tuple[dict[str, Any], Lines]:
    """The top-level mapping and the line of every place in it (one parse for both)."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        lines = _line_map(node, issues)  # before constructing: that folds '<<' merge keys into the tree
        raw = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", 1, "the file must be a YAML mapping (version, keys, providers, ...)")])
    return raw, lines


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
        return [ConfigIssue(place, _line(lines, _parse_place(place)), message) for place, message in kept]
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


def read_config(path: str | Path) -> bytes:
    """The file's bytes, following symlinks afresh (a ConfigMap update swaps ``..data``); at
    most one byte more than :data:`MAX_CONFIG_BYTES`, which :func:`load_config` refuses."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return f.read(MAX_CONFIG_BYTES + 1)  # one byte more tells a file over the limit
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("", None, f"config file not found: {p}")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue("", None, f"cannot read {p}: {exc.__class__.__name__}")]) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None, raw: bytes | None = None,
                allow_missing_env: bool = False) -> LoadedConfig:
    """Read ``path`` (or use ``raw``, its bytes) and validate it."""
    data = read_config(path) if raw is None else raw
    too_large = _too_large(len(data))
    if too_large is not None:
        raise too_large
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("", None, "the file is not valid UTF-8")]) from None
    return parse_config(text, env, str(path), allow_missing_env)
