"""The program every MPI rank runs: ``python -m mpi4py -m sagips.worker RUN_DIR``.

It reads the resolved config that the launcher wrote into the run folder, so
whatever started the ranks (mpiexec, srun, a PBS script) needs nothing else.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sagips import checkpoints as ck


def setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def describe(exc: BaseException) -> str:
    """One line: the exception and those it was raised while handling.

    torch.save on a full disk raises a cryptic RuntimeError while handling the
    OSError that says what happened; both are named.
    """
    parts: list[str] = []
    link: BaseException | None = exc
    while link is not None and len(parts) < 3:
        parts.append(f"{type(link).__name__}: {link}")
        link = link.__cause__ or link.__context__
    return " ".join("; after ".join(parts).split())


def run(run_dir: Path, cfg: DictConfig) -> None:
    from mpi4py import MPI

    from sagips.trainer import Trainer

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    setup_logging(rank)
    try:
        if comm.Get_size() != cfg.ranks:
            raise RuntimeError(f"ranks={cfg.ranks} but the MPI world has {comm.Get_size()} processes")
        if rank == 0:
            ck.remove_temporaries(run_dir)
        comm.Barrier()
        # pid and host: the launcher watches the ranks of its own host (sagips.launch.local)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        ck.atomic_write(ck.pid_path(run_dir, rank), lambda f: f.write(me), "w")
        Trainer(cfg, comm, run_dir).train()
    except BaseException as exc:
        # One line naming the rank before mpi4py aborts the whole job.
        logging.getLogger("sagips.worker").error("rank %d failed: %s", rank, describe(exc))
        raise


def main(argv: list[str] | None = None) -> None:
    # Ctrl-C reaches every rank at once (and mpiexec relays SIGINT/SIGTERM to them): die
    # at once and quietly, instead of one KeyboardInterrupt traceback per rank. The
    # launcher names the stopped job; the checkpoints written so far are complete.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: mpiexec -n N python -m mpi4py -m sagips.worker RUN_DIR")
    run_dir = Path(args[0])
    run(run_dir, OmegaConf.load(ck.config_path(run_dir)))


if __name__ == "__main__":
    main()
