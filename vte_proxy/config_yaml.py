"""Reading gateway.yaml's YAML within safety limits, and the located issues every check reports.

A file over :data:`MAX_CONFIG_BYTES`, nested deeper than :data:`MAX_DEPTH` or holding more than
:data:`MAX_NODES` nodes (aliases expanded) is refused before anything is built from it, so no
file can exhaust memory or the stack. :func:`read_yaml` also maps every place in the file to
its line (:func:`line_of`), so :mod:`vte_proxy.loader` can say where each problem is. Messages
never quote a value from the file (a value may be a secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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


def too_large(size: int) -> ConfigError | None:
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


def line_of(lines: Lines, loc: Loc) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _yaml_error(exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    # Only the parser's own words: str(exc) would quote the offending line, maybe a secret.
    problem = getattr(exc, "problem", None) or exc.__class__.__name__
    context = getattr(exc, "context", None)
    text = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return ConfigError([ConfigIssue("", mark.line + 1 if mark else None, text)])


def read_yaml(text: str, issues: list[ConfigIssue]) -> tuple[dict[str, Any], Lines]:
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


def read_config(path: str | Path) -> bytes:
    """The file's bytes, following symlinks afresh (a ConfigMap update swaps ``..data``); at
    most one byte more than :data:`MAX_CONFIG_BYTES`, which :func:`too_large` refuses."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return f.read(MAX_CONFIG_BYTES + 1)  # one byte more tells a file over the limit
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("", None, f"config file not found: {p}")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue("", None, f"cannot read {p}: {exc.__class__.__name__}")]) from None
