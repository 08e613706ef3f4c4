"""The names of the modes (Tab. II, plus the ensemble and the allreduce baseline).

Defined here, apart from their transports, so that the launcher can check a config
without loading torch and MPI (``sagips.transport`` does both on import).
"""

MODES = ("ensemble", "arar", "arar_arar", "rma_arar_arar", "allreduce")
# Inner rings every epoch, an outer ring every h epochs (section IV-B4).
GROUPED = ("arar_arar", "rma_arar_arar")
