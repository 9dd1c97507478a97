"""Reading gateway.yaml: YAML with line numbers, ``${VAR}`` substitution, validation.

:func:`load_config` is the one entry point; serve, reload and ``vte-proxy check`` all call it.
Every problem is reported with its place in the file (``providers[1].name``) and line, and
all problems are collected, not just the first.
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

from vte_proxy.config import GatewayConfig
from vte_proxy.routing import RoutingError, build_routing

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_PLACE = re.compile(r"^((?:[A-Za-z_]+(?:\[\d+\])*)(?:\.[A-Za-z_]+(?:\[\d+\])*)*): (.*)$", re.S)


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
    """A validated config with the hash of the bytes it came from."""

    config: GatewayConfig
    sha256: str
    path: str


def format_place(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item."""


def _line_map(text: str) -> dict[tuple[str | int, ...], int]:
    lines: dict[tuple[str | int, ...], int] = {}
    node = yaml.compose(text, Loader=_LineLoader)

    def walk(n: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                p = (*path, str(k.value))
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    if node is not None:
        walk(node, ())
    return lines


def _substitute(data: Any, env: Mapping[str, str], path: tuple[str | int, ...], issues: list[ConfigIssue],
                lines: dict[tuple[str | int, ...], int]) -> Any:
    if isinstance(data, dict):
        return {k: _substitute(v, env, (*path, str(k)), issues, lines) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, env, (*path, i), issues, lines) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            issues.append(ConfigIssue(format_place(path), _line(lines, path),
                                      f"environment variable {name} is not set"))
            return ""
        return value

    return _VAR.sub(repl, data)


def _line(lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _parse_place(place: str) -> tuple[str | int, ...]:
    out: list[str | int] = []
    for part in re.findall(r"[A-Za-z_]+|\[\d+\]", place):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(out)


def _validation_issues(exc: ValidationError, lines: dict[tuple[str | int, ...], int]) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False, include_input=False):
        # Drop pydantic's union/function-validator tags so places read like YAML paths.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        msg = err["msg"].removeprefix("Value error, ")
        m = _PLACE.match(msg)
        if m:  # a model validator that knows the exact place says so in its message
            loc, msg = _parse_place(m.group(1)), m.group(2)
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        issues.append(ConfigIssue(format_place(loc), _line(lines, loc), msg))
    return issues


def parse_config(text: str, env: Mapping[str, str] | None = None, path: str = "<string>") -> LoadedConfig:
    """Parse and fully validate config text; raise :class:`ConfigError` with every issue."""
    env = os.environ if env is None else env
    try:
        raw = yaml.load(text, Loader=_LineLoader)
        lines = _line_map(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue("", mark.line + 1 if mark else None, f"invalid YAML: {problem}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", 1, "the file must be a YAML mapping (version, keys, providers, ...)")])
    issues: list[ConfigIssue] = []
    data = _substitute(raw, env, (), issues, lines)
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        issues.extend(_validation_issues(exc, lines))
        raise ConfigError(issues) from None
    if issues:
        raise ConfigError(issues)
    # Static routing problems (a model claimed twice, a route to nowhere) are config errors too.
    try:
        build_routing(config, {})
    except RoutingError as exc:
        raise ConfigError([ConfigIssue(p, _line(lines, _parse_place(p)), m) for p, m in exc.problems]) from None
    return LoadedConfig(config, config_hash(text.encode()), path)


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


def load_config(path: str | Path, env: Mapping[str, str] | None = None, raw: bytes | None = None) -> LoadedConfig:
    """Read ``path`` (or use ``raw``, its bytes) and validate it."""
    data = read_config(path) if raw is None else raw
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("", None, "the file is not valid UTF-8")]) from None
    return parse_config(text, env, str(path))
