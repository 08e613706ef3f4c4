"""Gradient transports with real mpiexec: ring maths (1 to 5 ranks), the asynchronous RMA-ARAR
inner group (what it uses is what peers published, never a torn read, a sleeping rank holds no
one back) and end-to-end invariants of real runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import summary

MPIEXEC = shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not on PATH")
HERE = Path(__file__).parent
DEADLOCK_BOUND_S = 240


def mpi_program(name: str, ranks: int, *args: str) -> str:
    out = subprocess.run(
        [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", str(HERE / "mpi" / name), *args],
        capture_output=True, text=True, timeout=120, cwd=HERE.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5])
def test_reducers_equal_numpy_mean(ranks):
    assert f"ring-check OK {ranks}" in mpi_program("ring_check.py", ranks)


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_async_rma_uses_exactly_what_peers_published(ranks):
    assert f"rma-check OK {ranks}" in mpi_program("rma_check.py", ranks)


@pytest.mark.parametrize("ranks", [2, 4])
def test_slots_never_hand_out_a_half_written_contribution(ranks):
    assert f"slots-stress OK {ranks}" in mpi_program("slots_stress.py", ranks)


def test_grouped_schedule_follows_table_1():
    assert "grouped-check OK" in mpi_program("grouped_check.py", 4)


def test_ring_modes_share_half_the_data_and_baselines_see_all(tmp_path):
    assert "data-share OK" in mpi_program("data_share_check.py", 2, str(tmp_path))


def generator(path: Path) -> torch.Tensor:
    state = torch.load(path, weights_only=True)["state_dict"]
    return torch.cat([v.reshape(-1) for v in state.values()])


def final_generators(run_dir: Path, ranks: int) -> list[torch.Tensor]:
    return [generator(sorted((run_dir / "checkpoints" / f"rank{r}").glob("generator_*.pt"))[-1])
            for r in range(ranks)]  # fmt: skip


def train(sagips_cli, tmp_path: Path, name: str, *overrides: str) -> Path:
    run_dir = tmp_path / name
    out = sagips_cli("scale=smoke", "ranks=4", "transport.weights_only=false", "train.threads=1",
                     f"hydra.run.dir={run_dir}", *overrides, timeout=DEADLOCK_BOUND_S)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert summary(run_dir)["status"] == "complete"
    return run_dir


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.slow
def test_synchronous_modes_keep_replicas_identical(sagips_cli, tmp_path):
    arar = final_generators(train(sagips_cli, tmp_path, "arar", "mode=arar"), 4)
    allreduce = final_generators(
        train(sagips_cli, tmp_path, "allreduce", "mode=allreduce", "train.data_fraction=0.5"), 4
    )
    for g in arar[1:] + allreduce:
        assert max_diff(g, arar[0]) < 1e-5


@pytest.mark.slow
def test_grouped_modes_keep_inner_groups_identical(sagips_cli, tmp_path):
    runs = {}
    for mode in ("arar_arar", "rma_arar_arar"):
        run = train(sagips_cli, tmp_path, mode, f"mode={mode}", "ranks_per_node=2", "h=1000",
                    "transport.max_staleness=0")  # fmt: skip
        runs[mode] = final_generators(run, 4)
    g = runs["arar_arar"]
    assert max_diff(g[0], g[1]) == 0 and max_diff(g[2], g[3]) == 0
    assert max_diff(g[0], g[2]) > 1e-4  # no outer round: the two nodes drift apart
    for a, b in zip(runs["rma_arar_arar"], g):  # max_staleness=0: the ARAR ring, bit for bit
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("h", [3, 5])
def test_outer_ring_first_couples_the_groups_at_epoch_h(sagips_cli, tmp_path, h):
    """Two one-rank groups: up to epoch h-1 the run equals one without outer rounds, from h on not."""
    runs = {}
    for label, value in (("h", h), ("never", 1000)):
        run = tmp_path / f"{label}{h}"
        out = sagips_cli("scale=smoke", "mode=arar_arar", "ranks=2", "ranks_per_node=1", f"h={value}",
                         "train.threads=1", "train.epochs=8", "train.checkpoint_every=1",
                         f"hydra.run.dir={run}", timeout=DEADLOCK_BOUND_S)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        runs[label] = run
    for epoch in range(1, 9):
        for rank in range(2):
            path = Path("checkpoints") / f"rank{rank}" / f"generator_{epoch:07d}.pt"
            same = torch.equal(generator(runs["h"] / path), generator(runs["never"] / path))
            assert same == (epoch < h), (epoch, rank)


@pytest.mark.slow
def test_ensemble_members_all_differ(sagips_cli, tmp_path):
    g = final_generators(train(sagips_cli, tmp_path, "ens", "mode=ensemble"), 4)
    assert min(max_diff(a, b) for i, a in enumerate(g) for b in g[i + 1 :]) > 1e-3


def staleness_column(run: Path, rank: int) -> list[float]:
    rows = (run / "metrics" / f"rank{rank}.csv").read_text().splitlines()
    column = rows[0].split(",").index("staleness")
    return [float(line.split(",")[column]) for line in rows[1:]]


@pytest.mark.slow
def test_async_rma_lets_the_fast_rank_run_ahead_up_to_the_bound(sagips_cli, tmp_path):
    """Rank 1 sleeps 30 ms per epoch; rank 0 uses its contributions up to 3 epochs old, never older."""
    run = tmp_path / "rma"
    out = sagips_cli("scale=smoke", "mode=rma_arar_arar", "ranks=2", "transport.max_staleness=3",
                     "train.straggler.ms=30", "train.straggler.ranks=[1]", "train.epochs=40",
                     "train.log_every=1", f"hydra.run.dir={run}", timeout=DEADLOCK_BOUND_S)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    s = summary(run)
    fast, slow = staleness_column(run, 0), staleness_column(run, 1)
    assert max(fast) == 3 and s["max_staleness_epochs"] == 3
    assert max(slow) == 0  # the slow rank always finds the fast rank's newer contributions
    assert 0 < s["mean_staleness_epochs"] <= 3
