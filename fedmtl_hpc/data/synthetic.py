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
from .base import ClientBlock, ClientData

__all__ = ["SyntheticMixture", "components"]


def components(g: np.random.Generator, pi: np.ndarray, n: int) -> np.ndarray:
    """``g.choice(len(pi), size=n, p=pi)`` draw for draw (numpy's inverse cdf; tests/scale/test_lazy.py
    checks it), without choice's per-call checks of p: ~12 us a client, every round when lazy."""
    cdf = np.cumsum(pi)
    cdf /= cdf[-1]
    return cdf.searchsorted(g.random(n), side="right")


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
        self._block_buf: tuple[np.ndarray, np.ndarray] | None = None   # train_block(reuse=True)

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

    def _draw(self, g: np.random.Generator, pi: np.ndarray, n: int,
              scratch: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """n samples: x ``[n, d]`` float64 (in ``scratch[0]`` when given: no allocation) and y ``[n]``.

        ``random`` into a buffer then ``2 r - 1`` is bit for bit ``uniform(-1, 1)`` (numpy computes
        ``-1 + 2 r``; the product is exact), from the same draws of ``g``.
        """
        d = self.cfg.dim
        x, tz = scratch if scratch is not None else (np.empty((n, d)), np.empty((n, d)))
        x, tz = x[:n], tz[:n]
        g.random(out=x)
        np.multiply(x, 2.0, out=x)
        np.subtract(x, 1.0, out=x)
        z = components(g, pi, n)
        a = np.einsum("nd,nd->n", x, np.take(self.theta, z, axis=0, out=tz)) + g.normal(0.0, self.cfg.noise_std,
                                                                                          size=n)
        return x, (a > 0).astype(np.int64)

    def train_block(self, cids, reuse: bool = False) -> ClientBlock:
        """The training samples of clients ``cids`` as one block, drawn straight into it: bit for bit
        ``client(cid, test=False)`` of each, without per-client tensors (lazy clients, every round).

        reuse: draw into this dataset's one block buffer (grown as needed, so a round does not fault in
        and zero fresh pages for the samples; hundreds of MB at a million clients): the block is then
        valid until the next ``reuse`` call."""
        cids = np.asarray(cids, dtype=np.int64)
        n = self._n[cids] if self._n is not None else np.array([self.train_size(int(c)) for c in cids], dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64) if len(n) else n
        d, big, total = self.cfg.dim, int(n.max()) if len(n) else 0, int(n.sum())
        if reuse:
            if self._block_buf is None or self._block_buf[1].shape[0] < total:
                self._block_buf = None      # the old one goes before the new one comes
                self._block_buf = (np.empty((total + total // 8, d), dtype=np.float32),
                                   np.empty(total + total // 8, dtype=np.int64))
            x, y = self._block_buf[0][:total], self._block_buf[1][:total]
        else:
            x, y = np.empty((total, d), dtype=np.float32), np.empty(total, dtype=np.int64)
        scratch = (np.empty((big, d)), np.empty((big, d)))
        for cid, o, m in zip(cids.tolist(), off.tolist(), n.tolist()):
            g, _, pi = self._header(cid)
            xs, y[o:o + m] = self._draw(g, pi, m, scratch)
            x[o:o + m] = xs                 # float64 -> float32, rounded as torch's .to(float32)
        return ClientBlock(torch.from_numpy(x), torch.from_numpy(y), off, n, cids)

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
