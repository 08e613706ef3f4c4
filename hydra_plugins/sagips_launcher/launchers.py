"""The launcher plugins of sagips; Hydra finds them by scanning the ``hydra_plugins`` namespace.

Thin on purpose: Hydra imports this module in every Hydra app of the environment, so
the work lives in ``sagips.launch.sweep`` and ``sagips.launch.slurm``, imported when a
sweep starts. (Hydra accepts launcher classes from ``hydra_plugins`` only.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig


class LocalSweepLauncher(Launcher):
    """``cluster=local``: each job its own process and MPI world, ``cluster.parallel_jobs`` at once."""

    def __init__(self, parallel_jobs: Any = "auto") -> None:
        self.parallel_jobs = parallel_jobs
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from sagips.launch.sweep import launch

        return launch(self, job_overrides, initial_job_idx)


class SlurmSweepLauncher(SlurmLauncher):
    """``cluster=slurm``: hydra-submitit-launcher's, with one job array per resource shape."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from sagips.launch.slurm import launch

        return launch(self, job_overrides, initial_job_idx)
