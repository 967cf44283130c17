"""Clustered FL (Sattler, Mueller, Samek 2020): FedAvg inside clusters that split when their clients disagree.

Server state, identical on every rank: ``shared`` ``[C, P]`` (one model per cluster; C = 1
at the start, initialised like FedAvg's model) and ``cluster_of`` int64 ``[N]``. A client
trains from its cluster's model with local SGD and sends its model theta_t; the round's ONE
all-reduce carries (float64)::

    sums     [C, P]   sum_t w_t theta_t per cluster (w_t = n_t / n; a non-sampled client adds
                      its cluster's current model: the unbiased rule, as FedAvg)
    weight   [C]      sum_t w_t per cluster (sampled and non-sampled members)
    client_w [N]      w_t of each sampled client, 0 elsewhere
    updates  [N, D]   dW_t = theta_t - theta_c of each sampled client (D = P), or its sketch
                      dW_t G (G: seeded Gaussian [P, D] / sqrt(D), D = sketch_dim); 0 elsewhere
    sqnorm   [N]      sketched path only: the exact ||dW_t||^2

Each rank writes its own clients' rows; the sum over ranks gathers them exactly. Then every
rank, from the same reduced buffer: cluster c's model <- sums_c / weight_c; and a cluster c
(round >= split_from, >= 2 min_cluster_size members, fewer than max_clusters clusters) whose
sampled members' weighted mean update norm is below eps1 while their largest update norm is
above eps2 is bipartitioned by complete linkage on the cosine distances of the sampled
members' updates (``cluster_math``). Both sides start from the cluster's new model; the side
holding the smallest client id keeps the id, the other becomes cluster C. Members that did
not train this round join the side with more sampled clients. On the sketched path the
norms are exact (mean: ||sums_c - weight_c theta_c|| / sum of sampled w_t; max: sqrt(sqnorm));
only the cosines are approximate.

A client unseen in training is evaluated with the cluster model of lowest loss on its
training data.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..errors import CheckpointError
from . import cluster_math as cm
from .base import Algorithm, LocalResult

__all__ = ["ClusteredFL"]


class ClusteredFL(Algorithm):
    name = "clustered"
    n_shared = 1
    columns = ("n_clusters",)

    def __init__(self, cfg, model, factory, device):
        super().__init__(cfg, model, factory, device)
        self.cluster_of = np.zeros(cfg.data.n_clients, dtype=np.int64)   # setup() confirms N
        self._mask = np.zeros(0, dtype=bool)
        self._restored = False
        self._pending: list[tuple[int, np.ndarray]] = []   # sketched path: (cid, dW) until accumulate_idle
        d = self.params.sketch_dim
        self.sketch = cm.Sketch(cfg.run.seed, model.n_params, d) if d > 0 else None

    def setup(self, n_clients, total_weight):
        super().setup(n_clients, total_weight)
        if len(self.cluster_of) != n_clients:
            if self._restored:
                raise CheckpointError(f"checkpoint assigns {len(self.cluster_of)} clients to clusters, "
                                      f"the run has {n_clients}")
            self.cluster_of = np.zeros(n_clients, dtype=np.int64)

    @property
    def n_clusters(self) -> int:
        return int(self.shared.shape[0])

    # -- one round, server side ------------------------------------------------------
    def begin_round(self, rnd, mask):
        super().begin_round(rnd, mask)
        self._mask = np.asarray(mask, dtype=bool).copy()
        self._pending = []

    def start(self, cid):
        return self.shared[int(self.cluster_of[cid])][None]

    def payload(self):
        c, p = self.shared.shape
        n = len(self.cluster_of)
        out = {"sums": (c, p), "weight": (c,), "client_w": (n,),
               "updates": (n, self.sketch.dim if self.sketch else p)}
        if self.sketch:
            out["sqnorm"] = (n,)
        return out

    def accumulate(self, views, cid, scale, res):
        c = int(self.cluster_of[cid])
        theta = res.params.reshape(-1)
        views["sums"][c].add_(theta, alpha=scale)
        views["weight"][c] += scale
        views["client_w"][cid] = scale
        dw = theta.double() - self.shared[c].double()
        if self.sketch is None:
            views["updates"][cid].copy_(dw)
        else:   # sketched in accumulate_idle, all of this rank's clients in one pass over G
            views["sqnorm"][cid] = torch.dot(dw, dw)
            self._pending.append((cid, dw.float().cpu().numpy()))

    def accumulate_idle(self, views, cids, scales):
        per = defaultdict(float)
        for cid, s in zip(cids, scales):
            per[int(self.cluster_of[cid])] += s
        for c in sorted(per):
            views["sums"][c].add_(self.shared[c], alpha=per[c])
            views["weight"][c] += per[c]
        if self._pending:   # once per round, before the all-reduce
            cids = [cid for cid, _ in self._pending]
            z = self.sketch.project(np.stack([dw for _, dw in self._pending]))
            views["updates"][cids] = torch.from_numpy(z).to(views["updates"].device)
            self._pending = []

    def finish_round(self, views):
        sums = views["sums"]
        weight = views["weight"].cpu().numpy().copy()
        client_w = views["client_w"].cpu().numpy().copy()
        new = self.shared.clone()
        for c in np.flatnonzero(weight > 0):
            new[int(c)] = sums[int(c)] / float(weight[c])
        splits = self._splits(views, client_w)
        if not splits:
            self.shared.copy_(new)
        else:
            parents = []
            for parent, move in splits:
                self.cluster_of[move] = self.n_clusters + len(parents)
                parents.append(parent)
            self.shared = torch.cat([new, new[parents]]).contiguous()
        return {"n_clusters": float(self.n_clusters)}

    def _splits(self, views, client_w) -> list[tuple[int, np.ndarray]]:
        """The (cluster, clients that leave it) of this round's splits, in cluster order."""
        p = self.params
        if self.round < p.split_from:
            return []
        out, n_after = [], self.n_clusters
        updates = sqnorm = None
        for c in range(self.n_clusters):
            if p.max_clusters and n_after >= p.max_clusters:
                break
            members = np.flatnonzero(self.cluster_of == c)
            sampled = members[self._mask[members]]
            if len(members) < 2 * p.min_cluster_size or len(sampled) < 2 * p.min_cluster_size:
                continue
            w = client_w[sampled]
            if not w.sum() > 0:
                continue
            if updates is None:
                updates = views["updates"].cpu().numpy()
                sqnorm = views["sqnorm"].cpu().numpy() if self.sketch else None
            u = updates[sampled]
            if self.sketch is None:
                mean, top = cm.update_norms(u, w)
            else:   # exact norms: sum_t w_t dW_t = sums_c - weight_c theta_c (non-sampled add theta_c)
                diff = views["sums"][c] - views["weight"][c] * self.shared[c].double()
                mean = float(torch.linalg.vector_norm(diff)) / float(w.sum())
                top = float(np.sqrt(sqnorm[sampled].max()))
            if not cm.split_wanted(mean, top, p.eps1, p.eps2):
                continue
            labels = cm.complete_linkage_bipartition(1.0 - cm.cosine_matrix(u))
            sides = cm.split_members(members, sampled, labels, p.min_cluster_size)
            if sides is None:
                continue
            out.append((c, sides[1]))
            n_after += 1
        return out

    # -- one round, client side ------------------------------------------------------------
    def local_update(self, data, start, state, gen):
        theta = start.clone()
        loss = self.sgd(theta, data, gen)
        return LocalResult(theta, loss)

    # -- evaluation ------------------------------------------------------------------------
    def predict_proba(self, x, shared, state):
        return self.model.proba(shared[:1], x)[0]

    def personalize(self, data, shared, state, gen):
        """A training client gets its own cluster's ``[1, P]``; an unseen client (given all C
        models) the cluster model of lowest mean loss on its training data (first on ties)."""
        if shared.shape[0] <= 1 or data.n_train == 0:
            return shared[:1], state
        k = int(self.model.losses(shared, data.iter_train()).mean(dim=1).argmin())
        return shared[k:k + 1], state

    # -- checkpoint --------------------------------------------------------------------------
    def state_dict(self):
        out = super().state_dict()
        out["attrs"]["n_clusters"] = self.n_clusters
        out["arrays"]["cluster_id"] = self.cluster_of.astype(np.int64).copy()
        return out

    def load_state_dict(self, group, shared):
        shared = np.asarray(shared)
        ids = group.get("arrays", {}).get("cluster_id")
        if ids is None:
            raise CheckpointError("checkpoint lacks /algorithm/cluster_id (clustered needs each client's cluster)")
        ids = np.asarray(ids, dtype=np.int64)
        if shared.ndim != 2 or shared.shape[0] < 1 or shared.shape[1] != self.model.n_params:
            raise CheckpointError(f"checkpoint holds shared shape {tuple(shared.shape)}, "
                                  f"clustered needs [C >= 1, {self.model.n_params}]")
        if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= shared.shape[0])):
            raise CheckpointError(f"/algorithm/cluster_id must be [N] ids in [0, {shared.shape[0]})")
        n = group.get("attrs", {}).get("n_clusters", shared.shape[0])
        if int(n) != shared.shape[0]:
            raise CheckpointError(f"/algorithm n_clusters is {n}, /global/params holds {shared.shape[0]} models")
        self.shared = torch.from_numpy(np.array(shared, dtype=np.float32)).to(self.device)
        self.cluster_of = ids.copy()
        self._restored = True
