"""The algorithm catalog: every ``algorithm.name``, its own config section and its modes.

Torch-free on purpose: the config validator (also used on login nodes by ``topology``,
``partition`` and ``render-job``) and the README's config table read it, and
``algorithms.ALGORITHMS`` imports the implementation named here only when a run needs it.
Each algorithm's keys live in ``algorithm.<name>.<key>``; a key's doc says where its
default comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from ..options import at_least, in_range, option, positive, rule

__all__ = ["AlgorithmSpec", "SPECS", "names", "spec"]


@dataclass(frozen=True)
class NoParams:
    """An algorithm without keys of its own."""


@dataclass(frozen=True)
class FedEMParams:
    n_components: int = option(3, at_least(1), doc="mixture components M (FedEM paper: 3)")
    adapt_iters: int = option(50, at_least(0), doc="E-step/pi iterations for clients unseen in training")


@dataclass(frozen=True)
class FedProxParams:
    mu: float = option(0.01, at_least(0.0), doc="proximal weight: local objective + mu/2 ||theta - theta_global||^2 "
                       "(Li et al. 2020 tune mu in {0.001, 0.01, 0.1, 1}; FedEM's scripts use 0.05-1; "
                       "0 is FedAvg, bit for bit)")


@dataclass(frozen=True)
class FedAvgPlusParams:
    tune_epochs: int = option(1, at_least(0), doc="local epochs of fine-tuning before each evaluation "
                              "(FedEM paper: 1; ignored when tune_steps > 0)")
    tune_steps: int = option(0, at_least(0), doc="if > 0: exactly this many fine-tuning steps instead")
    tune_lr: float = option(0.0, at_least(0.0), doc="fine-tuning learning rate (0: train.lr at that round)")


@dataclass(frozen=True)
class ClusteredParams:
    eps1: float = option(0.4, at_least(0.0), doc="split only when the norm of the cluster's mean update is below "
                         "this (Sattler et al. 2020 and the FedEM code: 0.4)")
    eps2: float = option(1.6, at_least(0.0), doc="... and the largest client update norm is above this (1.6)")
    min_cluster_size: int = option(2, at_least(1), doc="a split must leave at least this many clients per side")
    split_from: int = option(20, at_least(0), doc="no split before this round (0-based; Sattler et al. warm up)")
    max_clusters: int = option(0, at_least(0), doc="stop splitting at this many clusters (0: no cap)")
    sketch_dim: int = option(0, at_least(0), doc="0: exact cosine similarities from the full updates (N x P "
                             "numbers per round); > 0: from seeded Gaussian sketches of this size (N x sketch_dim)")


@dataclass(frozen=True)
class APFLParams:
    alpha: float = option(0.5, in_range(0.0, 1.0), doc="initial mixing weight of the personal model "
                          "(Deng et al. 2020 try 0.25/0.5/0.75)")
    learn_alpha: bool = option(True, doc="learn alpha_t by gradient descent (adaptive APFL); false: keep it fixed")
    alpha_lr: float = option(0.0, at_least(0.0), doc="step size of alpha (0: train.lr at that round)")


@dataclass(frozen=True)
class DittoParams:
    lam: float = option(1.0, at_least(0.0), doc="pull of the personal model toward the global one, "
                        "f_t(v) + lam/2 ||v - theta||^2 (Li et al. 2021 tune {0.01, 0.1, 1, 2}); taken as an "
                        "exact proximal step, so any lam is stable")
    personal_steps: int = option(0, at_least(0), doc="personal SGD steps per round (0: as many as the global "
                                 "local work, train.local_epochs / local_steps)")
    personal_lr: float = option(0.0, at_least(0.0), doc="personal learning rate (0: train.lr at that round)")


@dataclass(frozen=True)
class PFedMeParams:
    lam: float = option(15.0, positive(), doc="Moreau-envelope weight lambda (T. Dinh et al. 2020: 15); the "
                        "outer step w -= train.lr * lam (w - theta_hat) needs train.lr * lam < 1")
    inner_steps: int = option(5, at_least(1), doc="K steps solving the personalized problem per local step (5)")
    personal_lr: float = option(0.01, positive(), doc="step size of the inner problem (0.01: the authors' "
                                "Synthetic and CIFAR-10 runs; MNIST 0.1)")
    beta: float = option(1.0, positive(), doc="server mix theta <- (1 - beta) theta + beta mean(local) (1.0 or 2.0)")


@dataclass(frozen=True)
class ProxSyncParams:
    restart: bool = option(True, doc="restart FISTA momentum when the objective goes up (O'Donoghue & Candes 2015)")


@dataclass(frozen=True)
class ProxAsyncParams:
    max_staleness: int = option(32, at_least(0), doc="a task may be at most this many updates ahead of the "
                                "slowest task (the server holds its reply until the slowest catches up); 0: no bound")
    relax: float = option(1.0, in_range(0.0, 1.0, lo_open=True), doc="server's relaxation of each pushed forward "
                          "step, v_t <- v_t + relax (u_t - v_t) (AMTL's KM step)")
    updates_per_round: int = option(0, at_least(0), doc="server updates between two synchronous round ends "
                                    "(metrics, checkpoints, stop votes; 0: 10 x tasks)")
    delay_ranks: object = option([], rule(lambda v: isinstance(v, list) and all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in v), "must be a list of worker ranks >= 1"),
        doc="ranks slowed on purpose (tests, benchmarks): each of their updates sleeps delay_seconds")
    delay_seconds: float = option(0.0, at_least(0.0), doc="per-update delay injected on delay_ranks")


@dataclass(frozen=True)
class MTRLParams:
    eps: float = option(1e-6, positive(), doc="Omega = (W^T W + eps I)^(1/2) / tr(...): keeps Omega invertible "
                        "(the model then minimises the eps-perturbed objective, see README)")
    inner_iters: int = option(10, at_least(1), doc="accelerated W steps on the separable surrogate per Omega update")


@dataclass(frozen=True)
class DSMLParams:
    threshold: float = option(0.0, at_least(0.0), doc="group hard threshold on debiased row norms (0: per-row "
                              "chi-square rule from the estimated noise, see README)")
    node_lam: float = option(0.0, at_least(0.0), doc="nodewise-lasso penalty (0: sqrt(2 log(d) / n_t))")
    lasso_iters: int = option(2000, at_least(1), doc="most FISTA iterations per lasso (task and nodewise)")


@dataclass(frozen=True)
class ClusteredMTLParams:
    k: int = option(2, at_least(1), doc="task clusters k (tr M = k in the convex relaxation; spectral clustering "
                    "into k groups)")
    eta: float = option(1.0, positive(), doc="eta = rho2 / rho1 of Zhou, Chen, Ye (2011); mtl.lam is rho1")


@dataclass(frozen=True)
class AlgorithmSpec:
    """One ``algorithm.name``: its keys, the modes it runs in, where its code lives."""

    name: str
    params: type
    impl: str                                   # "module:Class" under fedmtl_hpc.algorithms
    summary: str
    modes: tuple[str, ...] = ("client-server",)
    program: str = "federated"                  # which Loop runs it: federated (engine.py) | mtl (linear_mtl/)

    def load(self) -> type:
        module, _, cls = self.impl.partition(":")
        package = "fedmtl_hpc.linear_mtl" if self.program == "mtl" else "fedmtl_hpc.algorithms"
        return getattr(import_module(f"{package}.{module}"), cls)


SPECS: dict[str, AlgorithmSpec] = {s.name: s for s in (
    AlgorithmSpec("fedem", FedEMParams, "fedem:FedEM", "FedEM (Marfoq et al. 2021); decentralized: D-FedEM",
                  ("client-server", "decentralized")),
    AlgorithmSpec("fedavg", NoParams, "fedavg:FedAvg", "FedAvg (McMahan et al. 2017); decentralized: D-SGD",
                  ("client-server", "decentralized")),
    AlgorithmSpec("local", NoParams, "local:Local", "every client trains alone, nothing exchanged"),
    AlgorithmSpec("fedprox", FedProxParams, "fedprox:FedProx", "FedProx (Li et al. 2020)"),
    AlgorithmSpec("fedavg_plus", FedAvgPlusParams, "fedavg_plus:FedAvgPlus", "FedAvg + local tuning before evaluation"),
    AlgorithmSpec("clustered", ClusteredParams, "clustered:ClusteredFL", "Clustered FL (Sattler et al. 2020)"),
    AlgorithmSpec("apfl", APFLParams, "apfl:APFL", "APFL (Deng et al. 2020)"),
    AlgorithmSpec("ditto", DittoParams, "ditto:Ditto", "Ditto (Li et al. 2021)"),
    AlgorithmSpec("pfedme", PFedMeParams, "pfedme:PFedMe", "pFedMe (T. Dinh et al. 2020)"),
    AlgorithmSpec("prox_sync", ProxSyncParams, "prox_sync:ProxSync", "synchronous FISTA proximal gradient "
                  "(l21 | nuclear)", program="mtl"),
    AlgorithmSpec("prox_async", ProxAsyncParams, "prox_async:ProxAsync", "asynchronous proximal gradient with a "
                  "server rank (Baytas et al. 2016)", program="mtl"),
    AlgorithmSpec("mtrl_surrogate", MTRLParams, "mtrl:MTRLSurrogate", "MTRL (Zhang & Yeung) by the decomposable "
                  "surrogate of PMTL (Zhang 2015)", program="mtl"),
    AlgorithmSpec("dsml", DSMLParams, "dsml:DSML", "one-shot debiased lasso + group hard thresholding "
                  "(Wang, Kolar, Srebro 2016)", program="mtl"),
    AlgorithmSpec("clustered_mtl", ClusteredMTLParams, "cmtl:ClusteredMTL", "convex clustered MTL "
                  "(Zhou, Chen, Ye 2011), parallel", program="mtl"),
)}


def names() -> tuple[str, ...]:
    return tuple(SPECS)


def spec(name: str) -> AlgorithmSpec:
    return SPECS[name]
