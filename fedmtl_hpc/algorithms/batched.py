"""Batched local work: a rank's sampled clients train as ONE computation.

The per-client reference path (``Algorithm.local_update`` -> ``sgd.local_sgd``) runs one
small minibatch step at a time, client after client. For the linear model (cross-entropy,
closed-form gradient) the same arithmetic is done here on a ``[C, K, P]`` stack of the C
sampled clients' parameters:

* every client's batch index sequence is drawn exactly as ``sgd.batches`` draws it from
  the client's own ``gen`` (the draws are cheap; they are precomputed into one
  ``[C, S, B]`` table of sample rows, padded, with the batch size of each step);
* clients are sorted by (number of steps, train size) descending, so the clients still
  training at step s are a prefix of the stack, and consecutive clients have similar
  batch sizes: step s runs over that prefix in chunks, each padded to its own widest
  batch (padding rows get weight 0, so they add exact zeros);
* the minibatch of step s of every client in a chunk is one gathered ``[A, w, d]``
  tensor; logits, the closed-form gradient and the SGD update (weight decay, proximal
  term, momentum) are batched matmuls and element-wise ops on the ``[A, K, P]`` rows.

The element-wise parts are those of ``local_sgd`` (bitwise); the matmul reductions run
in a different blocking, so results agree with the per-client loop to float32 rounding
(~1e-7 relative; the tests hold them to 1e-6).

An algorithm opts in by defining ``local_update_batch(block, sel, starts, states, gens)``
in the same class that defines its ``local_update`` (a subclass that overrides
``local_update`` only falls back to the per-client path); see :func:`algorithm_supports`.
The engine chooses the batched path where :func:`supported` holds (``train.batched``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.base import ClientBlock, ClientData

__all__ = ["BatchResult", "supported", "algorithm_supports", "model_supports", "plan_batches",
           "batched_sgd", "block_losses", "rows_of", "segment_mean", "expand_starts", "CHUNK_CLIENTS"]

CHUNK_CLIENTS = 256      # clients per gathered minibatch tensor (bounds its memory: 256 x 128 x d floats)
_ROWS = 1 << 16          # samples per chunk of the batched E-step / loss pass


@dataclass
class BatchResult:
    """What C clients send: their new shared stacks ``[C, K, P]`` (None when K == 0) and objectives."""

    params: torch.Tensor | None
    losses: np.ndarray          # [C] float64


def _defining(cls: type, name: str):
    for c in cls.__mro__:
        if name in c.__dict__:
            return c
    return None


def algorithm_supports(algo) -> bool:
    """The class defining ``local_update`` also defines ``local_update_batch``."""
    owner = _defining(type(algo), "local_update")
    return owner is not None and owner is _defining(type(algo), "local_update_batch")


def model_supports(model) -> bool:
    """The linear model under cross-entropy: the batched closed form applies."""
    from ..models.linear import LinearModel, _B, _W
    return (isinstance(model.module, LinearModel) and model.loss.name == "cross_entropy"
            and model.layout.names == (_W, _B))


def data_supports(datas) -> bool:
    """Plain samples (no augmentation or lazily built windows in ``train_batch``)."""
    return all(type(d).train_batch is ClientData.train_batch and type(d).iter_train is ClientData.iter_train
               for d in datas)


def supported(algo, model) -> str | None:
    """None when the batched path applies, else why not (for ``train.batched: on``)."""
    if not algorithm_supports(algo):
        return f"algorithm {algo.name} has no batched local update"
    if not model_supports(model):
        return "the batched path needs the linear model with cross-entropy"
    return None


def expand_starts(starts: torch.Tensor, c: int) -> torch.Tensor:
    """``[C, K, P]`` own copy of the clients' start stacks (``starts``: one ``[K, P]`` for all, or ``[C, K, P]``)."""
    return starts.expand(c, *starts.shape).clone() if starts.dim() == 2 else starts.clone()


