"""Seeded partitioners: which sample indices each client holds.

Every partitioner takes a seed or a ``numpy.random.Generator`` (a Generator
is used as is, so callers can chain draws from one stream) and returns one
sorted int64 index array per client; the same seed gives the same lists.
``partition_digest`` hashes the lists for the checkpoint (docs/checkpoint-format.md, /partition).
Draws that can leave a client too small retry a bounded number of times and
then raise DataError: an impossible split never loops forever.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple, Sequence

import numpy as np

from fedmtl_hpc.errors import DataError

__all__ = ["Seed", "ClientSplit", "iid", "dirichlet", "label_group_dirichlet",
           "pathological", "pachinko", "natural", "fraction_subsample",
           "train_test_split", "partition_digest"]

Seed = int | np.random.Generator | np.random.SeedSequence
_DIGEST_TAG = b"fedmtl-partition-v1\x00"


class ClientSplit(NamedTuple):
    """One client's sorted int64 indices: train, test, val (may be empty)."""

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray


def _labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"{name} must be a 1-D integer array, got "
                        f"{labels.dtype} with shape {labels.shape}")
    return labels.astype(np.int64)


def _need(n_samples: int, n_clients: int, min_samples: int, what: str) -> None:
    """Fail at once when even a perfect split cannot give min_samples each."""
    if n_clients < 1:
        raise DataError(f"{what}: n_clients must be >= 1, got {n_clients}")
    if n_samples < n_clients * min_samples:
        raise DataError(f"{what}: {n_samples} samples cannot give "
                        f"{n_clients} clients at least {min_samples} each")


def _finish(parts: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    return [np.sort(np.concatenate(p)).astype(np.int64) if len(p)
            else np.empty(0, np.int64) for p in parts]


def iid(n_samples: int, n_clients: int, seed: Seed) -> list[np.ndarray]:
    """Uniform random split into n_clients near-equal int64 index arrays."""
    _need(n_samples, n_clients, 1, "iid")
    perm = np.random.default_rng(seed).permutation(n_samples)
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, n_clients)]


def _dirichlet_blocks(blocks: list[np.ndarray], n_clients: int, alpha: float,
                      rng: np.random.Generator, min_samples: int,
                      max_tries: int, what: str) -> list[np.ndarray]:
    """Split each block by counts ~ Multinomial(|block|, Dir(alpha * 1))."""
    if not alpha > 0:
        raise DataError(f"{what}: alpha must be > 0, got {alpha}")
    _need(sum(len(b) for b in blocks), n_clients, min_samples, what)
    smallest = 0
    for _ in range(max(max_tries, 1)):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for block in blocks:
            p = np.nan_to_num(rng.dirichlet(np.full(n_clients, alpha)))
            if p.sum() <= 0:  # tiny alpha can underflow every share to zero
                p = np.eye(n_clients)[rng.integers(n_clients)]
            counts = rng.multinomial(len(block), p / p.sum())
            for k, chunk in enumerate(np.split(block, np.cumsum(counts)[:-1])):
                parts[k].append(chunk)
        sizes = [sum(len(c) for c in p) for p in parts]
        smallest = min(sizes)
        if smallest >= min_samples:
            return _finish(parts)
    raise DataError(f"{what}: after {max_tries} draws a client still had "
                    f"{smallest} < min_samples={min_samples} samples; raise "
                    f"alpha, lower min_samples or use fewer clients")


def dirichlet(labels: np.ndarray, n_clients: int, alpha: float, seed: Seed,
              min_samples: int = 1, max_tries: int = 100) -> list[np.ndarray]:
    """Per label, client shares ~ Dir(alpha * 1_n_clients) (Hsu et al. 2019)."""
    labels = _labels(labels)
    rng = np.random.default_rng(seed)
    blocks = [rng.permutation(np.flatnonzero(labels == c))
              for c in np.unique(labels)]
    return _dirichlet_blocks(blocks, n_clients, alpha, rng, min_samples,
                             max_tries, f"dirichlet(alpha={alpha})")


def label_group_dirichlet(labels: np.ndarray, n_clients: int,
                          n_groups: int | None, alpha: float, seed: Seed,
                          min_samples: int = 1,
                          max_tries: int = 100) -> list[np.ndarray]:
    """FedEM split: shuffled labels in n_groups groups, per group Dir(alpha) shares."""
    labels = _labels(labels)
    classes = np.unique(labels)
    n_groups = len(classes) if n_groups is None else n_groups  # FedEM's -1
    if not 1 <= n_groups <= len(classes):
        raise DataError(f"label_group_dirichlet: n_groups must be in "
                        f"[1, {len(classes)}] (the number of labels), "
                        f"got {n_groups}")
    rng = np.random.default_rng(seed)
    groups = np.array_split(rng.permutation(classes), n_groups)
    blocks = [rng.permutation(np.flatnonzero(np.isin(labels, g)))
              for g in groups]
    return _dirichlet_blocks(blocks, n_clients, alpha, rng, min_samples,
                             max_tries, f"label_group_dirichlet(alpha={alpha})")


def pathological(labels: np.ndarray, n_clients: int, seed: Seed,
                 shards_per_client: int = 2) -> list[np.ndarray]:
    """McMahan et al. 2017: label-sorted shards, shards_per_client per client."""
    labels = _labels(labels)
    n_shards = n_clients * shards_per_client
    if shards_per_client < 1:
        raise DataError(f"pathological: shards_per_client must be >= 1, "
                        f"got {shards_per_client}")
    _need(len(labels), n_shards, 1, "pathological (one sample per shard)")
    rng = np.random.default_rng(seed)
    # Shuffle first so the order inside a label (hence each shard's content)
    # depends on the seed, then a stable sort groups the labels.
    perm = rng.permutation(len(labels))
    ordered = perm[np.argsort(labels[perm], kind="stable")]
    # array_split: shard sizes differ by at most one and no sample is dropped.
    shards = np.array_split(ordered, n_shards)
    deal = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return _finish([[shards[s] for s in row] for row in deal])


