"""Bad input through the real CLI: one line naming key and value, exit 2, nothing written.

Every key of docs/interface.md gets at least one bad value: wrong type, out of range,
or inconsistent with another key. Each command is pointed at an existing,
finished run folder, which must stay byte-identical.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.conftest import launch_only, run_sagips

pytestmark = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")

TRUTH_WITH_P0 = "proxy.truth=[{},-0.5,3.0,1.09375,-0.5,4.0]"

# (overrides, key, the value as the message shows it); the comment says what is wrong.
CASES = [
    (["mode=fast"], "mode", "fast"),  # no such option
    (["mode=3"], "mode", "3"),
    (["ranks=abc"], "ranks", "abc"),  # type
    (["ranks=1.5"], "ranks", "1.5"),
    (["ranks=0"], "ranks", "0"),  # range
    (["ranks=-2"], "ranks", "-2"),
    (["ranks=4", "ranks_per_node=3"], "ranks_per_node", "3"),  # does not divide ranks
    (["ranks_per_node=0"], "ranks_per_node", "0"),
    (["ranks_per_node=two"], "ranks_per_node", "two"),
    (["h=0"], "h", "0"),
    (["h=often"], "h", "often"),
    (["sampling=random"], "sampling", "random"),
    (["sampling=per_rank", "ranks=17"], "sampling", "per_rank"),  # floor(16/17) = 0 samples
    (["scale=huge"], "scale", "huge"),
    (["seed=-1"], "seed", "-1"),
    (["seed=lucky"], "seed", "lucky"),
    (["seed=0.5"], "seed", "0.5"),
    (["cluster=cloud"], "cluster", "cloud"),
    (["cluster.mpiexec=/nonexistent/mpiexec"], "cluster.mpiexec", "/nonexistent/mpiexec"),
    (["+experiment=no_such_study"], "experiment", "no_such_study"),
    (["train.epochs=0"], "train.epochs", "0"),
    (["train.epochs=ten"], "train.epochs", "ten"),
    (["train.epochs=2.5"], "train.epochs", "2.5"),
    (["train.param_samples=-4"], "train.param_samples", "-4"),
    (["train.param_samples=many"], "train.param_samples", "many"),
    (["train.events_per_sample=0"], "train.events_per_sample", "0"),
    (["train.events_per_sample=1.5"], "train.events_per_sample", "1.5"),
    (["train.data_fraction=0"], "train.data_fraction", "0"),
    (["train.data_fraction=1.5"], "train.data_fraction", "1.5"),
    (["train.data_fraction=half"], "train.data_fraction", "half"),
    (["train.checkpoint_every=0"], "train.checkpoint_every", "0"),
    (["train.checkpoint_every=x"], "train.checkpoint_every", "x"),
    (["train.nonfinite=ignore"], "train.nonfinite", "ignore"),
    (["ranks=2", "train.straggler.ranks=[5]"], "train.straggler.ranks", "[5]"),  # no rank 5
    (["transport.max_staleness=-1"], "transport.max_staleness", "-1"),
    (["transport.max_staleness=1.5"], "transport.max_staleness", "1.5"),
    (["transport.max_staleness=often"], "transport.max_staleness", "often"),
    (["transport.rma_window=remote"], "transport.rma_window", "remote"),
    (["train.straggler.jitter_ms=-5"], "train.straggler.jitter_ms", "-5"),
    (["train.straggler.jitter_ms=lots"], "train.straggler.jitter_ms", "lots"),
    (["transport.weights_only=maybe"], "transport.weights_only", "maybe"),
    (["transport.weights_only=2"], "transport.weights_only", "2"),
    (["proxy.truth=[1,2]"], "proxy.truth", "[1, 2]"),  # wrong length
    (["proxy.truth=3"], "proxy.truth", "3"),
    ([TRUTH_WITH_P0.format(9)], "proxy.truth", "p0=9"),  # outside [pmin, pmax]
    ([TRUTH_WITH_P0.format(0)], "proxy.truth", "p0=0"),  # zero: eq. (6) divides by it
    ([TRUTH_WITH_P0.format("a")], "proxy.truth", "p0='a'"),  # not a number
    (["proxy.truth=[1,2"], "proxy.truth", "[1,2"),  # Hydra cannot parse it
    (["proxy.truth.x=1"], "proxy.truth.x=1", "proxy.truth is a list"),  # a list indexed by a name
    (["train.straggler.ranks.first=0"], "train.straggler.ranks.first=0", "train.straggler.ranks is a list"),
    (["proxy.truth.9=1"], "proxy.truth.9=1", "out of range"),
    (["proxy.truth={a:1}"], "proxy.truth={a:1}", "Cannot merge"),
    (["train.epoch=5"], "train.epoch", "5"),  # a typo: Hydra knows no such key
    (["train=5"], "train", "5"),  # a value where a group belongs
]
IDS = [" ".join(c[0]).replace("/", "|") for c in CASES]
# One case per path an error takes: group check, Hydra, validation, mpiexec lookup.
PLAIN = ("mode=fast", "train.epoch=5", "proxy.truth=[1,2", "ranks=0", "cluster.mpiexec=/nonexistent/mpiexec",
         "proxy.truth.x=1")


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with the hash of its bytes (folders map to '')."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(folder.rglob("*"))
    }


def error_line(out) -> str:
    """The whole of stderr, which must be exactly one 'sagips: error:' line."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sagips: error: "), out.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("existing") / "run"
    out = run_sagips("scale=smoke", f"hydra.run.dir={run}", cwd=run.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    return run


@pytest.fixture(scope="module")
def outcomes(finished_run, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, bool]]:
    """Each case against its own copy of the finished run: (CLI result, copy untouched?).

    The cases run four at a time: each one is mostly an interpreter starting up,
    and one after another they would take minutes on a 2-core CI machine.
    """
    root, original = tmp_path_factory.mktemp("cases"), snapshot(finished_run)

    def attempt(case: int) -> tuple[subprocess.CompletedProcess, bool]:
        run = shutil.copytree(finished_run, root / f"case{case}")
        out = run_sagips("scale=smoke", *CASES[case][0], f"hydra.run.dir={run}", cwd=root)
        return out, snapshot(run) == original

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(IDS, pool.map(attempt, range(len(CASES)))))


