"""Run under mpiexec -n 2 python -m mpi4py data_share_check.py RUN_DIR: each rank's share of the data.

Builds the real ``Trainer`` of every mode from the composed config (nothing is trained)
and checks ``my_data`` against the reference data rank 0 generated: the ring modes keep a
50 % bootstrap share (Fig. 3), distinct per rank; allreduce (Horovod) and ensemble members
see the full data (section VI-C2). Prints ``data-share OK`` on rank 0.
"""

import sys

from hydra import compose, initialize_config_dir
from mpi4py import MPI

from sagips.paths import conf_dir
from sagips.trainer import Trainer

FULL = {"allreduce", "ensemble"}


def rows(data) -> set[bytes]:
    return {r.tobytes() for r in data.cpu().numpy()}


def main() -> None:
    comm = MPI.COMM_WORLD
    run_dir = sys.argv[1]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        for mode in ("arar", "arar_arar", "rma_arar_arar", "allreduce", "ensemble"):
            cfg = compose(config_name="config", overrides=[f"mode={mode}", f"ranks={comm.Get_size()}",
                                                           "proxy.reference_events=4000"])  # fmt: skip
            trainer = Trainer(cfg, comm, run_dir)
            reference, _ = trainer._shared_reference()
            mine, everything = rows(trainer.my_data), rows(reference)
            assert len(everything) == 4000  # no repeated events, so sets count rows
            assert mine <= everything, mode
            share = 1.0 if mode in FULL else 0.5
            assert len(trainer.my_data) == round(share * 4000), (mode, len(trainer.my_data))
            assert cfg.train.data_fraction == share
            shares = comm.allgather(sorted(mine))
            if mode not in FULL:
                assert shares[0] != shares[1], f"{mode}: ranks draw the same share"
            trainer.transport.close()
    if comm.Get_rank() == 0:
        print("data-share OK", flush=True)


if __name__ == "__main__":
    main()
