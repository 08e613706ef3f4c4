"""The Hydra task: validate, take the run folder, then start the MPI world.

Nothing is written into the run folder before the config passed every check, so
bad input never damages earlier results. The same command on an unfinished
folder resumes it; on a finished one it does nothing; while another launcher
runs it, it is refused (``sagips.launch.lock``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sagips import checkpoints as ck
from sagips.config import check_device, param_samples, validate
from sagips.errors import ConfigError, JobFailed
from sagips.launch import local, pbs, slurm
from sagips.launch.lock import run_lock
from sagips.launch.naming import RESUMABLE, under
from sagips.modes import GROUPED

log = logging.getLogger("sagips")
CPU_EVENTS_PER_S = 5e4  # a 2-core CPU, both steps; for the "are you sure" estimate only
ABSURD_HOURS = 24.0


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, Mapping) else {key: v})
    return out


def resume_conflicts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose change would make a resume mix two different experiments (all but ``RESUMABLE``)."""
    a, b = _flatten(old), _flatten(new)
    bad = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if key == "train.epochs":  # upwards only: extending a run
            if isinstance(a.get(key), int) and b[key] >= a[key]:
                continue
        elif under(key, RESUMABLE):
            continue
        bad.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return bad


def _check_config_matches(run_dir: Path, cfg: dict[str, Any]) -> None:
    old_cfg = ck.config_path(run_dir)
    if old_cfg.exists():
        conflicts = resume_conflicts(OmegaConf.to_container(OmegaConf.load(old_cfg)), cfg)
        if conflicts:
            raise ConfigError("hydra.run.dir", str(run_dir),
                              "holds a run with another config: " + "; ".join(conflicts))  # fmt: skip


def _check_writable(run_dir: Path) -> None:
    try:
        # A probe of its own: under Slurm every task of the job checks the same folder at once.
        fd, probe = tempfile.mkstemp(prefix=ck.TMP_PREFIX, dir=run_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError("hydra.run.dir", str(run_dir), f"not writable ({exc.strerror})") from exc


def folder_state(run_dir: Path, cfg: dict[str, Any]) -> str:
    """'new', 'resume' or 'complete' (when it holds every epoch ``cfg`` asks for)."""
    if not ck.config_path(run_dir).exists():
        return "new"
    summary = ck.read_summary(run_dir)
    done = summary and summary.get("status") == "complete"
    return "complete" if done and summary["epochs"] >= cfg["train"]["epochs"] else "resume"


def _check_mpiexec(cfg: dict[str, Any]) -> None:
    if cfg["cluster"]["name"] == "local" and shutil.which(cfg["cluster"]["mpiexec"]) is None:
        raise ConfigError("cluster.mpiexec", cfg["cluster"]["mpiexec"],
                          "not found on PATH (pip install 'sagips[mpi]' or load your site MPI)")  # fmt: skip


def _check_device(cfg: dict[str, Any]) -> None:
    # A PBS job is submitted from a login node, which may have no GPU while the compute nodes do.
    if cfg["cluster"]["name"] != "pbs" and (reason := check_device(cfg["train"]["device"])):
        raise ConfigError("train.device", cfg["train"]["device"], reason)


def _warn_if_absurd(cfg: dict[str, Any]) -> None:
    events = param_samples(cfg) * cfg["train"]["events_per_sample"] * cfg["train"]["epochs"]
    hours = events / CPU_EVENTS_PER_S / 3600
    if hours <= ABSURD_HOURS:
        return
    import torch  # only now: loading it costs the launcher seconds

    if not torch.cuda.is_available():
        log.warning("scale=%s on a CPU: about %.0f hours per rank by a rough estimate; "
                    "it will run, but this scale is meant for GPU clusters", cfg["scale"], hours)  # fmt: skip


def _warn_if_outer_ring_idle(cfg: dict[str, Any]) -> None:
    """The outer ring runs at epochs h, 2h, ...: with h > train.epochs the inner groups never meet.

    (With one inner group there is no outer ring to miss: the inner ring spans every rank.)
    """
    groups, h, epochs = cfg["ranks"] // cfg["ranks_per_node"], cfg["h"], cfg["train"]["epochs"]
    if cfg["mode"] in GROUPED and groups > 1 and h > epochs:
        log.warning("h=%d > train.epochs=%d: the outer ring of mode=%s never runs, so its %d inner groups "
                    "train apart (lower h or raise train.epochs)", h, epochs, cfg["mode"], groups)


def _validated(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The resolved config as plain data, after every check that needs no lock."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    validate(plain)
    _check_mpiexec(plain)
    _check_device(plain)
    _check_config_matches(run_dir, plain)
    _check_writable(run_dir)
    _warn_if_absurd(plain)
    _warn_if_outer_ring_idle(plain)
    return plain


def write_config(run_dir: Path, plain: dict[str, Any], overrides: list[str]) -> None:
    ck.atomic_write(ck.config_path(run_dir), lambda f: f.write(OmegaConf.to_yaml(plain)), "w")
    ck.atomic_write(run_dir / ".hydra" / "overrides.yaml",
                    lambda f: f.write(OmegaConf.to_yaml(list(overrides))), "w")  # fmt: skip


# --- the launchers: (resolved config, run folder) -> None, JobFailed when the job failed ---------
def _run_local(cfg: DictConfig, run_dir: Path) -> None:
    rc, culprit = local.run_mpiexec(cfg, run_dir, shutil.which(cfg.cluster.mpiexec))
    if rc:
        raise JobFailed(f"job {run_dir} failed (exit {rc}): {culprit}", rc)
    if not ck.summary_path(run_dir).exists():  # rank 0 writes it last: no summary, no finished run
        raise JobFailed(f"job {run_dir} failed: mpiexec exited 0 but the run wrote no summary.json", 1)


LAUNCHERS: dict[str, Callable[[DictConfig, Path], None]] = {
    "local": _run_local,  # mpiexec on this machine, the launcher waits for the job
    "slurm": slurm.run_in_allocation,  # every task of the srun step is one rank
    "pbs": pbs.submit,  # writes RUN/job.pbs and submits it
}


def _speaks_for_the_job(cfg: DictConfig) -> bool:
    """Slurm runs this task in every task of the step; task 0 locks and writes for the job."""
    return cfg.cluster.name != "slurm" or os.environ.get("SLURM_PROCID", "0") == "0"


@contextmanager
def _reported(run_dir: Path) -> Iterator[None]:
    """In a sweep, log a job's failure when it happens (Hydra re-raises only the first, at the end);
    remove a folder that Hydra created for a refused command alone."""
    try:
        yield
    except (ConfigError, JobFailed) as exc:
        if isinstance(exc, ConfigError) and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("%s", exc)
        raise


def run_job(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    with _reported(run_dir):
        plain = _validated(cfg, run_dir)
        resolved = OmegaConf.create(plain)
        if not _speaks_for_the_job(cfg):
            if folder_state(run_dir, plain) != "complete":
                LAUNCHERS[cfg.cluster.name](resolved, run_dir)
            return
        with run_lock(run_dir):
            state = folder_state(run_dir, plain)
            if state == "complete":
                log.info("%s is complete; nothing to do", run_dir)
                return
            if state == "resume":
                ck.summary_path(run_dir).unlink(missing_ok=True)  # extending a finished run
            write_config(run_dir, plain, list(hc.overrides.task))
            log.info("%s %s with %d ranks: %s", "resuming" if state == "resume" else "starting",
                     cfg.mode, cfg.ranks, run_dir)  # fmt: skip
            LAUNCHERS[cfg.cluster.name](resolved, run_dir)
