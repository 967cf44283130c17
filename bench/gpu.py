"""Seconds per round with many clients per GPU: the engine's paths vs a plain torch loop.

What is measured, per workload, on this rank's GPU (``cuda:local_rank % GPUs``):

* ``engine loop``: ``Engine.step()`` with ``train.batched: off`` (one ``local_update`` per
  client, then the round's exchange: device accumulator -> host buffer -> all-reduce -> back);
* ``engine batched``: ``Engine.step()`` with ``train.batched: on`` where the engine accepts it
  on this device (today the batched path runs on the CPU only: the row says why it is skipped);
* ``plain torch``: the same work written as anyone would in plain torch on the same GPU: one
  ``nn.Module`` + ``torch.optim.SGD``, for each client copy the global model in, the same
  number of minibatch steps (batch size, epochs) on its samples, add ``n_t x params`` into a
  sum, divide once per round (FedAvg), no MPI.

Workloads (FedAvg, 1 local epoch): ``linear`` (the synthetic mixture, d = 150, many small
clients) and ``cnn`` (the FEMNIST CNN on seeded random 28x28 images: a cost, not a task).
Time per round: the median over ``--rounds`` rounds after ``--warmup``, max over ranks,
``torch.cuda.synchronize()`` around each. It also reports whether the MPI library is
CUDA-aware (``MPIX_Query_cuda_support``, ``MPIR_CVAR_ENABLE_GPU``, Open MPI's
``ompi_info``): the engine stages through host memory either way.

Without a GPU it says so, says what it would measure, and exits 0 (``--device cpu`` runs the
same measurement on the CPU, to check the script).

    .venv/bin/mpiexec -n 1 .venv/bin/python bench/gpu.py [--clients 300] [--cnn-clients 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from mpi4py import MPI

from _common import header
from fedmtl_hpc.comm.mpi import MPIComm, local_rank_and_size
from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data.base import ClientData
from fedmtl_hpc.engine import Engine
from fedmtl_hpc.errors import ConfigError
from fedmtl_hpc.models import build_model
from fedmtl_hpc.params import FlatModel

LR, BATCH = 0.05, 32


class RandomImages:
    """``n`` clients of ``per`` seeded random 1x28x28 images with 10 labels each (a workload: nothing to learn)."""

    n_unseen, input_shape, n_classes = 0, (1, 28, 28), 10

    def __init__(self, n: int, per: int):
        self.n_clients, self.per = n, per

    def client(self, cid: int, test: bool = True) -> ClientData:
        g = torch.Generator().manual_seed(cid)
        x, y = torch.rand((self.per, *self.input_shape), generator=g), torch.randint(10, (self.per,), generator=g)
        return ClientData(cid, x, y, x[:8], y[:8])

    def train_sizes(self):
        return [self.per] * self.n_clients

    def partition_info(self) -> dict:
        return {"kind": "random-images", "sha256": "0" * 64}


def _config(workload: str, clients: int, batched: str, device: str):
    model, data = ("linear", {"name": "synthetic"}) if workload == "linear" else ("femnist_cnn", {"name": "mnist"})
    return parse_config({"run": {"name": "bench-gpu"}, "model": {"name": model},
                         "data": {**data, "n_clients": clients, "unseen_clients": 0},
                         "algorithm": {"name": "fedavg"},
                         "train": {"lr": LR, "batch_size": BATCH, "batched": batched,
                                   "device": "cuda" if device.startswith("cuda") else "cpu",
                                   "allow_oversubscribe": True}})


def _dataset(cfg, workload: str, per: int):
    if workload == "linear":
        from fedmtl_hpc.data.synthetic import SyntheticMixture
        return SyntheticMixture(cfg.data, cfg.run.seed)
    return RandomImages(cfg.data.n_clients, per)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _per_round(step, dev, rounds: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(rounds):
        _sync(dev)
        t = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _engine_round(comm, workload, clients, batched, dev, per, rounds, warmup) -> tuple[float | None, str]:
    try:
        cfg = _config(workload, clients, batched, str(dev))
        ds = _dataset(cfg, workload, per)
        factory = lambda: build_model(cfg.model.name, ds.input_shape, ds.n_classes)  # noqa: E731
        eng = Engine(cfg, MPIComm(comm), ds, FlatModel(factory()), factory, dev)
    except ConfigError as exc:
        return None, str(exc)
    eng.before_training()
    t = _per_round(eng.step, dev, rounds, warmup)
    eng.exchange.close()
    return t, f"{len(eng.train_ids)} clients on this rank"


def _plain_round(comm, workload, clients, dev, per, rounds, warmup) -> float:
    """FedAvg written plainly: module + torch.optim.SGD per client, weighted sum, one all-reduce."""
    cfg = _config(workload, clients, "off", str(dev))
    ds = _dataset(cfg, workload, per)
    lo, hi = clients * comm.rank // comm.size, clients * (comm.rank + 1) // comm.size
    data = [ds.client(c).to(dev) for c in range(lo, hi)]
    torch.manual_seed(0)
    model = build_model(cfg.model.name, ds.input_shape, ds.n_classes).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    host = torch.zeros(theta.numel() + 1, dtype=torch.float64)

    def one_round():
        acc = torch.zeros_like(theta, dtype=torch.float64)
        for d in data:
            torch.nn.utils.vector_to_parameters(theta, model.parameters())
            perm = torch.randperm(d.n_train, device=dev)
            for i in range(0, d.n_train, BATCH):
                idx = perm[i:i + BATCH]
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(d.x_train[idx]), d.y_train[idx]).backward()
                opt.step()
            acc.add_(torch.nn.utils.parameters_to_vector(model.parameters()).detach(), alpha=d.n_train)
        host[:-1].copy_(acc)
        host[-1] = sum(d.n_train for d in data)
        comm.Allreduce(MPI.IN_PLACE, host.numpy())
        theta.copy_(host[:-1] / host[-1])
    return _per_round(one_round, dev, rounds, warmup)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="linear,cnn")
    ap.add_argument("--clients", type=int, default=300, help="linear: clients (all ranks)")
    ap.add_argument("--cnn-clients", type=int, default=100, help="cnn: clients (all ranks)")
    ap.add_argument("--per-client", type=int, default=128, help="cnn: training images per client")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: check the script here")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    aware, source = MPIComm(comm).cuda_aware(ask_ompi_info=True)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    header(comm, "bench/gpu.py: seconds per round, many clients per GPU: engine paths vs a plain torch loop",
           f"  GPUs {gpus}")
    if comm.rank == 0:
        print(f"# CUDA-aware MPI: {'unknown' if aware is None else 'yes' if aware else 'no'} ({source}); "
              f"the engine stages the round's payload through host memory either way", flush=True)
    if args.device == "cuda" and not gpus:
        if comm.rank == 0:
            print("# no GPU: torch.cuda.is_available() is False here, so nothing is measured.\n"
                  "# On a GPU node this measures seconds per round of FedAvg with many clients per GPU "
                  "(linear: the synthetic mixture; cnn: the FEMNIST CNN on random images): the engine's "
                  "per-client loop, its batched path where the device allows it, and a plain torch loop "
                  "(module + torch.optim.SGD) doing the same work on the same GPU.", flush=True)
        return 0
    local, _ = local_rank_and_size(comm)
    dev = torch.device(f"cuda:{local % gpus}" if args.device == "cuda" else "cpu")
    if comm.rank == 0:
        print(f"{'workload':>8} {'clients':>7} {'path':>15} {'s/round':>9} {'vs plain':>8}  note", flush=True)
    for workload in args.workloads.split(","):
        clients = args.clients if workload == "linear" else args.cnn_clients
        common = (workload, clients, dev, args.per_client, args.rounds, args.warmup)
        plain = _plain_round(comm, *common)
        rows = [("plain torch", plain, "module + torch.optim.SGD")]
        for path, mode in (("engine loop", "off"), ("engine batched", "on")):
            t, note = _engine_round(comm, workload, clients, mode, dev, *common[3:])
            rows.append((path, t, note))
        worst = np.array([-1.0 if t is None else t for _, t, _ in rows])
        comm.Allreduce(MPI.IN_PLACE, worst, op=MPI.MAX)   # the slowest rank's round
        for (path, t, note), w in zip(rows, worst):
            if comm.rank == 0:
                shown, ratio = ("-", "-") if t is None else (f"{w:.4f}", f"{w / worst[0]:.2f}")
                print(f"{workload:>8} {clients:>7} {path:>15} {shown:>9} {ratio:>8}  {note}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
