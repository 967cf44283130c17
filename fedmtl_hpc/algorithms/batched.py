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
           "batched_sgd", "EStep", "block_losses", "rows_of", "segment_mean", "expand_starts", "ROWS", "ALIGN", "padded",
           "stack_proba", "correct_counts", "EVAL_CLIENTS"]

EVAL_CLIENTS = 128       # clients per batched evaluation (bounds the test tensor: 128 x n_test x d floats)
_ROWS = 1 << 16          # samples per chunk of the batched E-step / loss pass (a multiple of ALIGN)


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


_PAIRS = (("local_update", "local_update_batch"), ("predict_proba", "predict_batch"),
          ("personalize", "personalize_batch"), ("adapt", "adapt_batch"))


def algorithm_supports(algo) -> bool:
    """Each per-client phase (training, prediction, personalization, adaptation) is defined in the
    same class as its batched twin, so a subclass overriding one falls back to the reference loop."""
    for one, many in _PAIRS:
        owner = _defining(type(algo), one)
        if owner is None or owner is not _defining(type(algo), many):
            return False
    return True


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
ROWS = 4096     # samples per gathered minibatch tensor (A = ROWS // width clients): 2.4 MB at d = 150, about L2
ALIGN = 32      # widths and row counts are multiples of this: shapes depend on a client alone, and every
                # element-wise op runs on whole SIMD vectors (torch's scalar tail loop rounds exp/log differently)


