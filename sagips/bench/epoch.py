"""``sagips-bench epoch``: one rank's epoch, the engine's step next to an unfused reference.

Per size, three things run round-robin in one process with one thread count:
the engine's epoch (``sagips.trainer.gan_gradients`` and both optimizer steps),
a straightforward reference epoch (a generator step with its own discriminator
forward and backward, then a separate discriminator step) and the GEMM floor
(``sagips.bench.floor``). Events per second is eq. (9) for one rank.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from sagips.bench.common import (
    Setup,
    add_size_options,
    apply_size_options,
    device_name,
    emit,
    interleaved,
    median_ratio,
    print_table,
    si,
)
from sagips.bench.floor import epoch_products, gemm_runner
from sagips.bench.workload import Workload, load_config
from sagips.trainer import _gan_loss, gan_gradients, retain_freed_memory

DEFAULT_SIZES = "1024x100,128x100"  # the paper's epoch (Tab. III) and one eighth of it
QUICK_SIZES = "16x20"


def engine_epoch(w: Workload) -> None:
    """The trainer's epoch on one rank: the fused forward/backward, then both optimizer steps."""
    t, p = w.cfg.train, w.cfg.proxy
    gan_gradients(w.G, w.D, w.proxy, w.pool, w.samples, w.events,
                  loss=t.loss, norm_weight=p.norm_weight, ref_norms=w.ref_norms)  # fmt: skip
    w.opt_g.step()
    w.opt_d.step()


def reference_epoch(w: Workload) -> None:
    """The same maths written the straightforward way: two steps, each with its own forwards.

    Random draws come in the engine's order, so both produce the same gradients.
    """
    t, p = w.cfg.train, w.cfg.proxy
    z = torch.randn(w.samples, w.G.noise_dim, device=w.pool.device)
    fake, norms = w.proxy.sample(w.proxy.to_physical(w.G(z)), w.events)
    real = w.pool[torch.randint(len(w.pool), (len(fake),), device=w.pool.device)]
    w.opt_g.zero_grad()
    g_loss = _gan_loss(t.loss, w.D(fake), 1.0)
    if p.norm_weight:
        g_loss = g_loss + p.norm_weight * ((norms / w.ref_norms - 1) ** 2).mean()
    g_loss.backward()
    w.opt_g.step()
    w.opt_d.zero_grad()
    d_loss = 0.5 * (_gan_loss(t.loss, w.D(real), 1.0) + _gan_loss(t.loss, w.D(fake.detach()), 0.0))
    d_loss.backward()
    w.opt_d.step()


def measure(w: Workload, setup: Setup) -> dict[str, float]:
    """Median times of the three, and the within-round ratios."""
    products = epoch_products(w.G, w.D, w.samples, w.events)
    fns = {
        "engine": lambda: engine_epoch(w),
        "reference": lambda: reference_epoch(w),
        "floor": gemm_runner(products, setup.device),
    }
    times = interleaved(fns, setup)
    epoch_s = statistics.median(times["engine"])
    floor_s = statistics.median(times["floor"])
    return dict(
        samples=w.samples,
        events_per_sample=w.events,
        disc_batch=w.disc_batch,
        epoch_s=epoch_s,
        events_per_s=w.disc_batch / epoch_s,
        reference_s=statistics.median(times["reference"]),
        gemm_floor_s=floor_s,
        gemm_gflops=sum(p.flops for p in products) / floor_s / 1e9,
        speedup_vs_reference=median_ratio(times["reference"], times["engine"]),
        ratio_to_gemm_floor=median_ratio(times["engine"], times["floor"]),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_size_options(parser, DEFAULT_SIZES, QUICK_SIZES, repeats=5)


COLUMNS = (
    ("size", lambda r: f"{r['samples']} x {r['events_per_sample']}"),
    ("N_disc", lambda r: r["disc_batch"]),
    ("epoch s", lambda r: f"{r['epoch_s']:.3f}"),
    ("events/s", lambda r: si(r["events_per_s"])),
    ("unfused s", lambda r: f"{r['reference_s']:.3f}"),
    ("speed-up", lambda r: f"{r['speedup_vs_reference']:.2f}"),
    ("GEMM floor s", lambda r: f"{r['gemm_floor_s']:.3f}"),
    ("GFLOP/s", lambda r: f"{r['gemm_gflops']:.0f}"),
    ("x floor", lambda r: f"{r['ratio_to_gemm_floor']:.2f}"),
)
HEADLINE = ("events_per_s", "epoch_s", "ratio_to_gemm_floor", "speedup_vs_reference", "samples",
            "events_per_sample", "reference_s", "gemm_floor_s")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    setup = apply_size_options(args)
    retain_freed_memory()  # as every training rank does
    cfg = load_config("smoke" if args.quick else "paper")  # the reference data of that scale
    results = [measure(Workload.build(cfg, s, e, setup.device), setup) for s, e in setup.sizes]
    print_table(f"one rank's epoch ({setup.describe()}), median of {setup.repeats} rounds",
                [c for c, _ in COLUMNS], [[fmt(r) for _, fmt in COLUMNS] for r in results])  # fmt: skip
    print("targets (2-core CPU, paper size): speed-up >= 1.5, x floor <= 2\n")
    head = {key: results[0][key] for key in HEADLINE}
    emit(dict(head, device=str(setup.device), device_name=device_name(setup.device),
              threads=torch.get_num_threads(), clock=args.clock, sizes=results))  # fmt: skip
