"""``sagips-bench sampler``: proxy-app events per second, forward and forward+backward.

Parameters are drawn uniformly inside the physical ranges. Forward runs without
autograd; forward+backward takes random upstream gradients on the events and
the norms back to the parameters, as the generator step does. A second size
with ten times the events per sample shows the cost per event staying flat.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from sagips.bench.common import (
    add_size_options,
    apply_size_options,
    device_name,
    emit,
    interleaved,
    print_table,
    si,
)
from sagips.bench.workload import load_config, make_proxy
from sagips.proxy import ProxyApp

DEFAULT_SIZES = "1024x100,1024x1000"
QUICK_SIZES = "16x20"


def sampler_fns(proxy: ProxyApp, samples: int, events: int) -> dict[str, Callable[[], None]]:
    """Forward-only and forward+backward calls of ``proxy.sample`` on fixed random parameters."""
    device = proxy.device
    gen = torch.Generator(device=device).manual_seed(0)
    params = proxy.to_physical(torch.rand(samples, 6, device=device, generator=gen))
    up_events = torch.randn(samples * events, 2, device=device, generator=gen)
    up_norms = torch.randn(samples, 2, device=device, generator=gen)

    def forward() -> None:
        with torch.no_grad():
            proxy.sample(params, events)

    def backward() -> None:
        leaf = params.detach().requires_grad_()
        torch.autograd.backward(proxy.sample(leaf, events), (up_events, up_norms))

    return {"forward": forward, "backward": backward}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_size_options(parser, DEFAULT_SIZES, QUICK_SIZES, repeats=7)


COLUMNS = (
    ("size", lambda r: f"{r['samples']} x {r['events_per_sample']}"),
    ("fwd ms", lambda r: f"{r['forward_s'] * 1e3:.1f}"),
    ("fwd events/s", lambda r: si(r["forward_events_per_s"])),
    ("fwd+bwd ms", lambda r: f"{r['backward_s'] * 1e3:.1f}"),
    ("fwd+bwd events/s", lambda r: si(r["backward_events_per_s"])),
    ("fwd+bwd ns/event", lambda r: f"{1e9 / r['backward_events_per_s']:.0f}"),
)


def run(args: argparse.Namespace) -> None:
    setup = apply_size_options(args)
    proxy = make_proxy(load_config("smoke"), setup.device)
    results = []
    for samples, events in setup.sizes:
        times = interleaved(sampler_fns(proxy, samples, events), setup)
        n = samples * events
        fwd, bwd = statistics.median(times["forward"]), statistics.median(times["backward"])
        results.append(dict(samples=samples, events_per_sample=events, forward_s=fwd, backward_s=bwd,
                            forward_events_per_s=n / fwd, backward_events_per_s=n / bwd))  # fmt: skip
    print_table(f"proxy-app sampler ({setup.describe()}), median of {setup.repeats} rounds",
                [c for c, _ in COLUMNS], [[fmt(r) for _, fmt in COLUMNS] for r in results])  # fmt: skip
    head = results[0]
    emit(dict(forward_events_per_s=head["forward_events_per_s"],
              backward_events_per_s=head["backward_events_per_s"], device=str(setup.device),
              device_name=device_name(setup.device), threads=torch.get_num_threads(), clock=args.clock,
              sizes=results))  # fmt: skip