def padded(b: np.ndarray | int, batch_size: int):
    """Width a minibatch of b samples is padded to: a function of b alone, never of the other clients
    that share its chunk or rank (rank-count invariance of the batched path)."""
    cap = -(-batch_size // ALIGN) * ALIGN
    return np.minimum(-(-np.asarray(b) // ALIGN) * ALIGN, cap)


@dataclass
class Task:
    """One gathered computation: step ``s`` of the clients at sorted positions ``ids``, each batch
    padded to ``w`` rows (block rows ``rows``, each batch's in increasing order, padding repeats its
    last row at weight 0)."""

    s: int
    ids: torch.Tensor        # [A] int64 positions in the sorted stack
    w: int
    rows: torch.Tensor       # [A * w] int64 block rows
    inv: torch.Tensor        # [A, 1, 1, w] float32: 1 / batch size on the batch's rows, 0 on padding
    once: torch.Tensor       # [A, 1, 1, w] float32: 1 on rows in their first epoch (each sample once), else 0


@dataclass
class Plan:
    order: np.ndarray        # [C] position in the sorted stack -> index into sel
    steps: np.ndarray        # [C] steps of each sorted client
    active: np.ndarray       # [S] clients still training at step s (a prefix)
    seq: torch.Tensor        # every sorted client's draws (its randperms, concatenated) as block rows
    seq_off: np.ndarray      # [C] where sorted client p's draws start in seq
    n: np.ndarray            # [C] train samples of each sorted client
    batch_size: int
    tasks: list              # [Task], step by step

    def batch(self, p: int, s: int) -> torch.Tensor:
        """Block rows of step s of sorted client p (what ``sgd.batches`` yields, + its offset)."""
        n, b = int(self.n[p]), self.batch_size
        per = -(-n // b)
        k = s % per
        o = int(self.seq_off[p]) + (s // per) * n + k * b
        return self.seq[o:o + min(b, n - k * b)]


def _perms(n: np.ndarray, reps: np.ndarray, gens) -> list[torch.Tensor]:
    """Each client's ``reps`` randperms, drawn in order from its stream as ``sgd.batches`` draws them.
    ``gens``: Generators, or ``rng.TorchStreams`` (one Generator reseeded per client: no set-up each)."""
    out = []
    seeds = getattr(gens, "seeds", None)
    if seeds is None:
        for j, (m, r) in enumerate(zip(n.tolist(), reps.tolist())):
            out.extend(torch.randperm(m, generator=gens[j]) for _ in range(r))
        return out
    g, randperm = torch.Generator(), torch.randperm
    for sd, m, r in zip(seeds.tolist(), n.tolist(), reps.tolist()):
        if r:
            g.manual_seed(sd)
            out.append(randperm(m, generator=g))
            for _ in range(r - 1):
                out.append(randperm(m, generator=g))
    return out


def plan_batches(n: np.ndarray, off: np.ndarray, cfg, gens, rows: int | None = None) -> Plan:
    """Each client's batches exactly as ``sgd.batches`` draws them, as padded block rows, and the
    tasks that run them: per step, clients grouped by padded width, ``rows`` samples a task."""
    rows = ROWS if rows is None else rows
    n = np.asarray(n, dtype=np.int64)
    c, b = len(n), cfg.batch_size
    per = -(-n // b)                                      # steps per epoch
    if cfg.local_steps:
        steps = np.where(n > 0, cfg.local_steps, 0)
        reps = -(-steps // np.maximum(per, 1))
    else:
        steps, reps = cfg.local_epochs * per, np.where(n > 0, cfg.local_epochs, 0)
    order = np.lexsort((-n, -steps)) if c else np.zeros(0, dtype=np.int64)
    perms = _perms(n[order], reps[order], _Reordered(gens, order))
    ns, st = n[order], steps[order]
    lens = ns * reps[order]
    seq_off = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if c else lens
    seq = torch.cat(perms) if perms else torch.zeros(0, dtype=torch.int64)
    seq += torch.from_numpy(np.repeat(off[order], lens))   # local sample -> block row
    seq_np = seq.numpy()
    s_max = int(st.max()) if c else 0
    active = (st[None, :] > np.arange(s_max)[:, None]).sum(1) if c else np.zeros(0, dtype=np.int64)
    tasks, ar = [], np.arange(-(-b // ALIGN) * ALIGN)
    for s, a_s in enumerate(active.tolist()):
        nn, pp = ns[:a_s], per[order][:a_s]
        k = s % pp
        size = np.minimum(b, nn - k * b)
        start = seq_off[:a_s] + (s // pp) * nn + k * b
        wp = padded(size, b)
        by_w = np.argsort(-wp, kind="stable")
        cuts = np.flatnonzero(np.diff(wp[by_w])) + 1
        for grp in np.split(by_w, cuts):
            w = int(wp[grp[0]])
            step = max(1, rows // w)
            for g0 in range(0, len(grp), step):
                ids = grp[g0:g0 + step]
                sz = size[ids][:, None]
                pad = ar[None, :w] >= sz
                got = seq_np[start[ids][:, None] + np.minimum(ar[None, :w], sz - 1)]
                # each batch's rows in increasing order (padding: its last row again): the gather then
                # streams through memory (half the time of the drawn order); a batch's sum is order-free
                # up to float rounding
                got = np.where(pad, got.max(1, keepdims=True), got)
                got.sort(axis=1)
                inv = np.where(pad, np.float32(0), 1.0 / sz.astype(np.float32)).astype(np.float32)
                once = (~pad & (s < pp[ids])[:, None]).astype(np.float32)
                tasks.append(Task(s, torch.from_numpy(ids), w, torch.from_numpy(got.reshape(-1)),
                                  torch.from_numpy(inv).view(len(ids), 1, 1, w),
                                  torch.from_numpy(once).view(len(ids), 1, 1, w)))
    return Plan(order, st, active, seq, seq_off, ns, b, tasks)


class _Reordered:
    """``gens`` (a list or ``rng.TorchStreams``) seen in the sorted order, without making Generators."""

    def __init__(self, gens, order: np.ndarray):
        self.gens, self.order = gens, order
        seeds = getattr(gens, "seeds", None)
        if seeds is not None:
            self.seeds = seeds[order]

    def __getitem__(self, j: int):
        return self.gens[int(self.order[j])]


# -- the batched closed-form gradient -------------------------------------------------------
def _log_probs(t: torch.Tensor, x: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Log-probabilities ``[A, K, C, w]`` of the stacks ``t [A, K, P]`` (weight ``[C, d]`` then bias
    ``[C]``) on ``x [A, w, d]``. Samples run along the last dimension: the softmax over the few classes
    is then element-wise over whole vectors of samples, and the matmul is a plain ``baddbmm``."""
    a, k, _ = t.shape
    d, kc = x.shape[2], k * n_classes
    z = torch.baddbmm(t[..., n_classes * d:].reshape(a, kc, 1), t[..., :n_classes * d].reshape(a, kc, d),
                      x.transpose(1, 2))
    return torch.log_softmax(z.view(a, k, n_classes, -1), dim=2)


def _loss_grad(logp: torch.Tensor, ll: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per client a: ``sum_k sum_i scale_aki CE_aki`` ``[A]`` and its gradient (weight part ``[A, K, C d]``,
    bias part ``[A, K, C]``) from the
    log-probabilities ``logp [A, K, C, w]`` (consumed) and ``ll = logp`` at the labels ``[A, K, 1, w]``;
    y ``[A, 1, 1, w]``, scale ``[A, K|1, 1, w]`` (weights / batch size; 0 on padding)."""
    a, k, ncls, w = logp.shape
    dz = logp.exp_()
    dz.sub_(torch.arange(ncls).view(1, 1, ncls, 1).eq(y).to(dz.dtype))            # softmax - one-hot
    dz.mul_(scale)
    gw = torch.bmm(dz.view(a, k * ncls, w), x)                                     # [A, K C, d]
    return -(ll * scale).sum((1, 2, 3)), gw.view(a, k, -1), dz.sum(3)


@dataclass
class EStep:
    """FedEM's E-step folded into ``batched_sgd``: in, the clients' ``log_pi [C, K]`` and the stacks
    the responsibilities are taken at (``[K, P]`` or ``[C, K, P]``: the start of their local work);
    out, ``pi [C, K]`` (mean responsibilities) and ``nll [C]`` (mixture NLL), over every sample.

    Each sample's responsibilities depend on that sample alone, so they are computed in the task that
    trains on it, from the rows already gathered (at step 0 from the very logits that step uses)."""

    log_pi: torch.Tensor
    start: torch.Tensor
    pi: torch.Tensor | None = None
    nll: torch.Tensor | None = None

    @staticmethod
    def covers(n: np.ndarray, cfg) -> bool:
        """Every sample is trained on in the first epoch (else the E-step runs as a pass of its own)."""
        return not cfg.local_steps or not len(n) or cfg.local_steps >= int(-(-n.max() // cfg.batch_size))


def _e_step(ll0: torch.Tensor, log_pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Responsibilities ``q [A, K, 1, w]`` and ``log sum_k pi_k p_k(y|x)`` ``[A, 1, 1, w]`` from the
    start's log-likelihoods ``ll0 [A, K, 1, w]`` and ``log_pi [A, K]``."""
    s = ll0 + log_pi[:, :, None, None]
    lse = torch.logsumexp(s, dim=1, keepdim=True)
    return s.sub_(lse).exp_(), lse


def batched_sgd(model, theta: torch.Tensor, block: ClientBlock, sel: np.ndarray, cfg, gens, lr: float,
                weights: torch.Tensor | None = None, mu: float = 0.0,
                anchor: torch.Tensor | None = None, estep: EStep | None = None) -> np.ndarray:
    """``local_sgd`` for C clients at once; trains ``theta [C, K, P]`` in place.

    block/sel: the clients' samples (client j = block client ``sel[j]``); gens: their
    streams (consumed exactly as ``local_sgd`` consumes them; ``rng.TorchStreams`` or Generators);
    weights: ``[K, N_block]`` per-sample weights over the block rows or None; estep: FedEM's
    responsibilities as the weights, computed on the way (``EStep.covers`` must hold; fills
    ``estep.pi``/``estep.nll``); mu/anchor: FedProx's proximal gradient ``mu (theta - anchor)`` with
    anchor ``[C, K, P]`` or ``[K, P]`` (mu == 0: not evaluated). Returns each client's mean
    minibatch objective.
    """
    n, off = block.n[sel], block.off[sel]
    plan = plan_batches(n, off, cfg, gens)
    c, k = len(sel), theta.shape[1]
    order_t = torch.from_numpy(plan.order)
    th = theta[order_t] if c else theta                          # sorted copy
    anc = None
    if mu != 0.0:
        anc = anchor[order_t] if anchor.dim() == 3 else anchor
    buf = torch.zeros_like(th) if cfg.momentum > 0 else None
    plain = not cfg.weight_decay and anc is None and buf is None
    total = torch.zeros(c, dtype=torch.float64)
    if estep is not None:
        log_pi = estep.log_pi[order_t]
        start = estep.start[order_t] if estep.start.dim() == 3 else estep.start
        pi_s, nll_s = torch.zeros(c, k, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    x_all, y_all = block.x.flatten(1), block.y
    ncls = model.module.linear.out_features
    most = max((len(t.rows) for t in plan.tasks), default=0)
    xbuf = torch.empty(most, x_all.shape[1], dtype=x_all.dtype)     # reused: no page faults per task
    for task in plan.tasks:
        ids, w, rows = task.ids, task.w, task.rows
        a = len(ids)
        xb = torch.index_select(x_all, 0, rows, out=xbuf[:a * w]).view(a, w, -1)
        yb = y_all.index_select(0, rows).view(a, 1, 1, w)
        t = th.index_select(0, ids)
        logp = _log_probs(t, xb, ncls)
        ll = logp.gather(2, yb.expand(a, k, 1, w))
        if estep is not None:
            if task.s == 0:      # nothing trained yet: the start's log-likelihoods are these
                ll0 = ll
            else:
                t0 = start.index_select(0, ids) if start.dim() == 3 else start.expand(a, *start.shape)
                ll0 = _log_probs(t0, xb, ncls).gather(2, yb.expand(a, k, 1, w))
            q, lse = _e_step(ll0, log_pi.index_select(0, ids))
            pi_s.index_add_(0, ids, (q * task.once).sum((2, 3), dtype=torch.float64))       # each sample once
            nll_s.index_add_(0, ids, (lse * task.once).sum((1, 2, 3), dtype=torch.float64).neg_())
            scale = q.mul_(task.inv)
        elif weights is not None:
            scale = weights.index_select(1, rows).view(-1, a, 1, w).transpose(0, 1).mul_(task.inv)   # [A, K, 1, w]
        else:
            scale = task.inv
        obj, gw, gb = _loss_grad(logp, ll, xb, yb, scale)
        if not plain:
            grad = torch.cat([gw, gb], dim=2)
            if cfg.weight_decay:
                grad.add_(t, alpha=cfg.weight_decay)
            if anc is not None:
                grad.add_((t - (anc.index_select(0, ids) if anc.dim() == 3 else anc)).mul_(mu))
            if buf is not None:
                grad = buf.index_select(0, ids).mul_(cfg.momentum).add_(grad)
                buf.index_copy_(0, ids, grad)
            t.add_(grad, alpha=-lr)
        else:                # plain SGD: the two parts in place, no [A, K, P] gradient assembled
            t[..., :gw.shape[2]].add_(gw, alpha=-lr)
            t[..., gw.shape[2]:].add_(gb, alpha=-lr)
        th.index_copy_(0, ids, t)
        total.index_add_(0, ids, obj.double())
    out = total / torch.from_numpy(np.maximum(plan.steps, 1)).double()
    if c:
        theta[order_t] = th
    if estep is not None:
        cnt = torch.from_numpy(np.maximum(plan.n, 1)).double()
        back = torch.from_numpy(np.argsort(plan.order))              # sorted position of client j
        estep.pi = (pi_s / cnt[:, None]).to(estep.log_pi.dtype)[back]
        estep.nll = (nll_s / cnt)[back]
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
    """Per-sample losses ``[K, B]`` of the K rows of ``stack``: one GEMM for the linear model."""
    if not model_supports(model):
        return model.per_sample_loss(stack, x, y)
    k = stack.shape[0]
    ncls = model.module.linear.out_features
    x = x.flatten(1)
    d = x.shape[1]
    # [B, K C] is MKL's fast orientation for this skinny product; samples then go last for the softmax
    z = torch.addmm(stack[:, ncls * d:].reshape(k * ncls), x, stack[:, :ncls * d].reshape(k * ncls, d).T)
    logp = torch.log_softmax(z.T.contiguous().view(k, ncls, -1), dim=1)
    return logp.gather(1, y.view(1, 1, -1).expand(k, 1, -1)).squeeze(1).neg_()


def block_losses(model, stack: torch.Tensor, block: ClientBlock, sel: np.ndarray) -> tuple[torch.Tensor, np.ndarray | None]:
    """Per-sample losses ``[K, N_sel]`` of one stack on the selected clients' samples (block order).

    Returns the losses and the block rows they belong to (None: all rows, in order).
    """
    rows = rows_of(block, sel)
    n_rows = block.x.shape[0] if rows is None else len(rows)
    out = torch.empty(stack.shape[0], n_rows, dtype=stack.dtype)
    with torch.no_grad():
        for r0 in range(0, n_rows, _ROWS):
            r1 = min(n_rows, r0 + _ROWS)
            m = r1 - r0
            # always a fresh (aligned) copy: MKL's rounding depends on the matrix's start address, and a
            # view starts wherever the rank's block puts the client; padded (row 0) to whole vectors, >= 2 rows
            rr = np.zeros(-(-m // ALIGN) * ALIGN, dtype=np.int64)
            rr[:m] = np.arange(r0, r1) if rows is None else rows[r0:r1]
            rr = torch.from_numpy(rr)
            x, y = block.x.index_select(0, rr), block.y.index_select(0, rr)
            out[:, r0:r1] = _sample_losses(model, stack, x, y)[:, :m]
    return out, rows


def segment_mean(values: torch.Tensor, counts: np.ndarray) -> torch.Tensor:
    """``[K, N]`` values in consecutive segments of ``counts`` columns -> per-segment means ``[C, K]``
    (summed in float64, rounded once)."""
    c = len(counts)
    seg = torch.from_numpy(np.repeat(np.arange(c), counts))
    acc = torch.zeros(values.shape[0], c, dtype=torch.float64)
    acc.index_add_(1, seg, values.double())
    return (acc / torch.from_numpy(np.maximum(counts, 1)).double()).T.to(values.dtype)


# -- evaluation ------------------------------------------------------------------------------------
def stack_proba(model, stack: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Predictions ``[A, K, w, C]`` of the K rows of ``stack`` (``[K, P]`` shared by all A clients, one
    GEMM; or ``[A, K, P]`` per client, one batched matmul) on ``x [A, w, d]``."""
    a, w = x.shape[0], x.shape[1]
    ncls = model.module.linear.out_features
    x = x.flatten(2)
    d = x.shape[2]
    k = stack.shape[-2]
    with torch.no_grad():
        if stack.dim() == 2:
            z = torch.addmm(stack[:, ncls * d:].reshape(k * ncls), x.reshape(a * w, d),
                            stack[:, :ncls * d].reshape(k * ncls, d).T)
        else:
            z = torch.baddbmm(stack[..., ncls * d:].reshape(a, 1, k * ncls), x,
                              stack[..., :ncls * d].reshape(a, k * ncls, d).transpose(1, 2))
        return model.loss.predict(z.view(a, w, k, ncls).transpose(1, 2))


def correct_counts(algo, datas: list[ClientData], shared: torch.Tensor, states: dict[str, torch.Tensor],
                   gens, adapt: bool = False) -> np.ndarray:
    """Correct test predictions ``[A]`` of A clients as one computation: ``adapt`` (unseen clients),
    ``personalize`` and ``predict_proba`` of the algorithm, batched (``*_batch``), then the argmax.

    ``shared``: ``[K, P]`` or ``[A, K, P]``; ``states``: the clients' rows ``[A, ...]`` (adapted in place);
    ``gens``: a callable returning the clients' EVAL streams (drawn only where the algorithm
    personalizes). Test samples are padded to a common width (padding is never counted); a
    prediction differs from the loop's only where two classes' probabilities tie to float32 rounding.
    """
    from .base import Algorithm
    a = len(datas)
    tunes = type(algo).personalize_batch is not Algorithm.personalize_batch
    if adapt or tunes:
        block, sel = ClientBlock.pack(datas), np.arange(a)
        if adapt:
            algo.adapt_batch(block, sel, shared, states)
        if tunes:
            shared, states = algo.personalize_batch(block, sel, shared, states, gens())
    m = np.array([d.n_test for d in datas], dtype=np.int64)
    w = max(ALIGN, int(-(-m.max() // ALIGN) * ALIGN)) if a else ALIGN
    x = torch.zeros((a, w, *datas[0].x_test.shape[1:]), dtype=datas[0].x_test.dtype) if a else None
    y = torch.full((a, w), -1, dtype=torch.int64)          # -1: padding, never a class
    for j, d in enumerate(datas):
        x[j, :m[j]] = d.x_test
        y[j, :m[j]] = d.y_test
    if not a:
        return np.zeros(0)
    pred = algo.predict_batch(x, shared, states).argmax(dim=-1)
    return (pred == y).sum(dim=1).double().numpy()