# -- the batch plan ------------------------------------------------------------------
@dataclass
class Plan:
    order: np.ndarray        # [C] position in the sorted stack -> index into sel
    steps: np.ndarray        # [C] steps of each sorted client
    active: np.ndarray       # [S] clients still training at step s (a prefix)
    bs: torch.Tensor         # [C, S] int64 batch size of step s (0 past the end)
    idx: torch.Tensor        # [C, S, B] int32 block rows of step s (padding: row 0)
    width: np.ndarray        # [C, S] numpy copy of bs


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last (small: the classes) dimension; faster than the kernel there."""
    e = z - z.amax(-1, keepdim=True)
    return e - e.exp().sum(-1, keepdim=True).log_()


def _draws(n: int, cfg, gen: torch.Generator) -> tuple[torch.Tensor, list[int]]:
    """The sample order and batch sizes ``sgd.batches(n, cfg, gen)`` yields: its randperms,
    drawn in the same order from ``gen``, without a generator round-trip per batch."""
    if n == 0:
        return torch.zeros(0, dtype=torch.int64), []
    b = cfg.batch_size
    epoch = [b] * (n // b) + ([n % b] if n % b else [])
    if cfg.local_steps:
        reps = -(-cfg.local_steps // len(epoch))
        sizes = (epoch * reps)[:cfg.local_steps]
    else:
        reps, sizes = cfg.local_epochs, epoch * cfg.local_epochs
    perms = torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])
    return perms[:sum(sizes)], sizes


def plan_batches(n: np.ndarray, off: np.ndarray, cfg, gens) -> Plan:
    """Each client's batches exactly as ``sgd.batches`` draws them, as padded block rows."""
    c = len(n)
    draws = [_draws(int(n[j]), cfg, gens[j]) for j in range(c)]
    steps = np.array([len(d[1]) for d in draws], dtype=np.int64)
    order = np.lexsort((-np.asarray(n), -steps)) if c else np.zeros(0, dtype=np.int64)
    s_max = int(steps.max()) if c else 0
    width = np.zeros((c, s_max), dtype=np.int64)
    b_max = 1
    flat = []
    for p, j in enumerate(order):
        perm, sz = draws[j]
        if sz:
            width[p, :len(sz)] = sz
            b_max = max(b_max, sz[0])
            flat.append(perm + int(off[j]))
    idx = torch.zeros((c, s_max, b_max), dtype=torch.int32)
    if flat:
        mask = torch.arange(b_max)[None, None, :] < torch.from_numpy(width)[..., None]
        idx[mask] = torch.cat(flat).to(torch.int32)
    active = (steps[order][None, :] > np.arange(s_max)[:, None]).sum(1) if c else np.zeros(0, dtype=np.int64)
    return Plan(order, steps[order], active, torch.from_numpy(width), idx, width)


