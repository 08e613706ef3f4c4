"""The paper's studies under ``experiments/`` (issue 4): each composes at every scale, its own
sweep expands into valid jobs of the paper's sizes at ``scale=paper`` and of at most two ranks
at ``scale=smoke``, and ``table4_convergence`` runs end-to-end and feeds Tab. IV.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sagips.config import validate
from sagips.launch.naming import run_name, sweep_jobs
from sagips.paths import conf_dir
from tests.conftest import run_sagips, summary

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
# At scale=paper: (jobs, rank counts, modes) as the paper ran them.
PAPER = {
    "fig08_ensemble_models": (9, {20}, {"ensemble"}),
    "fig09_10_ensemble_size": (5, {20}, {"ensemble"}),
    "fig11_12_scaling": (24, {1, 4, 8, 20, 40, 100, 200, 400}, {"arar", "arar_arar", "rma_arar_arar"}),
    "fig14_16_weak_scaling": (240, {1, 2, 4, 8, 20, 60}, {"arar_arar", "rma_arar_arar"}),
    "h_sweep": (4, {200}, {"rma_arar_arar"}),
    "table4_convergence": (80, {8}, {"allreduce", "rma_arar_arar", "arar_arar", "arar"}),
    "jitter_async": (2, {4}, {"arar_arar", "rma_arar_arar"}),
    "staleness_bound": (5, {4}, {"rma_arar_arar"}),
}


def sweep(experiment: str, scale: str) -> list[dict]:
    """Every job of the experiment's own sweep as a resolved config (jobs differing only in seed once)."""
    base = [f"experiment={experiment}", f"scale={scale}"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=base, return_hydra_config=True)
        assert cfg.hydra.sweep.dir == f"multirun/{experiment}"
        params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
        (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
        seeds = {o for job in jobs for o in job if o.startswith("seed=")}
        kinds = dict.fromkeys(tuple(o for o in job if not o.startswith("seed=")) for job in jobs)
        configs = []
        for kind in kinds:
            job = compose(config_name="config", overrides=[*base, *kind])
            configs.append(OmegaConf.to_container(job, resolve=True))
    return [dict(c, jobs=len(jobs), seeds=max(1, len(seeds))) for c in configs]


def header(experiment: str) -> str:
    return (conf_dir() / "experiment" / f"{experiment}.yaml").read_text()


def test_every_study_is_listed() -> None:
    assert EXPERIMENTS == sorted(PAPER)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_study_says_what_it_feeds_and_how_to_run_it(experiment: str) -> None:
    text = (conf_dir() / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert re.match(r"# (Figs?\.|Tab\.|Section) ", text.splitlines()[1])  # what it feeds, first
    assert f"sagips -m experiment={experiment}" in text and "sagips-analyze" in text


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if f"multirun/{e}/" in header(e)])
def test_the_run_folders_a_study_names_are_those_its_command_makes(experiment: str) -> None:
    """``sagips-analyze multirun/STUDY/JOB`` in a header names a job of its ``scale=paper`` command."""
    named = re.findall(rf"sagips-analyze multirun/{experiment}/(\S+)", header(experiment))
    assert f"sagips -m experiment={experiment} scale=paper" in header(experiment)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}", "scale=paper"],
                      return_hydra_config=True)  # fmt: skip
        jobs = {run_name(job) for job in sweep_jobs(cfg)}
    assert named and set(named) <= jobs, jobs


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_at_paper_scale_a_study_has_the_papers_size(experiment: str) -> None:
    jobs = sweep(experiment, "paper")
    n_jobs, ranks, modes = PAPER[experiment]
    assert jobs[0]["jobs"] == n_jobs
    assert {j["ranks"] for j in jobs} == ranks
    assert {j["mode"] for j in jobs} == modes
    for job in jobs:
        validate(job)
        assert job["scale"] == "paper" and job["study"] == experiment
        assert job["ranks_per_node"] == min(job["ranks"], 4)  # a Polaris node: 4 GPUs


def test_the_studies_set_what_the_paper_fixed() -> None:
    assert {j["sampling"] for j in sweep("fig11_12_scaling", "paper")} == {"constant"}
    assert {j["h"] for j in sweep("fig11_12_scaling", "paper")} == {1000}
    assert {j["sampling"] for j in sweep("fig14_16_weak_scaling", "paper")} == {"per_rank"}
    table4 = sweep("table4_convergence", "paper")
    assert {j["mode"]: j["train"]["data_fraction"] for j in table4}["allreduce"] == 1.0
    assert {j["seeds"] for j in table4} == {20}
    ensemble = sweep("fig09_10_ensemble_size", "paper")
    assert ensemble[0]["ranks"] * ensemble[0]["seeds"] == 100  # members
    widths = {j["model"]["name"] for j in sweep("fig08_ensemble_models", "paper")}
    assert widths == {"small", "paper", "large"}


@pytest.mark.parametrize("scale", ["smoke", "laptop"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_small_scales_shrink_a_study(experiment: str, scale: str) -> None:
    jobs = sweep(experiment, scale)
    for job in jobs:
        validate(job)
        assert job["scale"] == scale
        assert job["ranks"] <= (2 if scale == "smoke" else 4)  # what 2 cores can run
    if scale == "smoke":
        assert jobs[0]["jobs"] <= 6


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")
@pytest.mark.slow
def test_table4_convergence_runs_at_smoke_scale_and_feeds_table4(tmp_path: Path) -> None:
    done = run_sagips("-m", "experiment=table4_convergence", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study = tmp_path / "multirun" / "table4_convergence"
    runs = sorted(p for p in study.iterdir() if p.is_dir())
    assert {summary(run)["mode"] for run in runs} == set(PAPER["table4_convergence"][2])
    assert all(summary(run)["status"] == "complete" for run in runs)
    out = tmp_path / "analysis"
    analyzed = run_sagips(str(study), "--out", str(out), cwd=tmp_path, module="sagips.analysis")
    assert analyzed.returncode == 0, analyzed.stderr
    header = (out / "table4.md").read_text().splitlines()[0]
    names = ("hvd [allreduce]", "RMA-ARAR [rma_arar_arar]", "ARAR [arar_arar]", "Conv. ARAR [arar]")
    assert all(f"| {name} |" in header for name in names)


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")
def test_a_command_line_value_wins_over_the_studys_sweep(tmp_path: Path) -> None:
    done = run_sagips("-m", "+experiment=h_sweep", "h=3", "train.epochs=6", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = (p for p in (tmp_path / "multirun" / "h_sweep").iterdir() if p.is_dir())
    assert run.name == "h=3" and summary(run)["h"] == 3  # train.epochs does not name a folder
