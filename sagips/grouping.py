"""Who talks to whom (section IV-B4, Fig. 6, Tab. I): a pure function of the world's shape.

Inner groups are consecutive blocks of ``ranks_per_node`` ranks (one node each)
and run their ring every epoch. The outer group takes one member from every inner
group and runs its ring every h epochs. Ranks with the same local index in their
node form a "column"; the outer group of a round is one column (column 0, the
paper's choice, or a column drawn per round).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Grouping:
    rank: int
    ranks: int
    ranks_per_node: int
    inner_group: int  # which node
    local_rank: int  # index inside the inner group = which column

    @property
    def n_inner_groups(self) -> int:
        return self.ranks // self.ranks_per_node

    @property
    def inner_members(self) -> tuple[int, ...]:
        start = self.inner_group * self.ranks_per_node
        return tuple(range(start, start + self.ranks_per_node))

    @property
    def inner_left(self) -> int:
        members = self.inner_members
        return members[(self.local_rank - 1) % len(members)]

    @property
    def inner_right(self) -> int:
        members = self.inner_members
        return members[(self.local_rank + 1) % len(members)]

    def outer_members(self, column: int = 0) -> tuple[int, ...]:
        """The outer group when ``column`` is the chosen local index (Fig. 6, dashed box)."""
        return tuple(g * self.ranks_per_node + column for g in range(self.n_inner_groups))

    def in_outer_group(self, column: int = 0) -> bool:
        return self.local_rank == column


def grouping(rank: int, ranks: int, ranks_per_node: int) -> Grouping:
    if not 0 <= rank < ranks:
        raise ValueError(f"rank {rank} outside a world of {ranks}")
    if ranks_per_node < 1 or ranks % ranks_per_node:
        raise ValueError(f"ranks_per_node={ranks_per_node} does not divide ranks={ranks}")
    return Grouping(rank, ranks, ranks_per_node, rank // ranks_per_node, rank % ranks_per_node)
