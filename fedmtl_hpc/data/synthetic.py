"""The FedEM synthetic mixture, generated as the paper describes.

M components theta_m ~ U[-1, 1]^d; client t: pi_t ~ Dir(alpha 1_M),
n_t = min(floor(lognormal(4, 2)) + min_train, max_train) train samples plus
test_per_client test samples, x ~ U[-1, 1]^d, z ~ Cat(pi_t),
y = 1[sigmoid(x . theta_z + N(0, noise^2)) > 0.5] = 1[x . theta_z + eps > 0].
(The reference script never advanced its write index, so its labels were not
this mixture.) The true theta and pi are kept, so the Bayes (oracle) accuracy
P(y=1 | x) = sum_m pi_m Phi(x . theta_m / noise) can be computed exactly.
Every client is drawn from its own stream (seed, DATA, cid): a rank generates
only its own clients.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .. import rng
from ..config import DataConfig
from .base import ClientData

__all__ = ["SyntheticMixture"]


class SyntheticMixture:
    """Binary-label mixture of linear classifiers (FedEM, section 'Synthetic')."""

    n_classes = 2

    def __init__(self, cfg: DataConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self.n_clients, self.n_unseen = cfg.n_clients, cfg.unseen_clients
        self.input_shape = (cfg.dim,)
        g = rng.np_stream(seed, rng.GLOBAL, 0)
        self.theta = g.uniform(-1.0, 1.0, size=(cfg.n_components, cfg.dim))  # [M, d] float64

    def _header(self, cid: int) -> tuple[np.random.Generator, int, np.ndarray]:
        """Stream of client cid, its train size and mixture weights (first draws)."""
        g = rng.np_stream(self.seed, rng.DATA, cid)
        n = int(min(np.floor(g.lognormal(4.0, 2.0)) + self.cfg.min_train, self.cfg.max_train))
        pi = g.dirichlet(np.full(self.cfg.n_components, self.cfg.alpha))
        return g, n, pi

    def mixture_weights(self, cid: int) -> np.ndarray:
        """True pi of client cid, ``[M]`` float64."""
        return self._header(cid)[2]

    def train_size(self, cid: int) -> int:
        return self._header(cid)[1]

    def _draw(self, g: np.random.Generator, pi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.cfg.dim
        x = g.uniform(-1.0, 1.0, size=(n, d))
        z = g.choice(len(pi), size=n, p=pi)
        a = np.einsum("nd,nd->n", x, self.theta[z]) + g.normal(0.0, self.cfg.noise_std, size=n)
        return x, (a > 0).astype(np.int64)

    def client(self, cid: int) -> ClientData:
        g, n, pi = self._header(cid)
        x_tr, y_tr = self._draw(g, pi, n)
        x_te, y_te = self._draw(g, pi, self.cfg.test_per_client)
        t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
        return ClientData(cid, t(x_tr, torch.float32), t(y_tr, torch.int64),
                          t(x_te, torch.float32), t(y_te, torch.int64))

    def oracle_correct(self, cid: int, data: ClientData) -> int:
        """Test samples of client cid that the Bayes classifier labels correctly."""
        pi = torch.from_numpy(self.mixture_weights(cid))
        a = data.x_test.double() @ torch.from_numpy(self.theta).T  # [n, M]
        p1 = (torch.special.ndtr(a / self.cfg.noise_std) if self.cfg.noise_std > 0 else (a > 0).double()) @ pi
        return int(((p1 > 0.5).long() == data.y_test).sum())

    def partition_info(self) -> dict:
        """Digest of everything that defines the clients: theta, all sizes and pi."""
        h = hashlib.sha256(self.theta.tobytes())
        for cid in range(self.n_clients + self.n_unseen):
            _, n, pi = self._header(cid)
            h.update(np.int64(n).tobytes() + pi.tobytes())
        return {"kind": "synthetic-mixture", "seed": self.seed, "sha256": h.hexdigest()}
