"""The ``sagips`` command as Hydra users know it (issue 12 items 2, 8, 9; issue 14 items 2, 4):
help, ``experiment=NAME``, ``--cfg``/``--resolve``/``--info``, shell completion, and run folders
named after the overrides that define the experiment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sagips.launch.naming import MAX_NAME_BYTES, run_name, swept_unnamed_keys
from sagips.paths import conf_dir
from tests.conftest import launch_only, needs_mpi, run_sagips, summary


def sagips(*args: str, cwd: Path, env: dict[str, str] | None = None):
    out = run_sagips(*args, cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


# --- Hydra's conventions -----------------------------------------------------------------
def test_help_names_sagips_says_what_it_does_and_shows_the_main_commands(tmp_path):
    text = sagips("--help", cwd=tmp_path).stdout
    assert text.startswith("sagips ") and "powered by Hydra" not in text
    for command in ("sagips -m experiment=", "cluster=slurm", "sagips-analyze", "sagips-bench", "--cfg job"):
        assert command in text, command
    assert "mode: allreduce, arar, arar_arar, ensemble, rma_arar_arar" in text  # the config groups


def test_experiment_works_with_and_without_the_plus(tmp_path):
    plain = sagips("experiment=h_sweep", "--cfg", "job", cwd=tmp_path).stdout
    plus = sagips("+experiment=h_sweep", "--cfg", "job", cwd=tmp_path).stdout
    assert plain == plus and "study: h_sweep" in plain and "mode: rma_arar_arar" in plain


def test_cfg_resolve_shows_the_run_folder_and_info_the_search_path(tmp_path):
    text = sagips("--cfg", "hydra", "--resolve", "ranks=2", "cluster.mpiexec=mpirun", cwd=tmp_path).stdout
    assert "dir: outputs/ranks=2\n" in text
    info = sagips("--info", "searchpath", cwd=tmp_path).stdout
    assert "Config search path" in info and str(conf_dir()) in info


@pytest.mark.parametrize("line,expected", [
    ("sagips mo", {"mode=", "model="}),
    ("sagips experiment=ta", {"experiment=table4_convergence"}),
    ("sagips train.ep", {"train.epochs="}),
])  # fmt: skip
def test_shell_completion_answers(tmp_path, line, expected):
    env = {"COMP_LINE": line, "COMP_POINT": str(len(line))}
    words = set(sagips("-sc", "query=bash", cwd=tmp_path, env=env).stdout.split())
    assert expected <= words, words


# --- run folder names --------------------------------------------------------------------
def test_keys_a_resume_may_change_leave_the_name_by_prefix():
    unnamed = ["cluster=slurm", "cluster.partition=gpu", "cluster.any_new_key=1", "+experiment=h_sweep",
               "train.epochs=30", "train.checkpoint_every=5", "train.log_every=1", "train.threads=1",
               "train.device=cpu", "train.nonfinite=skip", "train.straggler.ms=30",
               "train.straggler.ranks=[1]"]
    assert run_name(["ranks=2", *unnamed, "seed=3"]) == "ranks=2,seed=3"
    assert run_name([]) == run_name(["cluster=pbs"]) == "default"
    assert run_name(["train.lr_g=1e-3", "train.epochs_x=1"]) == "train.epochs_x=1,train.lr_g=1e-3"
    assert run_name(["seed=1", "mode=arar"]) == run_name(["mode=arar", "seed=1"]) == "mode=arar,seed=1"
    assert run_name(["seed=1", "train.epochs=5"], "train.epochs") == "seed=1,train.epochs=5"


def test_a_long_override_list_keeps_its_leading_keys_and_a_hash_of_all():
    overrides = [f"transport.key_{i}=value_{i}" for i in range(30)]
    name = run_name(overrides)
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name.startswith(",".join(sorted(overrides)[:3]) + ",") and name.count(",") < len(overrides)
    assert run_name(list(reversed(overrides))) == name  # the same overrides find the same folder
    other = run_name([*overrides[:-1], "transport.key_29=other"])
    assert other != name and other.rsplit("_", 1)[0] == name.rsplit("_", 1)[0]  # only the hash differs
    assert len(run_name(["proxy.truth=[" + ",".join(["1.0"] * 40) + "]"]).encode()) <= MAX_NAME_BYTES


def test_a_sweep_names_its_folders_by_the_resumable_keys_it_varies():
    jobs = [["seed=0", "train.epochs=10", "cluster.partition=a"], ["seed=0", "train.epochs=20",
                                                                    "cluster.partition=a"]]  # fmt: skip
    assert swept_unnamed_keys(jobs) == ["train.epochs"]
    assert swept_unnamed_keys([["seed=0"], ["seed=1"]]) == []


@needs_mpi
def test_a_higher_train_epochs_extends_the_run_in_its_folder(tmp_path):
    sagips("train.epochs=10", "train.checkpoint_every=5", cwd=tmp_path)
    again = sagips("train.epochs=20", "train.checkpoint_every=5", "train.log_every=2", cwd=tmp_path)
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["default"]
    s = summary(tmp_path / "outputs" / "default")
    assert (s["epochs"], s["resumed_from_epoch"]) == (20, 10) and "resuming" in again.stderr


@needs_mpi
@pytest.mark.slow
def test_a_sweep_over_a_resumable_key_gives_each_job_its_folder(tmp_path):
    sagips("-m", "train.epochs=4,6", "train.checkpoint_every=2", cwd=tmp_path)
    sweep = tmp_path / "multirun" / "sweep"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["train.epochs=4", "train.epochs=6"]
    assert [summary(sweep / f"train.epochs={n}")["epochs"] for n in (4, 6)] == [4, 6]


# The command of issue 14 item 2; transport.rma_sync, which is being replaced, gave way to transport.fuse.
LONG = ("scale=smoke", "ranks=2", "ranks_per_node=1", "mode=rma_arar_arar", "transport.algorithm=chunked",
        "transport.outer_member=random", "transport.fuse=false", "train.lr_schedule=cosine",
        "train.lr_g=2e-4", "train.lr_d=2e-4", "train.epochs=40", "proxy.norm_weight=0.5",
        "train.straggler.ms=5", "train.straggler.ranks=[1]", "seed=0,1")  # fmt: skip


@needs_mpi
@pytest.mark.slow
def test_the_long_override_list_of_issue_14_runs_and_finds_its_folders_again(tmp_path):
    sagips("-m", *LONG, cwd=tmp_path)
    runs = sorted(p for p in (tmp_path / "multirun" / "sweep").iterdir() if p.is_dir())
    assert len(runs) == 2
    for seed, run in enumerate(runs):
        assert len(run.name.encode()) <= MAX_NAME_BYTES
        assert run.name.startswith("mode=rma_arar_arar,proxy.norm_weight=0.5,ranks=2,ranks_per_node=1,")
        assert (summary(run)["status"], summary(run)["seed"]) == ("complete", seed)
    again = sagips("-m", *LONG, cwd=tmp_path)
    assert again.stderr.count("is complete; nothing to do") == 2


# --- warnings before a job starts --------------------------------------------------------
@pytest.mark.parametrize("mode,ranks_per_node,h,warned", [
    ("arar_arar", 1, 50, True),
    ("rma_arar_arar", 1, 11, True),
    ("arar_arar", 1, 10, False),  # the outer ring runs at epoch 10
    ("arar_arar", 2, 50, False),  # one inner group spans every rank: no outer ring to miss
    ("arar", 1, 50, False),
])  # fmt: skip
def test_an_outer_ring_that_never_runs_is_warned_about(tmp_path, mode, ranks_per_node, h, warned):
    out = launch_only(f"mode={mode}", "ranks=2", f"ranks_per_node={ranks_per_node}", f"h={h}",
                      "train.epochs=10", cwd=tmp_path)  # fmt: skip
    lines = [line for line in out.stderr.splitlines() if "outer ring" in line]
    assert len(lines) == int(warned), out.stderr
    if warned:
        assert "WARNING" in lines[0] and f"h={h} > train.epochs=10" in lines[0], lines[0]
        assert "2 inner groups train apart" in lines[0]



def test_a_site_cluster_file_on_hydras_search_path_is_found(tmp_path):
    site = tmp_path / "site" / "cluster"
    site.mkdir(parents=True)
    (site / "mysite.yaml").write_text("# @package _global_\ndefaults:\n  - slurm\n"
                                      "cluster:\n  partition: gpu\n")  # fmt: skip
    job = sagips(f"hydra.searchpath=[file://{site.parent}]", "cluster=mysite", "--cfg", "job", cwd=tmp_path)
    assert "name: slurm\n  partition: gpu\n" in job.stdout


@needs_mpi
@pytest.mark.slow
def test_a_job_launched_in_another_process_names_its_folder_the_same(tmp_path):
    """Slurm jobs resolve their folder in a process of their own, as submitit's local launcher does."""
    sagips("-m", "hydra/launcher=submitit_local", "train.epochs=2", "seed=5", cwd=tmp_path)
    assert summary(tmp_path / "multirun" / "sweep" / "seed=5")["status"] == "complete"
