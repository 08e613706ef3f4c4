"""Shared helpers: the suite drives the real ``sagips`` CLI in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sagips.launch.naming import register_resolvers

SMOKE_TIMEOUT_S = 300
register_resolvers()  # for the tests that compose configs in this process
needs_mpi = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")


def run_sagips(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = SMOKE_TIMEOUT_S,
    module: str = "sagips",
) -> subprocess.CompletedProcess[str]:
    """``python -m sagips ARGS`` (or another module) with captured text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def launch_only(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI up to the job's start: ``true`` stands in for mpiexec, so no rank runs.

    What comes before the start (validation, warnings) is what the caller tests; the job
    itself must then fail, because an mpiexec that exits 0 without a summary.json is no run.
    """
    run = cwd / "run"
    out = run_sagips(*args, f"cluster.mpiexec={shutil.which('true')}", f"hydra.run.dir={run}", cwd=cwd)
    assert "starting" in out.stderr, out.stderr[-2000:]
    assert out.returncode == 1 and "mpiexec exited 0 but the run wrote no summary.json" in out.stderr
    return out


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture
def sagips_cli(tmp_path: Path):
    """Run the CLI in ``tmp_path``; ``sagips_cli("scale=smoke", ...)``."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = SMOKE_TIMEOUT_S):
        return run_sagips(*args, cwd=tmp_path, env=env, timeout=timeout)

    return run
