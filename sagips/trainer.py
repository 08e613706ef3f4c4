"""One rank's GAN training loop (sections IV-B and V-A).

Each epoch: draw noise, let the generator predict parameters, turn them into
events with the proxy app, draw a bootstrap batch of the same size from this
rank's share of the reference data, take the generator step (its gradients go
through the gradient transport) and the discriminator step on the same fake batch.
The discriminator never leaves its rank.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mpi4py import MPI
from omegaconf import DictConfig

from sagips import checkpoints as ck
from sagips.config import param_samples
from sagips.equations import analysis_rate
from sagips.metrics import MetricsLog
from sagips.networks import Discriminator, Generator
from sagips.progress import Progress
from sagips.proxy import ProxyApp, ProxyConfig
from sagips.transport import make_transport

log = logging.getLogger(__name__)
LR_FLOOR = 0.05  # cosine schedule: final rate as a fraction of the initial one
FAULT_ENV = "SAGIPS_FAULT"  # test-only: "KIND:RANK:EPOCH", KIND in raise|nan|kill


def pick_device(choice: str, local_rank: int) -> torch.device:
    """``cuda:local_rank % n_gpus`` when a GPU is present (or asked for), else the CPU."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    return torch.device("cpu")


def retain_freed_memory() -> bool:
    """Keep freed host memory mapped for the next epoch (glibc's malloc; elsewhere a no-op).

    An epoch allocates and frees full-batch tensors of tens of MB. glibc serves
    blocks that large with mmap and unmaps them on free, so every epoch paid the
    page faults on all of them again: about 40 % of a paper-size CPU epoch. With
    mmap off and the trim threshold at its maximum, freed blocks stay in the heap
    and are reused; the heap keeps its peak size. Returns whether the setting took.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def _gan_loss(kind: str, out: torch.Tensor, label: float) -> torch.Tensor:
    target = torch.full_like(out, label)
    if kind == "bce":
        return F.binary_cross_entropy(out, target)
    return F.mse_loss(out, target)  # least-squares GAN


def gan_gradients(
    G: Generator,
    D: Discriminator,
    proxy: ProxyApp,
    data: torch.Tensor,
    samples: int,
    events: int,
    *,
    loss: str = "mse",
    norm_weight: float = 0.0,
    ref_norms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's forward and backward of both GAN steps; leaves the gradients in ``.grad``.

    The generator turns ``samples`` noise vectors into parameters, the proxy app
    into ``samples * events`` events; a bootstrap batch of the same size is drawn
    from ``data``. Returns the generator and discriminator losses.
    """
    z = torch.randn(samples, G.noise_dim, device=data.device)
    params = proxy.to_physical(G(z))
    fake, norms = proxy.sample(params, events)
    real = data[torch.randint(len(data), (len(fake),), device=data.device)]
    # The fake forward serves both steps: the discriminator step on the detached fake
    # batch sees the same values. Real and fake go through the discriminator apart, so
    # the generator's backward runs over the fake rows only, and autograd is asked
    # only for the gradients each step needs.
    out_real, out_fake = D(real), D(fake)
    g_loss = _gan_loss(loss, out_fake, 1.0)
    if norm_weight:
        g_loss = g_loss + norm_weight * ((norms / ref_norms - 1) ** 2).mean()
    d_loss = 0.5 * (_gan_loss(loss, out_real, 1.0) + _gan_loss(loss, out_fake, 0.0))
    g_params, d_params = list(G.parameters()), list(D.parameters())
    g_grads = torch.autograd.grad(g_loss, g_params, retain_graph=True)
    d_grads = torch.autograd.grad(d_loss, d_params)
    for p, g in zip(g_params + d_params, g_grads + d_grads):
        p.grad = g
    return g_loss, d_loss


def _parse_fault(rank: int) -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    kind, fault_rank, epoch = spec.split(":")
    return (kind, int(epoch)) if int(fault_rank) == rank else None


@dataclass
class EpochResult:
    g_loss: float
    d_loss: float
    comm_s: float
    staleness: float
    skipped: bool


@dataclass
class Totals:
    train_time_s: float = 0.0
    comm_s: float = 0.0
    skipped: int = 0
    max_staleness: float = 0.0
    staleness_sum: float = 0.0  # per epoch, the age of the oldest contribution used