# -- the batched closed-form gradient -------------------------------------------------------
def _loss_grad(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor,
               n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per client a: ``sum_k sum_i scale_aik CE(z_aik, y_ai)`` ``[A]`` and its gradient ``[A, K, P]``.

    theta ``[A, K, P]`` (weight ``[C, d]`` then bias ``[C]``), x ``[A, w, d]``, y ``[A, w]``,
    scale ``[A, w, K|1]`` (weights / batch size; 0 on padding). The batched form of
    ``LinearModel.loss_grad_stack``: the K components' C classes are one ``K C``-column
    matmul per client (``bmm``), so nothing is broadcast or copied per component.
    """
    a, k, p = theta.shape
    w, d = x.shape[1], x.shape[2]
    kc = k * n_classes
    wt = theta[..., :n_classes * d].reshape(a, kc, d)                           # [A, K C, d]
    bias = theta[..., n_classes * d:].reshape(a, 1, kc)
    z = torch.baddbmm(bias, x, wt.transpose(1, 2)).view(a, w, k, n_classes)    # [A, w, K, C]
    logp = _log_softmax(z)
    yi = y[:, :, None, None].expand(a, w, k, 1)
    loss = -logp.gather(-1, yi).squeeze(-1)                                       # [A, w, K]
    dz = logp.exp_()
    dz.scatter_(-1, yi, dz.gather(-1, yi) - 1.0)
    dz.mul_(scale[..., None])
    gw = torch.bmm(dz.view(a, w, kc).transpose(1, 2), x)                         # [A, K C, d]
    grad = torch.cat([gw.view(a, k, n_classes * d), dz.sum(1)], dim=2)
    return (loss * scale).sum((1, 2)), grad


def batched_sgd(model, theta: torch.Tensor, block: ClientBlock, sel: np.ndarray, cfg, gens, lr: float,
                weights: torch.Tensor | None = None, mu: float = 0.0,
                anchor: torch.Tensor | None = None) -> np.ndarray:
    """``local_sgd`` for C clients at once; trains ``theta [C, K, P]`` in place.

    block/sel: the clients' samples (client j = block client ``sel[j]``); gens: their
    streams (consumed exactly as ``local_sgd`` consumes them); weights: ``[N_block, K]``
    per-sample weights over the block rows (FedEM's responsibilities) or None;
    mu/anchor: FedProx's proximal gradient ``mu (theta - anchor)`` with anchor ``[C, K, P]``
    or ``[K, P]`` (mu == 0: not evaluated). Returns each client's mean minibatch objective.
    """
    n, off = block.n[sel], block.off[sel]
    plan = plan_batches(n, off, cfg, gens)
    c = len(sel)
    order_t = torch.from_numpy(plan.order)
    th = theta[order_t] if c else theta                          # sorted copy
    anc = None
    if mu != 0.0:
        anc = anchor[order_t] if anchor.dim() == 3 else anchor
    buf = torch.zeros_like(th) if cfg.momentum > 0 else None
    total = torch.zeros(c, dtype=torch.float64)
    x_all, y_all = block.x.flatten(1), block.y
    ncls = model.module.linear.out_features
    for s, a_s in enumerate(plan.active):
        for a0 in range(0, int(a_s), CHUNK_CLIENTS):
            a1 = min(int(a_s), a0 + CHUNK_CLIENTS)
            w = int(plan.width[a0:a1, s].max())
            rows = plan.idx[a0:a1, s, :w].reshape(-1).long()
            xb = x_all.index_select(0, rows).view(a1 - a0, w, -1)
            yb = y_all.index_select(0, rows).view(a1 - a0, w)
            b = plan.bs[a0:a1, s]
            valid = torch.arange(w)[None, :] < b[:, None]
            if weights is None:
                scale = torch.where(valid, 1.0 / b[:, None].to(xb.dtype), 0.0)[:, :, None]
            else:
                wq = weights.index_select(0, rows).view(a1 - a0, w, -1)     # [A, w, K]
                scale = torch.where(valid[:, :, None], wq / b[:, None, None].to(wq.dtype), 0.0)
            t = th[a0:a1]
            obj, grad = _loss_grad(t, xb, yb, scale, ncls)
            if cfg.weight_decay:
                grad.add_(t, alpha=cfg.weight_decay)
            if anc is not None:
                grad.add_((t - (anc[a0:a1] if anc.dim() == 3 else anc)).mul_(mu))
            if buf is not None:
                grad = buf[a0:a1].mul_(cfg.momentum).add_(grad)
            t.add_(grad, alpha=-lr)
            total[a0:a1] += obj.double()
    out = total / torch.from_numpy(np.maximum(plan.steps, 1)).double()
    if c:
        theta[order_t] = th
    res = np.empty(c)
    res[plan.order] = out.numpy()
    return res


# -- losses of every sample (E-step) ---------------------------------------------------------
def rows_of(block: ClientBlock, sel: np.ndarray) -> np.ndarray | None:
    """Block rows of the selected clients in order (None: all rows, in order)."""
    if len(sel) == block.n_clients and np.array_equal(sel, np.arange(block.n_clients)):
        return None
    n, off = block.n[sel], block.off[sel]
    total = int(n.sum())
    start = np.repeat(off - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
    return start + np.arange(total)


def _sample_losses(model, stack: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample losses ``[B, K]`` of the K rows of ``stack``: one GEMM for the linear model."""
    if not model_supports(model):
        return model.per_sample_loss(stack, x, y).T
    k = stack.shape[0]
    ncls = model.module.linear.out_features
    x = x.flatten(1)
    d = x.shape[1]
    z = torch.addmm(stack[:, ncls * d:].reshape(k * ncls), x, stack[:, :ncls * d].reshape(k * ncls, d).T)
    logp = _log_softmax(z.view(-1, k, ncls))
    return -logp.gather(-1, y[:, None, None].expand(-1, k, 1)).squeeze(-1)


def block_losses(model, stack: torch.Tensor, block: ClientBlock, sel: np.ndarray) -> tuple[torch.Tensor, np.ndarray | None]:
    """Per-sample losses ``[N_sel, K]`` of one stack on the selected clients' samples (block order).

    Returns the losses and the block rows they belong to (None: all rows, in order).
    """
    rows = rows_of(block, sel)
    n_rows = block.x.shape[0] if rows is None else len(rows)
    out = torch.empty(n_rows, stack.shape[0], dtype=stack.dtype)
    with torch.no_grad():
        for r0 in range(0, n_rows, _ROWS):
            r1 = min(n_rows, r0 + _ROWS)
            if rows is None:
                x, y = block.x[r0:r1], block.y[r0:r1]
            else:
                rr = torch.from_numpy(rows[r0:r1])
                x, y = block.x.index_select(0, rr), block.y.index_select(0, rr)
            out[r0:r1] = _sample_losses(model, stack, x, y)
    return out, rows


def segment_mean(values: torch.Tensor, counts: np.ndarray) -> torch.Tensor:
    """``[N, K]`` values in consecutive segments of ``counts`` rows -> per-segment means ``[C, K]``
    (summed in float64, rounded once)."""
    c = len(counts)
    seg = torch.from_numpy(np.repeat(np.arange(c), counts))
    acc = torch.zeros(c, values.shape[1], dtype=torch.float64)
    acc.index_add_(0, seg, values.double())
    return (acc / torch.from_numpy(np.maximum(counts, 1)).double()[:, None]).to(values.dtype)
