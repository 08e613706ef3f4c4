"""Machine profiles: a target machine's node shape, one rank's epoch and its inter-node link.

Named profiles ship inside the package (``sagips/scaling_model/profiles/*.yaml``:
``local`` and ``polaris``, each figure with its source); a user's YAML file with
the same keys works as well (``--profile path.yaml``). What a profile leaves to
calibration (the shared-memory link and the Python/mpi4py costs always, the
compute where it says ``calibrate``) is measured on this machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from sagips.config import ConfigError
from sagips.scaling_model.prediction import Machine
from sagips.scaling_model.rings import Link, Network
from sagips.scaling_model.waiting import EpochWork

KEYS = ("name", "description", "node_ranks", "slots", "compute", "inter")
OPTIONAL = ("host",)
HOST = ("step_s", "message_s", "call_s", "reduce_Bps", "intra_Bps")
OPTION = "--profile"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    node_ranks: int | None  # None: every rank on this one machine
    slots: float | None  # None: this machine's CPU cores
    compute: EpochWork | None  # None: calibrate here
    ref_events: int  # discriminator events of ``compute`` (0 when calibrated)
    inter: Link | None  # None: the calibrated intra-node link
    host: Network | None = None  # reference Python/mpi4py costs, for where nothing is calibrated

    @property
    def calibrates_compute(self) -> bool:
        return self.compute is None


def names() -> list[str]:
    """The profiles shipped with sagips."""
    folder = resources.files("sagips.scaling_model") / "profiles"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load(spec: str) -> Profile:
    """A shipped profile by name, or a YAML file; ``ConfigError`` names what is wrong."""
    if spec in names():
        text = (resources.files("sagips.scaling_model") / "profiles" / f"{spec}.yaml").read_text()
    elif Path(spec).is_file():
        text = Path(spec).read_text()
    else:
        raise ConfigError(OPTION, spec, f"neither a profile ({', '.join(names())}) nor a YAML file")
    try:
        raw = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    except Exception as exc:  # OmegaConf wraps YAML errors in several types
        raise ConfigError(OPTION, spec, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(OPTION, spec, "must be a YAML mapping of " + ", ".join(KEYS))
    return parse(raw, spec)


def _number(raw: dict, key: str, spec: str, positive: bool = True) -> float:
    value = raw.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ConfigError(f"{OPTION} {spec}: {key}", value, "must be a " + ("positive" if positive else
                          "non-negative") + " number")  # fmt: skip
    return float(value)


def _spread(relative_sd: float) -> np.ndarray | None:
    """Per-epoch compute factors with mean 1 and the given relative standard deviation."""
    if not relative_sd:
        return None
    factors = np.random.default_rng(0).normal(1.0, relative_sd, 4096).clip(0.0, None)
    return factors / factors.mean()


def parse(raw: dict[str, Any], spec: str) -> Profile:
    """Check a profile's keys and values."""
    unknown = sorted(set(raw) - set(KEYS) - set(OPTIONAL))
    missing = [k for k in KEYS if k not in raw]
    if unknown or missing:
        what = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
        raise ConfigError(OPTION, spec, f"{what} (a profile has {', '.join(KEYS)})")
    node_ranks = None if raw["node_ranks"] == "all" else int(_number(raw, "node_ranks", spec))
    slots = None if raw["slots"] == "cores" else _number(raw, "slots", spec)
    compute, ref_events = None, 0
    if raw["compute"] != "calibrate":
        c = raw["compute"] if isinstance(raw["compute"], dict) else {}
        work = EpochWork(_number(c, "epoch_s", spec), spread=_spread(_number(c, "spread", spec, False)
                         if "spread" in c else 0.0))  # fmt: skip
        compute, ref_events = work, int(_number(c, "events", spec))
    inter = None
    if raw["inter"] != "intra":
        link = raw["inter"] if isinstance(raw["inter"], dict) else {}
        inter = Link(_number(link, "latency_s", spec, False), _number(link, "bandwidth_Bps", spec))
    host = None
    if "host" in raw:
        h = raw["host"] if isinstance(raw["host"], dict) else {}
        step, message, call, reduce, intra = (_number(h, k, spec, k.endswith("_Bps")) for k in HOST)
        link = Link(0.0, intra)
        host = Network(step, message, call, reduce, link, link)
    return Profile(str(raw["name"]), str(raw["description"]), node_ranks, slots, compute, ref_events, inter,
                   host)  # fmt: skip


def machine(profile: Profile, network: Network | None = None, compute: EpochWork | None = None,
            ref_events: int = 0, slots: float | None = None) -> Machine:  # fmt: skip
    """The profile completed by what was calibrated: the intra-node ``network`` (default: the
    profile's reference ``host`` figures), one rank's ``compute`` (at ``ref_events``) where given or
    where the profile says calibrate, the ``slots`` (default: this machine's cores) where it says cores."""
    network = network if network is not None else profile.host
    if network is None:
        raise ValueError(f"profile {profile.name!r} has no host figures: calibrate with sagips-bench comm")
    if compute is None and profile.compute is None:
        raise ValueError(f"profile {profile.name!r} needs a calibrated compute")
    if compute is None:
        compute, ref_events = profile.compute, profile.ref_events
    net = network if profile.inter is None else replace(network, inter=profile.inter)
    node_slots = profile.slots if profile.slots is not None else (slots if slots is not None else cores())
    return Machine(profile.name, net, compute, ref_events, profile.node_ranks, node_slots)
