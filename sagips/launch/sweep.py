"""``cluster=local`` sweeps: each job in a process and an MPI world of its own, several at once when they fit.

Hydra hands a sweep's jobs to ``hydra_plugins.sagips_launcher`` and from there to
``launch``. Each job runs Hydra's ``run_job`` in a forked process (a job that fails
or is killed takes nothing else with it), and up to ``cluster.parallel_jobs`` run at
once (``auto``: max(1, cores // ranks) for the sweep's largest job), but only while
the ranks x threads of the running jobs fit the cores. When jobs share the machine,
a job whose ``train.threads`` is 0 gets cores // (jobs at once x ranks) threads per
rank, written into its config: the trainer's own default, cores / ranks on the node,
assumes the machine to itself. With one job at a time nothing changes. Jobs that run
side by side have their output lines prefixed with their number (``[#3]``).

Ctrl-C (SIGINT to the process group) or a SIGTERM/SIGHUP to the launcher stops the
sweep: no job starts any more, the running ones are stopped (``sagips.launch.local``),
every unfinished job is named, and ``Stopped`` ends the sweep with 128 + the signal's
number. A second signal, or a job still running ``STOP_GRACE_S`` later, is killed.
The same command resumes the unfinished jobs and skips the finished ones.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sagips.errors import ConfigError, JobFailed, Stopped
from sagips.launch import shm

log = logging.getLogger(__name__)

STOP_GRACE_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def machine_cores() -> int:
    """The cores this process may run on (its affinity, which a batch system may restrict)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def jobs_at_once(parallel_jobs: Any, ranks: Sequence[int], cores: int) -> int:
    """``cluster.parallel_jobs`` as a number: ``auto`` = max(1, cores // ranks of the largest job)."""
    if parallel_jobs == "auto":
        wanted = max(1, cores // max(ranks))
    elif isinstance(parallel_jobs, int) and not isinstance(parallel_jobs, bool) and parallel_jobs >= 1:
        wanted = parallel_jobs
    else:
        raise ConfigError("cluster.parallel_jobs", parallel_jobs, "must be auto or an integer >= 1")
    return min(wanted, len(ranks))


def threads_per_rank(threads: int, ranks: int, at_once: int, cores: int) -> int:
    """Torch threads of a job's ranks: its own ``train.threads``, else its share of the cores.

    0 (the trainer's default, cores / ranks on the node) when the job has the machine to itself.
    """
    if threads or at_once == 1:
        return threads
    return max(1, cores // (at_once * ranks))


@dataclass
class Job:
    num: int
    overrides: list[str]
    config: DictConfig
    run_dir: Path
    cores: int  # ranks x threads

    @property
    def label(self) -> str:
        return f"#{self.num} {self.run_dir}"


def _int(cfg: DictConfig, key: str, default: int) -> int:
    value = OmegaConf.select(cfg, key, default=default)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def compose_jobs(launcher: Any, job_overrides: Sequence[Sequence[str]], first: int) -> list[DictConfig]:
    """Each job's config, numbered from ``first``, as Hydra's basic launcher composes them."""
    configs = []
    for num, overrides in enumerate(job_overrides, start=first):
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = num
        configs.append(cfg)
    return configs


def plan(configs: list[DictConfig], parallel_jobs: Any, cores: int) -> tuple[list[Job], int]:
    """The jobs with their threads set, and how many may run at once; ``ConfigError`` on a bad value."""
    ranks = [max(1, _int(cfg, "ranks", 1)) for cfg in configs]
    at_once = jobs_at_once(parallel_jobs, ranks, cores)
    jobs = []
    for cfg, r in zip(configs, ranks):
        threads = threads_per_rank(_int(cfg, "train.threads", 0), r, at_once, cores)
        if threads != _int(cfg, "train.threads", 0):
            with read_write(cfg):
                cfg.train.threads = threads
        run_dir = Path(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)).absolute()
        jobs.append(Job(cfg.hydra.job.num, list(cfg.hydra.overrides.task), cfg, run_dir, r * max(threads, 1)))
    return jobs, at_once


class _Lines:
    """One output stream of a job, forwarded line by line behind the job's number."""

    def __init__(self, fd: int, dest: BinaryIO, tag: str) -> None:
        self.fd, self.dest, self.tag, self.partial = fd, dest, f"[#{tag}] ".encode(), b""

    def forward(self) -> bool:
        """Forward the lines that have arrived; False at the end of the stream."""
        chunk = os.read(self.fd, 65536)
        if chunk:
            *lines, self.partial = (self.partial + chunk).split(b"\n")
        else:  # the end: a last line without a newline
            lines, self.partial = [self.partial] if self.partial else [], b""
        self.dest.write(b"".join(self.tag + line + b"\n" for line in lines))
        self.dest.flush()
        return bool(chunk)


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum, "")


