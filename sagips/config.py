"""Checks on the resolved config, run before any MPI process starts.

Every failure is a ``ConfigError`` whose message is one line naming the key and
the offending value, e.g. ``ranks_per_node=3: must divide ranks=4``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sagips.equations import param_samples_per_rank
from sagips.errors import ConfigError
from sagips.modes import MODES

SCALES = ("smoke", "laptop", "paper")
CLUSTERS = ("local", "slurm", "pbs")
SAMPLINGS = ("constant", "per_rank")
CHOICES = {
    "mode": MODES,
    "scale": SCALES,
    "cluster.name": CLUSTERS,
    "sampling": SAMPLINGS,
    "train.loss": ("mse", "bce"),
    "train.lr_schedule": ("constant", "cosine"),
    "train.nonfinite": ("abort", "skip"),
    "train.device": ("auto", "cpu", "cuda"),
    "transport.algorithm": ("ring", "chunked"),
    "transport.outer_member": ("first", "random"),
    "transport.rma_window": ("auto", "shared", "passive"),
}
POSITIVE_INTS = (
    "ranks", "ranks_per_node", "h", "train.epochs", "train.param_samples",
    "train.events_per_sample", "train.checkpoint_every", "train.log_every",
    "proxy.grid_points", "proxy.reference_events",
)  # fmt: skip
NON_NEGATIVE_INTS = (
    "seed", "train.threads", "proxy.reference_seed", "train.straggler.ms", "transport.max_staleness",
)  # fmt: skip
POSITIVE_FLOATS = ("train.lr_g", "train.lr_d")
NON_NEGATIVE_FLOATS = ("proxy.norm_weight", "train.straggler.jitter_ms")
BOOLS = ("transport.weights_only", "transport.fuse")


def get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, Mapping):  # e.g. train=5 replaced the whole group
            raise ConfigError(".".join(parts[:i]), node, "must be a group of keys, not a value")
        if part not in node:
            raise ConfigError(dotted, None, "missing")
        node = node[part]
    return node


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def param_samples(cfg: Mapping[str, Any]) -> int:
    """Parameter samples per rank: the scale's value, or eq. (10) with it as base."""
    base = get(cfg, "train.param_samples")
    if get(cfg, "sampling") == "per_rank":
        return param_samples_per_rank(get(cfg, "ranks"), base)
    return base


def validate_world(cfg: Mapping[str, Any]) -> None:
    """``ranks`` and ``ranks_per_node``, the shape of the MPI world (checked before a Slurm submission)."""
    for key in ("ranks", "ranks_per_node"):
        if not _is_int(v := get(cfg, key)) or v < 1:
            raise ConfigError(key, v, "must be an integer >= 1")
    ranks, rpn = cfg["ranks"], cfg["ranks_per_node"]
    if ranks % rpn:
        raise ConfigError("ranks_per_node", rpn, f"must divide ranks={ranks}")


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` for the first bad key of a resolved config (a plain dict)."""
    for key, allowed in CHOICES.items():
        v = get(cfg, key)
        if v not in allowed:
            raise ConfigError(key, v, f"must be one of {', '.join(allowed)}")
    for key in POSITIVE_INTS + NON_NEGATIVE_INTS:
        v, low = get(cfg, key), (1 if key in POSITIVE_INTS else 0)
        if not _is_int(v):
            raise ConfigError(key, v, "must be an integer")
        if v < low:
            raise ConfigError(key, v, f"must be >= {low}")
    for key in POSITIVE_FLOATS + NON_NEGATIVE_FLOATS:
        v = get(cfg, key)
        if not _is_number(v) or v < 0 or (v == 0 and key in POSITIVE_FLOATS):
            raise ConfigError(key, v, "must be a positive number" if key in POSITIVE_FLOATS
                              else "must be a number >= 0")  # fmt: skip
    for key in BOOLS:
        if not isinstance(get(cfg, key), bool):
            raise ConfigError(key, get(cfg, key), "must be true or false")
    validate_world(cfg)
    ranks = cfg["ranks"]
    frac = get(cfg, "train.data_fraction")
    if not _is_number(frac) or not 0 < frac <= 1:
        raise ConfigError("train.data_fraction", frac, "must lie in (0, 1]")
    if param_samples(cfg) < 1:
        base = get(cfg, "train.param_samples")
        raise ConfigError("sampling", "per_rank", f"floor({base}/{ranks}) = 0 samples per rank")
    _validate_proxy(cfg)
    _validate_straggler(cfg)


def _validate_proxy(cfg: Mapping[str, Any]) -> None:
    pmin, pmax = get(cfg, "proxy.pmin"), get(cfg, "proxy.pmax")
    truth = get(cfg, "proxy.truth")
    if not isinstance(truth, (list, tuple)) or len(truth) != len(pmin):
        raise ConfigError("proxy.truth", truth, f"must be a list of {len(pmin)} numbers")
    for i, (v, lo, hi) in enumerate(zip(truth, pmin, pmax)):
        if not _is_number(v):
            raise ConfigError("proxy.truth", truth, f"p{i}={v!r} is not a number")
        if not lo <= v <= hi:
            raise ConfigError("proxy.truth", truth, f"p{i}={v} outside [{lo}, {hi}]")
        if v == 0:
            raise ConfigError("proxy.truth", truth, f"p{i}=0 makes the eq. (6) residual undefined")
    if not 0 < get(cfg, "proxy.x_min") < get(cfg, "proxy.x_max") < 1:
        raise ConfigError("proxy.x_min", get(cfg, "proxy.x_min"), "need 0 < x_min < x_max < 1")


def _validate_straggler(cfg: Mapping[str, Any]) -> None:
    slow = get(cfg, "train.straggler.ranks")
    if not isinstance(slow, (list, tuple)) or not all(_is_int(r) for r in slow):
        raise ConfigError("train.straggler.ranks", slow, "must be a list of rank numbers")
    bad = [r for r in slow if not 0 <= r < cfg["ranks"]]
    if bad:
        raise ConfigError("train.straggler.ranks", slow, f"ranks {bad} outside 0..{cfg['ranks'] - 1}")


def check_device(choice: str) -> str | None:
    """Why ``train.device=choice`` cannot run on this machine, or None: cuda without a visible GPU."""
    if choice != "cuda":
        return None
    import torch  # only when a GPU is asked for: loading it costs the launcher seconds

    if torch.cuda.is_available():
        return None
    return "no GPU is visible here (torch.cuda.is_available() is false): use auto or cpu"