@pytest.mark.parametrize("overrides,key,shown", CASES, ids=IDS)
def test_bad_value_is_one_line_and_leaves_the_run_folder_alone(outcomes, request, overrides, key, shown):
    out, untouched = outcomes[request.node.callspec.id]
    assert out.returncode == 2
    line = error_line(out)
    assert key in line and shown in line, line
    assert untouched


@pytest.mark.parametrize("override", PLAIN)
def test_bad_value_without_run_dir_leaves_no_folder(tmp_path, override):
    out = run_sagips("scale=smoke", override, cwd=tmp_path)
    assert out.returncode == 2
    assert override.partition("=")[0] in error_line(out)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is for CPU-only machines")
def test_paper_scale_on_a_cpu_is_allowed_but_warned(tmp_path):
    # the warning comes before the job starts; the job itself (days at this scale on a CPU) is not
    # what is tested here
    out = launch_only("scale=paper", cwd=tmp_path)
    assert "WARNING" in out.stderr and "hours per rank" in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_before_any_rank_starts(tmp_path):
    out = run_sagips("train.device=cuda", "ranks=2", cwd=tmp_path)
    assert out.returncode == 2
    assert "train.device='cuda': no GPU is visible here" in error_line(out)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", ["epoch", "sampler"])
def test_a_benchmark_on_cuda_without_a_gpu_is_one_line(tmp_path, command):
    out = run_sagips(command, "--device", "cuda", "--quick", cwd=tmp_path, module="sagips.bench")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("sagips-bench: error: --device cuda: no GPU"), out.stderr


def test_an_unquoted_non_ascii_path_gets_a_hint_to_quote_it(tmp_path):
    out = run_sagips(f"hydra.run.dir={tmp_path}/résultats", cwd=tmp_path)
    assert out.returncode == 2
    hint = f"""quote a value with non-ASCII characters for Hydra: 'hydra.run.dir="{tmp_path}/résultats"'"""
    assert hint in error_line(out)
    quoted = run_sagips(f'hydra.run.dir="{tmp_path}/résultats"', "ranks=0", cwd=tmp_path)
    assert "ranks=0: must be >= 1" in error_line(quoted)  # parsed: it got as far as the values