def _job_process(launcher: Any, job: Job, result: Connection, streams: tuple[int, int] | None) -> None:
    """The body of a job's process: Hydra's ``run_job``, its result sent back to the launcher."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, _raise_stopped)
    if streams:
        os.dup2(streams[0], 1)
        os.dup2(streams[1], 2)
    try:
        ret = run_job(hydra_context=launcher.hydra_context, task_function=launcher.task_function,
                      config=job.config, job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")  # fmt: skip
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)  # the launcher names the unfinished jobs
    result.send(ret)


@dataclass
class _Running:
    job: Job
    proc: multiprocessing.process.BaseProcess
    open_fds: set[int]
    ret: JobReturn | None = None
    signalled: int = 0  # the last signal sent to it by the launcher


class _Sweep:
    """The jobs of one sweep, started as they fit, their output and results collected."""

    def __init__(self, launcher: Any, jobs: list[Job], at_once: int, cores: int) -> None:
        self.launcher, self.jobs, self.at_once, self.cores = launcher, jobs, at_once, cores
        self.pending = list(jobs)
        self.running: dict[int, _Running] = {}
        self.stopped: set[int] = set()  # the jobs that were running when the sweep was stopped
        self.stops: list[int] = []  # the stop signals received (filled by the launcher's handler)
        self.results: dict[int, JobReturn] = {}
        self.sel = selectors.DefaultSelector()
        # fork: the job inherits the composed config and Hydra's state as they are, in milliseconds
        self.ctx = multiprocessing.get_context("fork")

    def fits(self, job: Job) -> bool:
        used = sum(r.job.cores for r in self.running.values())
        return not self.running or (len(self.running) < self.at_once and used + job.cores <= self.cores)

    def start(self, job: Job) -> None:
        log.info("\t#%d : %s", job.num, " ".join(filter_overrides(job.overrides)))
        reader, writer = self.ctx.Pipe(duplex=False)
        pipes = [os.pipe(), os.pipe()] if self.at_once > 1 else []
        streams = (pipes[0][1], pipes[1][1]) if pipes else None
        proc = self.ctx.Process(target=_job_process, args=(self.launcher, job, writer, streams),
                                name=f"sagips-job-{job.num}")  # fmt: skip
        proc.start()
        writer.close()
        run = _Running(job, proc, {reader.fileno()})
        self.sel.register(reader, selectors.EVENT_READ, (run, None))
        for (r, w), dest in zip(pipes, (sys.stdout.buffer, sys.stderr.buffer)):
            os.close(w)
            run.open_fds.add(r)
            self.sel.register(r, selectors.EVENT_READ, (run, _Lines(r, dest, str(job.num))))
        self.running[job.num] = run

    def step(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            run, lines = key.data
            if lines is not None:
                if lines.forward():
                    continue
            else:
                try:
                    run.ret = key.fileobj.recv()
                except EOFError:  # the process ended without a result
                    pass
            self.sel.unregister(key.fileobj)
            run.open_fds.discard(key.fd)
            if isinstance(key.fileobj, Connection):
                key.fileobj.close()
            else:
                os.close(key.fd)
            if not run.open_fds:
                self.finish(run)

    def finish(self, run: _Running) -> None:
        run.proc.join()
        del self.running[run.job.num]
        ret = run.ret
        if self.stops and (ret is None or ret.status != JobStatus.COMPLETED):
            # Ctrl-C reaches a job's process with the launcher's: it may end before the
            # launcher has looked at its own signal, and it ended because of it.
            self.stopped.add(run.job.num)
        if ret is None:
            code = run.proc.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
            ret = JobReturn(overrides=run.job.overrides, cfg=run.job.config, working_dir=str(run.job.run_dir),
                            status=JobStatus.FAILED)  # fmt: skip
            ret.return_value = JobFailed(f"job {run.job.run_dir} ended ({how}) before it finished")
        self.results[run.job.num] = ret

    def signal_running(self, signum: int) -> None:
        for run in self.running.values():
            if run.signalled != signum and run.proc.pid is not None:
                run.signalled = signum
                os.kill(run.proc.pid, signum)

    def run(self, stops: list[int]) -> None:
        self.stops = stops
        stopping_since = 0.0
        while self.pending or self.running:
            if not stops:
                while self.pending and self.fits(self.pending[0]):
                    self.start(self.pending.pop(0))
            elif not stopping_since:
                stopping_since = time.monotonic()
                self.stopped |= set(self.running)
                self.signal_running(signal.SIGTERM)  # each job stops its own MPI world
            elif len(stops) > 1 or time.monotonic() - stopping_since > STOP_GRACE_S:
                self.signal_running(signal.SIGKILL)
            if stops and not self.running:
                break
            self.step(timeout=0.2)

    def unfinished(self) -> list[str]:
        lines = []
        for job in self.jobs:
            ret = self.results.get(job.num)
            if ret is None:
                lines.append(f"{job.label} (not started)")
            elif ret.status != JobStatus.COMPLETED:
                lines.append(f"{job.label} ({'stopped' if job.num in self.stopped else 'failed'})")
        return lines


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """The stop signals the launcher receives while the sweep runs, in order."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def record(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run the sweep's jobs (the ``Launcher.launch`` of ``cluster=local``); their results in order."""
    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    cores = machine_cores()
    configs = compose_jobs(launcher, job_overrides, initial_job_idx)
    try:
        jobs, at_once = plan(configs, launcher.parallel_jobs, cores)
    except ConfigError as exc:
        print(f"sagips: error: {exc}", file=sys.stderr)
        sys.exit(2)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    log.info("Launching %d jobs locally, up to %d at once on %d cores", len(jobs), at_once, cores)
    segments = shm.segments()
    sweep = _Sweep(launcher, jobs, at_once, cores)
    with _stop_signals() as stops:
        sweep.run(stops)
    if stops:
        shm.remove_unmapped(shm.segments() - segments)  # of a job killed before it could tidy up
        if unfinished := sweep.unfinished():
            for line in unfinished:
                print(f"sagips: unfinished: {line}", file=sys.stderr)
            name = signal.Signals(stops[0]).name
            raise Stopped(stops[0], f"stopped by {name} with {len(unfinished)} of {len(jobs)} jobs "
                                    "unfinished; the same command resumes them")  # fmt: skip
    return [sweep.results[job.num] for job in jobs]
