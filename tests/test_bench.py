"""``sagips-bench``: every sub-command at its smallest size, and the pieces the figures rest on."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from sagips.bench.epoch import engine_epoch, reference_epoch
from sagips.bench.floor import epoch_products
from sagips.bench.workload import Workload, load_config
from sagips.networks import Discriminator, Generator
from tests.conftest import run_sagips

needs_mpi = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")


def bench(*args: str, cwd: Path) -> dict:
    """Run ``sagips-bench ARGS``; the last line of its output must be the JSON figures."""
    out = run_sagips(*args, cwd=cwd, module="sagips.bench")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) > 2, out.stdout  # a table comes first
    return json.loads(lines[-1])


def positive(figures: dict, *keys: str) -> None:
    for key in keys:
        value = figures[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, key


def test_gemm_floor_counts_each_product_once():
    # Width 4, one hidden block: D layers 2->4, 4->4, 4->1; G layers 6->4, 4->4, 4->6.
    G, D = Generator(hidden=4, blocks=1), Discriminator(hidden=4, blocks=1)
    samples, events = 3, 5
    rows, batch = 2 * samples * events, samples * events
    d_all, d_inner, g_all, g_inner = 2 * 4 + 4 * 4 + 4, 4 * 4 + 4, 6 * 4 + 4 * 4 + 4 * 6, 4 * 4 + 4 * 6
    expected = 2 * (
        rows * d_all * 2  # discriminator forward and weight gradients on real + fake
        + rows * d_inner  # its data gradients, input layer excluded
        + batch * d_all  # generator step: fake rows back to the events
        + samples * (g_all * 2 + g_inner)  # the generator's own products
    )
    assert sum(p.flops for p in epoch_products(G, D, samples, events)) == expected


def test_reference_step_computes_the_engines_gradients():
    w = Workload.build(load_config("smoke"), 4, 10, torch.device("cpu"))
    for opt in (w.opt_g, w.opt_d):
        for group in opt.param_groups:
            group["lr"] = 0.0  # the steps run but leave the weights as they are
    grads = []
    for epoch in (engine_epoch, reference_epoch):
        torch.manual_seed(7)
        epoch(w)
        grads.append([p.grad.clone() for p in (*w.G.parameters(), *w.D.parameters())])
    for engine, reference in zip(*grads):
        torch.testing.assert_close(engine, reference, rtol=1e-4, atol=1e-7)


def test_epoch_quick(tmp_path):
    figures = bench("epoch", "--quick", cwd=tmp_path)
    positive(figures, "events_per_s", "epoch_s", "ratio_to_gemm_floor", "speedup_vs_reference")
    assert figures["device"] in ("cpu", "cuda:0")


def test_sampler_quick(tmp_path):
    positive(bench("sampler", "--quick", cwd=tmp_path), "forward_events_per_s", "backward_events_per_s")


@needs_mpi
@pytest.mark.slow
def test_comm_quick(tmp_path):
    figures = bench("comm", "--quick", "--ranks", "2", cwd=tmp_path)
    assert figures["ranks"] == 2
    positive(figures, "allreduce_s", "arar_fused_ratio", "arar_per_tensor_ratio", "chunked_ratio",
             "rma_sync_ratio", "rma_async_ratio")  # fmt: skip


def test_comm_names_a_missing_launcher(tmp_path):
    out = run_sagips("comm", "--mpiexec", "no-such-mpiexec", cwd=tmp_path, module="sagips.bench")
    assert out.returncode == 2 and "no-such-mpiexec" in out.stderr and "not found" in out.stderr


@needs_mpi
@pytest.mark.slow
def test_scaling_quick(tmp_path):
    positive(bench("scaling", "--quick", cwd=tmp_path), "rate_1", "rate_2", "weak_scaling_efficiency")


@needs_mpi
@pytest.mark.slow
def test_straggler_quick(tmp_path):
    figures = bench("straggler", "--quick", cwd=tmp_path)
    assert set(figures["ratio"]) == {"2"} and figures["ratio"]["2"] > 0
    by_mode = {run["mode"]: run for run in figures["runs"]}
    assert by_mode["arar_arar"]["max_staleness"] == 0  # synchronous: always this epoch's gradients
    for run in figures["runs"]:
        assert len(run["epoch_rates"]) == 2 and min(run["epoch_rates"]) > 0
        assert 0 <= run["mean_abs_r"] < 10
