"""The GEMM floor of an epoch: the matrix products one forward and backward of both steps need.

With N_disc events per epoch the discriminator sees 2 N_disc rows (real and
fake). The products are: the discriminator forward on those rows, its weight
gradients and the data gradients that reach its earlier layers (discriminator
step), the data gradients of the fake rows down to the events (generator step),
and the generator's own forward, weight and data gradients. Timed alone, on
random tensors of the same shapes, they bound what any exact step can reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Product:
    """An (m x k) @ (k x n) product; ``transposed_a``: A is a transposed view (weight gradients)."""

    m: int
    k: int
    n: int
    transposed_a: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def _linears(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]


def _forward_backward(layers: list[tuple[int, int]], rows: int, input_grad: bool) -> list[Product]:
    products = [Product(rows, i, o) for i, o in layers]  # forward
    products += [Product(o, rows, i, transposed_a=True) for i, o in layers]  # weight gradients
    data = layers if input_grad else layers[1:]
    return products + [Product(rows, o, i) for i, o in data]  # data gradients


def epoch_products(G: nn.Module, D: nn.Module, samples: int, events: int) -> list[Product]:
    """Every matrix product of one epoch with ``samples`` x ``events`` fake events."""
    batch = samples * events
    products = _forward_backward(_linears(D), 2 * batch, input_grad=False)  # discriminator step
    products += [Product(batch, o, i) for i, o in _linears(D)]  # generator step: fake rows to the events
    return products + _forward_backward(_linears(G), samples, input_grad=False)


def gemm_runner(products: list[Product], device: torch.device) -> Callable[[], None]:
    """A function that runs every product once with torch.matmul into preallocated outputs.

    Operands (and outputs) of equal shape share one tensor, so the paper size fits in memory.
    """
    gen = torch.Generator(device=device).manual_seed(0)
    cache: dict[tuple[str, int, int], torch.Tensor] = {}

    def tensor(role: str, rows: int, cols: int) -> torch.Tensor:
        key = (role, rows, cols)
        if key not in cache:
            cache[key] = torch.randn(rows, cols, device=device, generator=gen)
        return cache[key]

    operands = []
    for p in products:
        a = tensor("in", p.k, p.m).t() if p.transposed_a else tensor("in", p.m, p.k)
        operands.append((a, tensor("in", p.k, p.n), tensor("out", p.m, p.n)))

    def run() -> None:
        for a, b, out in operands:
            torch.matmul(a, b, out=out)

    return run