def _draw(weights: np.ndarray, available: np.ndarray,
          rng: np.random.Generator) -> int:
    """Index drawn from weights restricted to available entries (renormalised)."""
    w = weights * available
    if not w.sum() > 0:  # all remaining mass was on exhausted labels
        w = available.astype(np.float64)
    cum = np.cumsum(w)
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))


def pachinko(coarse: np.ndarray, fine: np.ndarray, client_sizes: Sequence[int],
             seed: Seed, alpha: float = 0.4,
             beta: float = 10.0) -> list[np.ndarray]:
    """Pachinko allocation (Reddi et al. 2021): coarse ~ Dir(alpha), fine ~ Dir(beta)."""
    coarse, fine = _labels(coarse, "coarse"), _labels(fine, "fine")
    if coarse.shape != fine.shape:
        raise DataError(f"pachinko: coarse and fine must have the same length, "
                        f"got {len(coarse)} and {len(fine)}")
    sizes = [int(s) for s in client_sizes]
    if any(s < 0 for s in sizes) or sum(sizes) > len(fine):
        raise DataError(f"pachinko: client sizes must be >= 0 and sum to at "
                        f"most {len(fine)} samples, got sum {sum(sizes)}")
    rng = np.random.default_rng(seed)
    coarse_ids = np.unique(coarse)
    fines_of, pools = [], []
    for c in coarse_ids:
        members = np.unique(fine[coarse == c])
        fines_of.append(members)
        pools.append([rng.permutation(np.flatnonzero(fine == f)) for f in members])
    if sum(len(f) for f in fines_of) != len(np.unique(fine)):
        raise DataError("pachinko: a fine label appears under two coarse "
                        "labels; expected a hierarchy (as in CIFAR-100)")
    used = [np.zeros(len(f), np.int64) for f in fines_of]  # drawn per fine
    left = [np.array([len(p) for p in ps]) for ps in pools]
    coarse_left = np.array([lf.sum() for lf in left])
    parts = []
    for size in sizes:
        theta = rng.dirichlet(np.full(len(coarse_ids), alpha))
        phi = [rng.dirichlet(np.full(len(f), beta)) for f in fines_of]
        chosen = np.empty(size, np.int64)
        for j in range(size):
            # Without replacement: exhausted labels drop out and the client's
            # weights renormalise over what is left (TFF's implementation).
            c = _draw(theta, coarse_left > 0, rng)
            f = _draw(phi[c], left[c] > 0, rng)
            chosen[j] = pools[c][f][used[c][f]]
            used[c][f] += 1
            left[c][f] -= 1
            coarse_left[c] -= 1
        parts.append(np.sort(chosen))
    return parts


def natural(groups: np.ndarray) -> list[np.ndarray]:
    """One client per distinct group id (writer, role), in np.unique order."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise DataError(f"natural: groups must be a non-empty 1-D array, "
                        f"got shape {groups.shape}")
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")  # O(N log N), not O(N * groups)
    return [p.astype(np.int64)
            for p in np.split(order, np.cumsum(np.bincount(inverse))[:-1])]


def fraction_subsample(n_samples: int, fraction: float, seed: Seed) -> np.ndarray:
    """Sorted int64 indices of floor(fraction * n_samples) random samples."""
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    k = int(n_samples * fraction)
    if k < 1:
        raise DataError(f"fraction {fraction} of {n_samples} samples keeps "
                        f"no sample")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_samples, size=k, replace=False)).astype(np.int64)


def _share(n: int, fraction: float) -> int:
    """Round-half-up count, at least one when the fraction is positive."""
    return 0 if fraction == 0 else max(1, int(np.floor(n * fraction + 0.5)))


def train_test_split(parts: Sequence[np.ndarray], seed: Seed,
                     test_fraction: float = 0.2, val_fraction: float = 0.0,
                     min_train: int = 1) -> list[ClientSplit]:
    """Per-client random train/test(/val) split of each int64 index array."""
    if not (0 <= test_fraction and 0 <= val_fraction
            and test_fraction + val_fraction < 1):
        raise DataError(f"test_fraction ({test_fraction}) and val_fraction "
                        f"({val_fraction}) must be >= 0 and sum below 1")
    rng = np.random.default_rng(seed)
    out = []
    for k, part in enumerate(parts):
        n = len(part)
        n_test, n_val = _share(n, test_fraction), _share(n, val_fraction)
        if n - n_test - n_val < min_train:
            raise DataError(
                f"client {k} has {n} samples: a split with test {test_fraction}"
                f" and val {val_fraction} leaves {n - n_test - n_val} < "
                f"min_train={min_train} for training")
        perm = rng.permutation(np.asarray(part, dtype=np.int64))
        test, val, train = np.split(perm, [n_test, n_test + n_val])
        out.append(ClientSplit(np.sort(train), np.sort(test), np.sort(val)))
    return out


def partition_digest(index_lists: Sequence[np.ndarray]) -> str:
    """SHA-256 hex over tag, list count, then each list's length and int64 LE values."""
    h = hashlib.sha256(_DIGEST_TAG)
    h.update(struct.pack("<Q", len(index_lists)))
    for indices in index_lists:
        a = np.asarray(indices)
        if a.size and a.dtype.kind not in "iu":
            raise DataError(f"partition_digest: expected integer indices, "
                            f"got {a.dtype}")
        a = np.ascontiguousarray(a.reshape(-1), dtype="<i8")
        h.update(struct.pack("<Q", a.size))
        h.update(a.tobytes())
    return h.hexdigest()
