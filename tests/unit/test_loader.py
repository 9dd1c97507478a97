"""gateway.yaml loading: every problem is reported with its YAML place and line, all at once,
and no message ever quotes a value from the file (it may be a secret)."""

from __future__ import annotations

import textwrap
import tracemalloc
from pathlib import Path

import pytest

from vte_proxy import config_yaml
from vte_proxy.config_base import parse_duration
from vte_proxy.config_yaml import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_NODES, ConfigError, ConfigIssue
from vte_proxy.loader import load_config, parse_config

ENV = {"TEAM_KEY": "sk-team-from-env", "UP_KEY": "sk-upstream-from-env"}

BASE = """\
version: 1
keys:
  - name: team
    key: ${TEAM_KEY}
  - name: admin
    key: sk-admin-literal
    status: true
providers:
  - name: up
    type: openai
    base_url: http://127.0.0.1:9/v1
    api_key: ${UP_KEY}
    prefix: up
    models: [gpt-4o, gpt-4o-mini]
  - name: demo
    type: echo
    prefix: demo
    models: [echo]
routes:
  - name: smart
    targets: [up/gpt-4o, demo/echo]
"""


NO_ROUTES = BASE.split("routes:")[0]


def issues_of(text: str, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), ENV if env is None else env)
    return info.value.issues


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line holding ``needle``."""
    hits = [i + 1 for i, line in enumerate(textwrap.dedent(text).splitlines()) if needle in line]
    return hits[nth - 1]


def only(issues: list[ConfigIssue]) -> ConfigIssue:
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def test_the_base_config_loads_with_its_hash_env_substituted() -> None:
    loaded = parse_config(BASE, ENV)
    assert len(loaded.sha256) == 64
    assert loaded.config.keys[0].key is not None
    assert loaded.config.keys[0].key.get_secret_value() == "sk-team-from-env"
    assert loaded.config.providers[0].api_key is not None
    assert loaded.config.providers[0].api_key.get_secret_value() == "sk-upstream-from-env"
    assert parse_config(BASE, ENV).sha256 == loaded.sha256
    assert parse_config(BASE + "# a comment\n", ENV).sha256 != loaded.sha256


def test_unknown_key_is_named_with_its_place_and_line() -> None:
    text = BASE.replace("    prefix: demo\n", "    prefix: demo\n    colour: blue\n")
    issue = only(issues_of(text))
    assert issue.place == "providers[1].colour"
    assert issue.line == line_of(text, "colour: blue")
    assert "unknown key 'colour'" in issue.message
    assert str(issue).startswith(f"providers[1].colour (line {issue.line}): ")


def test_unknown_top_level_key_is_located() -> None:
    text = BASE + "loggin: {level: debug}\n"
    issue = only(issues_of(text))
    assert (issue.place, issue.line) == ("loggin", line_of(text, "loggin:"))


@pytest.mark.parametrize(("section", "original", "duplicate", "place"), [
    ("keys", "  - name: admin\n", "  - name: team\n", "keys[1].name"),
    ("providers", "  - name: demo\n", "  - name: up\n", "providers[1].name"),
    ("routes", None, None, "routes[1].name"),
])
def test_duplicate_names_are_errors_at_the_second_use(section: str, original: str | None, duplicate: str | None,
                                                      place: str) -> None:
    if section == "routes":
        text = BASE + "  - name: smart\n    targets: [demo/echo]\n"
        needle, nth = "- name: smart", 2
    else:
        assert original and duplicate
        text = BASE.replace(original, duplicate, 1)
        needle, nth = duplicate.strip(), 2
    issues = issues_of(text)
    issue = next(i for i in issues if i.place == place)
    assert "is already used by" in issue.message
    assert issue.line == line_of(text, needle, nth)


def test_a_key_given_twice_in_one_mapping_is_an_error_not_silently_the_last() -> None:
    text = NO_ROUTES.replace("    prefix: demo\n", "    prefix: demo\n    prefix: other\n")
    issue = only(issues_of(text))
    assert issue.place == "providers[1].prefix"
    assert issue.line == line_of(text, "prefix: other")
    assert f"also on line {line_of(text, 'prefix: demo')}" in issue.message


def test_exposed_model_claimed_by_two_providers_names_both_places() -> None:
    text = NO_ROUTES.replace("    prefix: demo\n    models: [echo]\n", "    prefix: up\n    models: [echo, gpt-4o]\n")
    issue = only(issues_of(text))
    assert issue.place == "providers[1].models[1]"
    assert issue.line == line_of(text, "models: [echo, gpt-4o]")
    assert "'up/gpt-4o' is already claimed by providers[0].models[0]" in issue.message


def test_missing_env_var_is_one_located_error_without_follow_up_noise() -> None:
    text = BASE.replace("${UP_KEY}", "${NOT_SET_ANYWHERE}").replace(
        "base_url: http://127.0.0.1:9/v1", "base_url: ${ALSO_NOT_SET}")
    issues = issues_of(text)
    assert [(i.place, i.line) for i in issues] == [
        ("providers[0].base_url", line_of(text, "base_url:")),
        ("providers[0].api_key", line_of(text, "api_key:")),
    ]
    assert issues[0].message == "environment variable ALSO_NOT_SET is not set"
    assert issues[1].message == "environment variable NOT_SET_ANYWHERE is not set"


def test_env_default_applies_when_unset_or_empty_and_a_set_value_wins() -> None:
    text = BASE.replace("${UP_KEY}", "${UP_KEY:-sk-default-key}")

    def key(env: dict[str, str]) -> str:
        api_key = parse_config(text, env).config.providers[0].api_key
        assert api_key is not None
        return api_key.get_secret_value()

    assert key({"TEAM_KEY": "t"}) == "sk-default-key"
    assert key({"TEAM_KEY": "t", "UP_KEY": ""}) == "sk-default-key"
    assert key({"TEAM_KEY": "t", "UP_KEY": "sk-set"}) == "sk-set"
    # an empty default is a valid default: no error for an unset variable
    empty = NO_ROUTES.replace("prefix: demo", "prefix: ${DEMO_PREFIX:-}")
    assert parse_config(empty, ENV).config.providers[1].prefix == ""


def test_double_dollar_is_a_literal_dollar_and_not_a_variable() -> None:
    text = BASE.replace("key: sk-admin-literal", "key: pa$$word-$${NOT_A_VAR}")
    admin = parse_config(text, ENV).config.keys[1].key
    assert admin is not None
    assert admin.get_secret_value() == "pa$word-${NOT_A_VAR}"


def test_variables_inside_longer_strings_and_lists_are_substituted() -> None:
    text = BASE.replace("models: [echo]", "models: [echo, '${MODEL_B}']").replace(
        "base_url: http://127.0.0.1:9/v1", "base_url: http://${UP_HOST}:9/v1")
    config = parse_config(text, {**ENV, "MODEL_B": "echo-b", "UP_HOST": "10.0.0.7"}).config
    assert config.providers[1].models == ("echo", "echo-b")
    assert config.providers[0].base_url == "http://10.0.0.7:9/v1"


def test_bad_duration_is_located() -> None:
    text = BASE.replace("    prefix: up\n", "    prefix: up\n    timeouts: {connect: 5s, idle: ten minutes}\n")
    issue = only(issues_of(text))
    assert issue.place == "providers[0].timeouts.idle"
    assert issue.line == line_of(text, "timeouts:")
    assert "expected a duration" in issue.message


def test_durations_accept_units_and_plain_seconds() -> None:
    assert [parse_duration(v) for v in ("250ms", "30s", "10m", "1h", "1.5", 2)] == [0.25, 30.0, 600.0, 3600.0,
                                                                                     1.5, 2.0]


def test_bad_yaml_reports_its_line_and_never_quotes_the_line() -> None:
    text = BASE.replace("    key: sk-admin-literal\n", "    key: sk-secret-in-yaml: [oops\n")
    issue = only(issues_of(text))
    assert issue.message.startswith("invalid YAML: ")
    assert issue.line == line_of(text, "sk-secret-in-yaml")
    assert "sk-secret-in-yaml" not in str(issue)


def test_unknown_provider_type_is_located() -> None:
    text = BASE.replace("type: echo", "type: magic")
    issue = only(issues_of(text))
    assert (issue.place, issue.line) == ("providers[1].type", line_of(text, "type: magic"))
    assert "'openai', 'anthropic', 'vertex-express' or 'echo'" in issue.message


@pytest.mark.parametrize("url", ["ftp://example.com/v1", "api.openai.com/v1", "http://", "http://bad host/v1",
                                 "http://host:99999/v1", "https://host/v1?api-version=1"])
def test_invalid_base_url_is_located(url: str) -> None:
    text = BASE.replace("http://127.0.0.1:9/v1", url)
    issue = only(issues_of(text))
    assert (issue.place, issue.line) == ("providers[0].base_url", line_of(text, "base_url:"))
    if len(url) > len("https://"):
        assert url not in issue.message


def test_route_target_that_does_not_exist_is_located() -> None:
    text = BASE.replace("targets: [up/gpt-4o, demo/echo]", "targets: [up/gpt-4o, up/gpt-5]")
    issue = only(issues_of(text))
    assert (issue.place, issue.line) == ("routes[0].targets[1]", line_of(text, "targets:"))
    assert "'up/gpt-5' is not an exposed model" in issue.message


def test_route_target_that_discovery_may_expose_is_accepted() -> None:
    text = BASE.replace("    models: [gpt-4o, gpt-4o-mini]\n",
                        "    models: [gpt-4o]\n    discover: {enabled: true, include: ['gpt-5*']}\n")
    parse_config(text.replace("up/gpt-4o, demo/echo", "up/gpt-5, demo/echo"), ENV)
    issues = issues_of(text.replace("up/gpt-4o, demo/echo", "up/o3, demo/echo"))
    assert only(issues).place == "routes[0].targets[0]"


def test_several_errors_are_all_reported_in_file_order() -> None:
    text = (BASE.replace("    status: true\n", "    status: true\n    colour: red\n")
            .replace("${UP_KEY}", "${NOT_SET_ANYWHERE}")
            .replace("type: echo", "type: magic")
            .replace("  - name: admin\n", "  - name: team\n")
            + "  - name: smart\n    targets: [demo/echo]\n")
    issues = issues_of(text)
    places = [i.place for i in issues]
    assert places == ["keys[1].name", "keys[1].colour", "providers[0].api_key", "providers[1].type",
                      "routes[1].name"], [str(i) for i in issues]
    assert [i.line for i in issues] == sorted(i.line or 0 for i in issues)


def test_routing_conflicts_are_reported_alongside_other_errors() -> None:
    text = (NO_ROUTES.replace("    prefix: demo\n    models: [echo]\n", "    prefix: up\n    models: [gpt-4o]\n")
            + "  - name: broken\n    type: magic\n    models: [x]\n"
            + "routes:\n  - name: up/gpt-4o-mini\n    targets: [up/gpt-4o]\n")
    issues = issues_of(text)
    assert [(i.place, i.line) for i in issues] == [
        ("providers[1].models[0]", line_of(text, "models: [gpt-4o]", 1)),
        ("providers[2].type", line_of(text, "type: magic")),
        ("routes[0].name", line_of(text, "- name: up/gpt-4o-mini")),
    ], [str(i) for i in issues]
    assert "claimed by providers[0].models[1]" in issues[2].message


def test_a_missing_env_var_and_a_routing_conflict_are_reported_together() -> None:
    text = (NO_ROUTES.replace("${UP_KEY}", "${NOT_SET_ANYWHERE}")
            .replace("    prefix: demo\n    models: [echo]\n", "    prefix: up\n    models: [gpt-4o-mini]\n"))
    assert [i.place for i in issues_of(text)] == ["providers[0].api_key", "providers[1].models[0]"]


def test_no_message_quotes_a_value_from_the_file() -> None:
    secret = "sk-live-THIS-MUST-NEVER-BE-SHOWN-0123456789"
    text = (BASE.replace("key: sk-admin-literal", f"key_sha256: {secret}")
            .replace("api_key: ${UP_KEY}", f"api_key: {secret}\n    retries: {secret}")
            .replace("http://127.0.0.1:9/v1", f"http://user:{secret}@bad host/v1")
            .replace("    type: echo\n", f"    type: echo\n    headers: {{Authorization: {secret}}}\n"
                                       f"    stream_mode: {secret}\n"))
    issues = issues_of(text)
    assert len(issues) >= 4
    for issue in issues:
        assert secret not in str(issue)
        assert "THIS-MUST-NEVER" not in str(issue)


def test_env_values_never_appear_in_messages() -> None:
    secret = "sk-from-env-SECRET-value-42"
    text = BASE.replace("    prefix: up\n", "    prefix: up\n    retries: ${UP_KEY}\n")
    issue = only(issues_of(text, {**ENV, "UP_KEY": secret}))
    assert issue.place == "providers[0].retries"
    assert secret not in str(issue)


def test_the_file_must_be_a_mapping() -> None:
    issue = only(issues_of("- just\n- a list\n"))
    assert "must be a YAML mapping" in issue.message


def test_missing_and_non_utf8_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(bad)


def test_allow_missing_env_turns_unset_variables_into_located_warnings() -> None:
    text = BASE.replace("${UP_KEY}", "${NOT_SET_ANYWHERE}")
    loaded = parse_config(text, ENV, allow_missing_env=True)
    assert [(w.place, w.line) for w in loaded.warnings] == [("providers[0].api_key", line_of(text, "api_key:"))]
    # other problems still fail
    with pytest.raises(ConfigError):
        parse_config(text.replace("type: echo", "type: magic"), ENV, allow_missing_env=True)


def test_the_example_config_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    loaded = load_config(root / "gateway.yaml.example", env={})
    assert [p.name for p in loaded.config.providers] == ["demo"]


# ---------------------------------------------------------------- hostile files: bounded work, located errors
def billion_laughs(levels: int = 10, width: int = 10) -> str:
    """The classic alias bomb: about 2 KB that expands to ``width ** levels`` nodes."""
    rows = [f"lol0: &lol0 [{', '.join(['lol'] * width)}]"]
    rows += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(rows) + "\n"


def test_an_alias_bomb_is_refused_at_its_line_without_expanding_it() -> None:
    text = BASE + billion_laughs()
    assert len(text) < 2048
    tracemalloc.start()
    try:
        issue = only(issues_of(text))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert issue.message == f"the YAML holds more than {MAX_NODES} nodes once its aliases are expanded"
    assert issue.line == line_of(text, "lol4: &lol4")  # 11 + 110 + 1,110 + 11,110 + 111,110 nodes
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB to refuse a 2 KB file"


def test_anchors_aliases_and_merge_keys_within_the_limits_still_work() -> None:
    text = BASE.replace("  - name: up\n", "  - &up\n    name: up\n").replace(
        "routes:", "  - <<: *up\n    name: up2\n    prefix: up2\n    models: *models\nroutes:").replace(
        "models: [gpt-4o, gpt-4o-mini]", "models: &models [gpt-4o, gpt-4o-mini]")
    config = parse_config(text, ENV).config
    assert [(p.name, p.prefix, p.base_url, p.models) for p in config.providers[::2]] == [
        ("up", "up", "http://127.0.0.1:9/v1", ("gpt-4o", "gpt-4o-mini")),
        ("up2", "up2", "http://127.0.0.1:9/v1", ("gpt-4o", "gpt-4o-mini"))]


@pytest.mark.parametrize("shape", ["flow", "block", "aliases"])
def test_nesting_deeper_than_the_limit_is_a_located_error_not_a_recursion_error(shape: str) -> None:
    levels = 3000
    if shape == "flow":  # a: [[[[...]]]] on one line
        text = BASE + "deep: " + "[" * levels + "]" * levels + "\n"
        first_too_deep = line_of(text, "deep:")
    elif shape == "block":  # one mapping inside the next, one space more each line
        text = BASE + "".join(" " * i + f"k{i}:\n" for i in range(levels // 5)) + " " * (levels // 5) + "end\n"
        first_too_deep = line_of(text, f"k{MAX_DEPTH - 1}:")  # key k<i> is at level i + 2 (the top mapping: 1)
    else:  # each anchor one level deeper than the one it names: short lines, deep once expanded
        text = BASE + "d0: &d0 [x]\n" + "".join(f"d{i}: &d{i} [*d{i - 1}]\n" for i in range(1, levels // 5))
        first_too_deep = line_of(text, f"d{MAX_DEPTH - 2}: ")
    issue = only(issues_of(text))
    assert issue.message == f"the YAML nests deeper than {MAX_DEPTH} levels (aliases expanded)"
    assert issue.line == first_too_deep


@pytest.mark.parametrize("text", ["loop: &loop [1, *loop]\n", "loop: &loop {me: *loop}\n"])
def test_a_recursive_alias_is_a_located_error(text: str) -> None:
    issue = only(issues_of(BASE + text))
    assert issue.message == "an alias inside the node its anchor names (a recursive alias) is not allowed"
    assert issue.line == BASE.count("\n") + 1


def test_a_recursion_error_never_escapes_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_yaml, "MAX_DEPTH", 10**9)  # as if the nesting limit were missed
    text = BASE + "deep: " + "[" * 1500 + "]" * 1500 + "\n"
    assert only(issues_of(text)).message == "the file nests too deeply to be read"


def test_a_config_larger_than_1_mib_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    assert MAX_CONFIG_BYTES == 1024 * 1024
    message = f"the file is larger than 1024 KiB ({MAX_CONFIG_BYTES} bytes), the most a config may be"
    too_big = BASE + "#" * (MAX_CONFIG_BYTES - len(BASE)) + "\n"
    assert only(issues_of(too_big)).message == message
    path = tmp_path / "big.yaml"
    path.write_text(too_big + "#" * 10 * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    assert [(i.place, i.line, i.message) for i in info.value.issues] == [("", None, message)]


def test_a_config_of_exactly_the_size_limit_is_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_yaml, "MAX_CONFIG_BYTES", len(BASE.encode()) + 100)  # 1 MiB of YAML parses slowly
    exact = BASE + "# " + "é" * 48 + ".\n"  # counted in bytes, not characters
    assert len(exact.encode()) == config_yaml.MAX_CONFIG_BYTES
    path = tmp_path / "exact.yaml"
    path.write_text(exact)
    assert load_config(path, ENV).config.version == 1
    path.write_text(exact + "\n")
    with pytest.raises(ConfigError, match="the file is larger than"):
        load_config(path, ENV)
    with pytest.raises(ConfigError, match="the file is larger than"):
        parse_config("#" + exact, ENV)
