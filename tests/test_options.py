"""Options that no other test runs through the CLI (issue 12 item 10), one smoke run each: the job
finishes, its losses and weights are finite, and the replicas' weights, whose gradients are averaged every
epoch, agree (the biases' gradients stay on their rank, as in the paper).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from sagips import checkpoints as ck
from tests.conftest import needs_mpi, summary

pytestmark = needs_mpi
REPLICAS_AGREE = 1e-5  # a ring sums in a different order on each rank


def generator_weights(run, ranks: int) -> list[torch.Tensor]:
    """Every rank's final generator weights (no biases) as one flat tensor."""
    paths = [ck.generator_path(run, r, 20) for r in range(ranks)]
    states = [torch.load(p, weights_only=True)["state_dict"] for p in paths]
    return [torch.cat([v.reshape(-1) for v in s.values() if v.ndim > 1]) for s in states]


OPTIONS = {  # (overrides, ranks)
    "bce-loss": (["mode=arar", "train.loss=bce"], 2),
    "no-norm-term": (["mode=arar", "proxy.norm_weight=0"], 2),
    "chunked-ring": (["mode=arar", "transport.algorithm=chunked"], 2),
    "unfused": (["mode=arar", "transport.fuse=false", "transport.weights_only=false"], 2),
    # one rank per node: three inner groups of one, joined by the outer ring at every epoch (h=1)
    "three-inner-groups": (["mode=arar_arar", "ranks_per_node=1", "h=1"], 3),
    "three-inner-groups-rma": (["mode=rma_arar_arar", "ranks_per_node=1", "h=1"], 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("overrides,ranks", OPTIONS.values(), ids=OPTIONS.keys())
def test_an_option_runs_through_the_cli(sagips_cli, tmp_path, overrides, ranks):
    run = tmp_path / "run"
    out = sagips_cli("scale=smoke", f"ranks={ranks}", *overrides, f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    s = summary(run)
    assert (s["status"], s["ranks"], s["epochs"]) == ("complete", ranks, 20)
    losses = pd.concat(pd.read_csv(ck.metrics_path(run, r)) for r in range(ranks))
    assert all(math.isfinite(v) for v in losses[["g_loss", "d_loss"]].to_numpy().ravel())
    g = generator_weights(run, ranks)
    assert all(torch.isfinite(x).all() for x in g)
    assert max(float((x - g[0]).abs().max()) for x in g[1:]) < REPLICAS_AGREE