class Trainer:
    def __init__(self, cfg: DictConfig, comm: MPI.Comm, run_dir: Path) -> None:
        self.cfg, self.comm, self.run_dir = cfg, comm, Path(run_dir)
        self.rank, self.world = comm.Get_rank(), comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = node.Get_rank(), node.Get_size()
        node.Free()
        t = cfg.train
        threads = t.threads or max(1, (os.cpu_count() or 1) // local_size)
        torch.set_num_threads(threads)
        retain_freed_memory()
        self.device = pick_device(t.device, local_rank)
        self.samples = param_samples(cfg)
        self.events = t.events_per_sample
        self.disc_batch = self.samples * self.events
        self.fault = _parse_fault(self.rank)

        p = cfg.proxy
        self.proxy = ProxyApp(
            ProxyConfig(tuple(p.truth), tuple(p.pmin), tuple(p.pmax), p.grid_points, p.x_min, p.x_max),
            self.device,
        )
        # Only this rank's share of the reference data stays in memory (Fig. 3).
        reference, self.ref_norms = self._shared_reference()
        rng = np.random.default_rng([cfg.seed, self.rank, 1])
        keep = max(1, int(round(t.data_fraction * len(reference))))
        self.my_data = reference[torch.from_numpy(rng.permutation(len(reference))[:keep])]

        m = cfg.model
        member_seed = cfg.seed * 100_003 + (self.rank if cfg.mode == "ensemble" else 0)
        torch.manual_seed(member_seed)
        self.G = Generator(m.noise_dim, 6, m.hidden, m.blocks).to(self.device)
        self.D = Discriminator(2, m.hidden, m.blocks).to(self.device)
        if cfg.mode != "ensemble":
            self._broadcast_generator()
        torch.manual_seed(cfg.seed * 100_003 + 7919 * (self.rank + 1))  # per-rank noise/batches
        betas = (0.5, 0.999)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=betas)
        # The paper keeps both rates constant; a cosine decay settles a short CPU run.
        self.schedules = [
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs, eta_min=lr * LR_FLOOR)
            for opt, lr in ((self.opt_g, t.lr_g), (self.opt_d, t.lr_d))
        ] if t.lr_schedule == "cosine" else []  # fmt: skip
        tr = cfg.transport
        self.transport = make_transport(
            cfg.mode, comm, list(self.G.parameters()), ranks_per_node=cfg.ranks_per_node, h=cfg.h,
            seed=cfg.seed, weights_only=tr.weights_only, fuse=tr.fuse, algorithm=tr.algorithm,
            outer_member=tr.outer_member, max_staleness=tr.max_staleness, rma_window=tr.rma_window,
        )  # fmt: skip
        self.totals = Totals()

    # --- set-up -------------------------------------------------------------
    def _shared_reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank 0 generates the loop-closure data once and broadcasts it (section IV-B)."""
        p = self.cfg.proxy
        data = np.empty((p.reference_events, 2), dtype=np.float32)
        norms = np.empty(2, dtype=np.float32)
        if self.rank == 0:
            events, ref_norms = self.proxy.reference(p.reference_events, p.reference_seed)
            data[:], norms[:] = events.cpu().numpy(), ref_norms.cpu().numpy()
        self.comm.Bcast(data, root=0)
        self.comm.Bcast(norms, root=0)
        return torch.from_numpy(data).to(self.device), torch.from_numpy(norms).to(self.device)

    def _broadcast_generator(self) -> None:
        for tensor in self.G.state_dict().values():
            host = tensor.detach().cpu().numpy().copy()
            self.comm.Bcast(host, root=0)
            tensor.copy_(torch.from_numpy(host))

    # --- one epoch ------------------------------------------------------------
    def step(self, epoch: int) -> EpochResult:
        t = self.cfg.train
        g_loss, d_loss = gan_gradients(
            self.G, self.D, self.proxy, self.my_data, self.samples, self.events,
            loss=t.loss, norm_weight=self.cfg.proxy.norm_weight, ref_norms=self.ref_norms,
        )  # fmt: skip
        time.sleep(self._delay_s(epoch))  # the slow sampler of section IV-B3
        self._inject(epoch)
        finite = self._grads_finite()
        if not finite and t.nonfinite == "abort":
            raise FloatingPointError(
                f"rank {self.rank}, epoch {epoch}: non-finite generator gradient "
                "(train.nonfinite=abort; use skip to drop such updates)"
            )
        stats = self.transport.exchange(epoch)
        skipped = not (finite and self._grads_finite())
        if not skipped:
            self.opt_g.step()
        self.opt_d.step()
        for schedule in self.schedules:
            schedule.step()
        return EpochResult(g_loss.item(), d_loss.item(), stats.comm_s, stats.staleness, skipped)

    def _delay_s(self, epoch: int) -> float:
        """This rank's emulated pipeline delay in ``epoch``: the fixed straggler plus the jitter.

        The jitter is exponential with mean ``train.straggler.jitter_ms``, drawn from a
        generator seeded by (seed, rank, epoch): independent per rank and epoch, and the
        same again when a run resumes.
        """
        s = self.cfg.train.straggler
        delay = s.ms if self.rank in s.ranks else 0.0
        if s.jitter_ms:
            delay += np.random.default_rng([self.cfg.seed, self.rank, epoch, 3]).exponential(s.jitter_ms)
        return delay / 1000

    def _grads_finite(self) -> bool:
        return bool(torch.isfinite(torch.stack([p.grad.sum() for p in self.G.parameters()])).all())

    def _inject(self, epoch: int) -> None:
        if self.fault is None or self.fault[1] != epoch:
            return
        kind = self.fault[0]
        log.warning("injecting fault %r at epoch %d", kind, epoch)
        if kind == "raise":
            raise RuntimeError(f"injected fault on rank {self.rank} at epoch {epoch}")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "nan":
            next(self.G.parameters()).grad.fill_(float("nan"))

    # --- checkpoints ----------------------------------------------------------
    def _save(self, epoch: int) -> None:
        now = time.time()
        common = dict(epoch=epoch, timestamp=now, train_time_s=self.totals.train_time_s,
                      rank=self.rank, world_size=self.world)  # fmt: skip
        ck.save_torch(ck.generator_path(self.run_dir, self.rank, epoch),
                      dict(state_dict=self.G.state_dict(), **common))  # fmt: skip
        state = dict(
            generator=self.G.state_dict(), discriminator=self.D.state_dict(),
            opt_g=self.opt_g.state_dict(), opt_d=self.opt_d.state_dict(),
            schedules=[sch.state_dict() for sch in self.schedules],
            torch_rng=torch.get_rng_state(), totals=self.totals.__dict__, **common,
        )  # fmt: skip
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        ck.save_torch(ck.state_path(self.run_dir, self.rank, epoch), state)

    def _load(self, epoch: int) -> None:
        state = torch.load(ck.state_path(self.run_dir, self.rank, epoch), map_location=self.device,
                           weights_only=False)  # fmt: skip
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for schedule, saved in zip(self.schedules, state["schedules"]):
            schedule.load_state_dict(saved)
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.totals = Totals(**state["totals"])

    # --- the loop -------------------------------------------------------------
    def train(self) -> None:
        t = self.cfg.train
        start = self.comm.bcast(ck.resume_epoch(self.run_dir, self.world) if self.rank == 0 else None)
        if start:
            self._load(start)
            log.info("resuming from epoch %d (train time %.1f s)", start, self.totals.train_time_s)
        metrics = MetricsLog(ck.metrics_path(self.run_dir, self.rank), keep_until=start)
        progress = Progress(self.rank, start, t.epochs)
        try:
            for epoch in range(start + 1, t.epochs + 1):
                tick = time.perf_counter()
                res = self.step(epoch)
                self.totals.train_time_s += time.perf_counter() - tick
                self.totals.comm_s += res.comm_s
                self.totals.skipped += res.skipped
                self.totals.max_staleness = max(self.totals.max_staleness, res.staleness)
                self.totals.staleness_sum += res.staleness
                metrics.add(epoch, self.totals.train_time_s, res)
                if epoch % t.log_every == 0 or epoch == t.epochs:
                    metrics.flush_row()
                progress.update(epoch, res.g_loss, res.d_loss)
                if epoch == 1 or epoch % t.checkpoint_every == 0 or epoch == t.epochs:
                    metrics.sync()
                    self._save(epoch)
        finally:
            progress.close()
            metrics.close()
        self._finish(start)

    def _finish(self, resumed_from: int) -> None:
        t = self.cfg.train
        total = self.comm.allreduce(self.totals.train_time_s, op=MPI.MAX)
        comm_s = self.comm.allreduce(self.totals.comm_s, op=MPI.MAX)
        skipped = self.comm.allreduce(self.totals.skipped, op=MPI.SUM)
        stale = self.comm.allreduce(self.totals.max_staleness, op=MPI.MAX)
        mean_stale = self.comm.allreduce(self.totals.staleness_sum, op=MPI.SUM) / (self.world * t.epochs)
        self.transport.close()
        if self.rank != 0:
            return
        summary = dict(
            status="complete", mode=self.cfg.mode, ranks=self.world,
            ranks_per_node=self.cfg.ranks_per_node, h=self.cfg.h, seed=self.cfg.seed,
            scale=self.cfg.scale, sampling=self.cfg.sampling, epochs=t.epochs,
            param_samples=self.samples, events_per_sample=self.events, disc_batch=self.disc_batch,
            total_train_time_s=total, total_comm_s=comm_s, skipped_updates=skipped,
            max_staleness_epochs=stale, mean_staleness_epochs=mean_stale, resumed_from_epoch=resumed_from,
            analysis_rate=analysis_rate(self.world, self.disc_batch, t.epochs, total),
            exchanged_values=self.transport.n_values, device=str(self.device),
            finished_at=time.time(),
        )  # fmt: skip
        ck.write_json(ck.summary_path(self.run_dir), summary)
        log.info("done: %d epochs in %.1f s, analysis rate %.3g events/s (eq. 9)",
                 t.epochs, total, summary["analysis_rate"])  # fmt: skip
