"""The Makefile's set-up targets, read with ``make -n`` (nothing is installed or run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT


def dry_run(target: str, venv: Path) -> list[str]:
    """The commands ``make TARGET`` would run for a venv that does not exist yet."""
    if shutil.which("make") is None:
        pytest.fail("make is missing (apt-get install make)", pytrace=False)
    out = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def installs(lines: list[str]) -> list[str]:
    return [ln for ln in lines if "pip install" in ln and "-e" in ln]


def test_make_run_installs_only_the_runtime_dependencies(tmp_path: Path) -> None:
    lines = dry_run("run", tmp_path / "venv")
    assert installs(lines) and not any("[dev]" in ln for ln in installs(lines)), lines
    assert "-c requirements.lock" in installs(lines)[0]
    assert any("vte-proxy serve" in ln for ln in lines)


@pytest.mark.parametrize("target", ["test", "dev", "lint"])
def test_test_and_dev_targets_install_the_dev_extras(tmp_path: Path, target: str) -> None:
    assert any("'.[dev]'" in ln for ln in installs(dry_run(target, tmp_path / "venv")))


def test_make_run_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    (serve,) = [ln for ln in dry_run("run", tmp_path / "venv") if "vte-proxy serve" in ln]
    assert "--host 127.0.0.1" in serve
    out = subprocess.run(["make", "-n", "run", f"VENV={tmp_path / 'venv'}", "HOST=0.0.0.0"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--host 0.0.0.0" in out
