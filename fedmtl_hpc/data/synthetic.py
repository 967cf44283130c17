"""The FedEM synthetic mixture, generated as the paper describes.

M components theta_m ~ U[-1, 1]^d; client t: pi_t ~ Dir(alpha 1_M),
n_t = min(floor(lognormal(4, 2)) + min_train, max_train) train samples plus
test_per_client test samples, x ~ U[-1, 1]^d, z ~ Cat(pi_t),
y = 1[sigmoid(x . theta_z + N(0, noise^2)) > 0.5] = 1[x . theta_z + eps > 0].
(The reference script never advanced its write index, so its labels were not
this mixture.) The true theta and pi are kept, so the Bayes (oracle) accuracy
P(y=1 | x) = sum_m pi_m Phi(x . theta_m / noise) can be computed exactly.
Every client is drawn from its own stream (seed, DATA, cid): a rank generates
only its own clients, and any client can be regenerated on demand, bit for bit
(``client(cid, test=False)`` stops after the training samples): with a million
clients the engine holds only the samples of the clients that train this round.
The headers (train size, pi) of all clients are drawn once (``headers``; the engine
splits the draw over ranks and installs the gathered arrays with ``set_headers``) and
serve the dealing of clients to ranks, the weights and the partition digest.
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
        self._n: np.ndarray | None = None     # headers of all clients, once drawn (train_sizes)
        self._pi: np.ndarray | None = None

    def _header(self, cid: int) -> tuple[np.random.Generator, int, np.ndarray]:
        """Stream of client cid, its train size and mixture weights (first draws)."""
        g = rng.np_stream(self.seed, rng.DATA, cid)
        n = int(min(np.floor(g.lognormal(4.0, 2.0)) + self.cfg.min_train, self.cfg.max_train))
        pi = g.dirichlet(np.full(self.cfg.n_components, self.cfg.alpha))
        return g, n, pi

    def mixture_weights(self, cid: int) -> np.ndarray:
        """True pi of client cid, ``[M]`` float64."""
        if self._pi is not None:
            return self._pi[cid]
        return self._header(cid)[2]

    def train_size(self, cid: int) -> int:
        if self._n is not None:
            return int(self._n[cid])
        return self._header(cid)[1]

    def headers(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Train sizes ``[hi - lo]`` int64 and pi ``[hi - lo, M]`` float64 of clients lo..hi-1."""
        n = np.zeros(hi - lo, dtype=np.int64)
        pi = np.zeros((hi - lo, self.cfg.n_components))
        for j, cid in enumerate(range(lo, hi)):
            _, n[j], pi[j] = self._header(cid)
        return n, pi

    def set_headers(self, n: np.ndarray, pi: np.ndarray) -> None:
        """Install the headers of all ``n_clients + n_unseen`` clients (as ``headers(0, N)`` returns)."""
        self._n, self._pi = np.asarray(n, dtype=np.int64), np.asarray(pi, dtype=np.float64)

    def train_sizes(self) -> np.ndarray:
        """Train samples of every client ``[n_clients + n_unseen]`` (drawn once, then kept)."""
        if self._n is None:
            self.set_headers(*self.headers(0, self.n_clients + self.n_unseen))
        return self._n

    def sample_bytes(self, n_train: int) -> int:
        """Bytes one client's samples take in memory (train + test)."""
        return (n_train + self.cfg.test_per_client) * (4 * self.cfg.dim + 8)

    def _draw(self, g: np.random.Generator, pi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.cfg.dim
        x = g.uniform(-1.0, 1.0, size=(n, d))
        z = g.choice(len(pi), size=n, p=pi)
        a = np.einsum("nd,nd->n", x, self.theta[z]) + g.normal(0.0, self.cfg.noise_std, size=n)
        return x, (a > 0).astype(np.int64)

    def client(self, cid: int, test: bool = True) -> ClientData:
        """Client cid's samples (test=False: training samples only, the test set left empty)."""
        g, n, pi = self._header(cid)
        x_tr, y_tr = self._draw(g, pi, n)
        if test:
            x_te, y_te = self._draw(g, pi, self.cfg.test_per_client)
        else:
            x_te, y_te = np.zeros((0, self.cfg.dim)), np.zeros(0, dtype=np.int64)
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
        self.train_sizes()
        # per client: int64 n then pi (float64 [M]), the bytes of one packed record each
        rec = np.zeros(len(self._n), dtype=[("n", "<i8"), ("pi", "<f8", (self.cfg.n_components,))])
        rec["n"], rec["pi"] = self._n, self._pi
        h.update(rec.tobytes())
        return {"kind": "synthetic-mixture", "seed": self.seed, "sha256": h.hexdigest()}
