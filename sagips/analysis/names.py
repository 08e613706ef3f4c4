"""How every analysis output names a mode, a group and a count.

One name per mode everywhere a user reads results (table4.md, the figures, the
CSVs): the paper's label with the sagips mode in brackets, e.g. ``hvd [allreduce]``
(analysis/README.md, "Names").
"""

from __future__ import annotations

# The paper's labels (Tab. II, Tab. IV): the Horovod baseline is our ``allreduce``.
PAPER_LABELS = {
    "allreduce": "hvd",
    "rma_arar_arar": "RMA-ARAR",
    "arar_arar": "ARAR",
    "arar": "Conv. ARAR",
    "ensemble": "ensemble",
}
# Tab. IV's column order; modes the paper does not name sort after these.
MODE_ORDER = tuple(PAPER_LABELS)


def mode_name(mode: str) -> str:
    """``RMA-ARAR [rma_arar_arar]``: the paper's label, then the value of ``mode=``."""
    return f"{PAPER_LABELS.get(mode, mode)} [{mode}]"


def mode_rank(mode: str) -> int:
    """Position of a mode in Tab. IV's column order."""
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def group_name(mode: str, rest: str = "") -> str:
    """A group's name: the mode's name, then whatever else sets the group apart (``ranks=8 h=10``)."""
    return f"{mode_name(mode)} {rest}".strip()


def variant(group: str, mode: str) -> str:
    """What sets a group apart besides its mode: ``ranks=8`` of ``ARAR [arar_arar] ranks=8``."""
    return group.removeprefix(mode_name(mode)).strip()


def plural(n: int, word: str, many: str = "") -> str:
    """``1 rank``, ``3 ranks``: a count with its noun in the right number (``many`` if not word + s)."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"
