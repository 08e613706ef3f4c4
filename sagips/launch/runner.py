"""The Hydra task: validate, prepare the run folder, then start the MPI world.

Nothing is written into the run folder before the config passed every check, so
bad input never damages earlier results. The same command on an unfinished
folder resumes it; on a finished one it does nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sagips import checkpoints as ck
from sagips.config import ConfigError, param_samples, validate

log = logging.getLogger("sagips")

# Keys that may change between a run and its resume: how and where it runs, how
# often it reports, and train.epochs upwards (extending a finished run).
RESUMABLE = ("cluster", "train.log_every", "train.checkpoint_every", "train.threads",
             "train.device", "train.straggler", "train.nonfinite")  # fmt: skip
CPU_EVENTS_PER_S = 5e4  # a 2-core CPU, both steps; for the "are you sure" estimate only
ABSURD_HOURS = 24.0


class JobFailed(RuntimeError):
    """The MPI job of one run folder ended badly; a sweep goes on with its other jobs."""


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, Mapping) else {key: v})
    return out


def resume_conflicts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose change would make a resume mix two different experiments."""
    a, b = _flatten(old), _flatten(new)
    bad = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key) or any(key == r or key.startswith(r + ".") for r in RESUMABLE):
            continue
        if key == "train.epochs" and isinstance(a.get(key), int) and b[key] >= a[key]:
            continue
        bad.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return bad


def _check_folder(run_dir: Path, cfg: dict[str, Any]) -> str:
    """'new', 'resume' or 'complete'; raises ConfigError when the folder cannot be used."""
    old_cfg = ck.config_path(run_dir)
    if not old_cfg.exists():
        state = "new"
    else:
        conflicts = resume_conflicts(OmegaConf.to_container(OmegaConf.load(old_cfg)), cfg)
        if conflicts:
            raise ConfigError("hydra.run.dir", str(run_dir),
                              "holds a run with another config: " + "; ".join(conflicts))  # fmt: skip
        summary = ck.read_summary(run_dir)
        done = summary and summary.get("status") == "complete"
        state = "complete" if done and summary["epochs"] >= cfg["train"]["epochs"] else "resume"
    try:
        # A probe of its own: under Slurm every task of the job checks the same folder at once.
        fd, probe = tempfile.mkstemp(prefix=ck.TMP_PREFIX, dir=run_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError("hydra.run.dir", str(run_dir), f"not writable ({exc.strerror})") from exc
    return state


def _mpiexec(cfg: DictConfig) -> str:
    found = shutil.which(cfg.cluster.mpiexec)
    if found is None:
        raise ConfigError("cluster.mpiexec", cfg.cluster.mpiexec,
                          "not found on PATH (pip install 'sagips[mpi]' or load your site MPI)")  # fmt: skip
    return found


def _warn_if_absurd(cfg: dict[str, Any]) -> None:
    events = param_samples(cfg) * cfg["train"]["events_per_sample"] * cfg["train"]["epochs"]
    hours = events / CPU_EVENTS_PER_S / 3600
    if hours <= ABSURD_HOURS:
        return
    import torch  # only now: loading it costs the launcher seconds

    if not torch.cuda.is_available():
        log.warning("scale=%s on a CPU: about %.0f hours per rank by a rough estimate; "
                    "it will run, but this scale is meant for GPU clusters", cfg["scale"], hours)  # fmt: skip


def _fail(message: str, run_dir: Path) -> NoReturn:
    # A folder that Hydra created for this bad command alone is removed again.
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        _job_failed(message)  # a bad job of a sweep must not stop the others
    print(f"sagips: error: {message}", file=sys.stderr)
    sys.exit(2)


def _job_failed(message: str) -> NoReturn:
    log.error("%s", message)  # now: Hydra reports only the first failure, at the sweep's end
    raise JobFailed(message)


def prepare(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Any], str, str]:
    """Validate, find mpiexec (local runs) and classify the run folder.

    Exits with a one-line error on bad input.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    try:
        validate(plain)
        mpiexec = _mpiexec(cfg) if cfg.cluster.name == "local" else ""
        state = _check_folder(run_dir, plain)
    except ConfigError as exc:
        _fail(str(exc), run_dir)
    _warn_if_absurd(plain)
    return plain, state, mpiexec


def write_config(run_dir: Path, plain: dict[str, Any], overrides: list[str]) -> None:
    ck.atomic_write(ck.config_path(run_dir), lambda f: f.write(OmegaConf.to_yaml(plain)), "w")
    ck.atomic_write(run_dir / ".hydra" / "overrides.yaml",
                    lambda f: f.write(OmegaConf.to_yaml(list(overrides))), "w")  # fmt: skip


def run_job(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    plain, state, mpiexec = prepare(cfg, run_dir)
    if state == "complete":
        log.info("%s is complete; nothing to do", run_dir)
        return
    if state == "resume":
        ck.summary_path(run_dir).unlink(missing_ok=True)  # extending a finished run
    write_config(run_dir, plain, list(hc.overrides.task))
    resolved = OmegaConf.create(plain)
    if cfg.cluster.name == "local":
        from sagips.launch.local import run_mpiexec

        log.info("%s %s with %d ranks: %s", "resuming" if state == "resume" else "starting",
                 cfg.mode, cfg.ranks, run_dir)  # fmt: skip
        rc, culprit = run_mpiexec(resolved, run_dir, mpiexec)
        if rc:
            message = f"job {run_dir} failed (exit {rc}): {culprit}"
            if hc.mode == RunMode.MULTIRUN:
                _job_failed(message)
            print(f"sagips: error: {message}", file=sys.stderr)
            sys.exit(rc if 0 < rc < 256 else 1)
    elif cfg.cluster.name == "slurm":
        from sagips.launch.slurm import run_in_allocation

        run_in_allocation(resolved, run_dir)
    else:
        from sagips.launch.pbs import submit

        submit(resolved, run_dir)
