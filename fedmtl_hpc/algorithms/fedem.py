"""FedEM (Marfoq et al., NeurIPS 2021, Alg. 1): federated EM over M shared components.

Per participating client t, with private mixture weights pi_t:
  E-step  q_t(m|i) = softmax_m(log pi_tm - l(theta_m; x_i, y_i))      (eq. 9, log space)
  pi_tm   = mean_i q_t(m|i)                                            (eq. 10)
  M-step  local SGD on sum_i q_t(m|i) l(theta_m; x_i, y_i), every m    (eq. 11)
The engine then averages each component with weights n_t / n. Prediction is
the pi-weighted mixture of the components' softmax outputs.
"""

from __future__ import annotations

import torch

from .base import Algorithm, LocalResult

__all__ = ["FedEM", "e_step", "mixture_nll", "fit_mixture_weights"]


def e_step(log_pi: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Responsibilities ``q [M, n]`` from ``log_pi [M]`` and per-sample losses ``[M, n]``."""
    return torch.softmax(log_pi[:, None] - losses, dim=0)


def mixture_nll(log_pi: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the mixture: -mean_i log sum_m pi_m exp(-l_mi)."""
    return -torch.logsumexp(log_pi[:, None] - losses, dim=0).mean()


def fit_mixture_weights(pi: torch.Tensor, losses: torch.Tensor, iters: int, tol: float = 1e-10) -> torch.Tensor:
    """EM on pi alone with the components fixed (adaptation of an unseen client)."""
    for _ in range(iters):
        new = e_step(torch.log(pi), losses).mean(dim=1)
        done = float((new - pi).abs().max()) < tol
        pi = new
        if done:
            break
    return pi


class FedEM(Algorithm):
    name = "fedem"

    @property
    def n_shared(self) -> int:
        return self.params.n_components

    def state_shapes(self):
        return {"pi": (self.n_shared,)}

    def init_state(self, cid):
        return {"pi": torch.full((self.n_shared,), 1.0 / self.n_shared, device=self.device)}

    def local_update(self, data, start, state, gen):
        losses = self.model.losses(start, data.iter_train())
        log_pi = torch.log(state["pi"])
        nll = float(mixture_nll(log_pi, losses))
        q = e_step(log_pi, losses)
        state["pi"].copy_(q.mean(dim=1))
        theta = start.clone()
        self.sgd(theta, data, gen, weights=q)
        return LocalResult(theta, nll)

    def local_update_batch(self, block, sel, starts, states, gens):
        """``local_update`` for the clients ``sel`` of ``block`` at once: the E-step per sample, folded
        into batched SGD's first epoch (``batched.EStep``: computed on the rows each task gathers,
        at step 0 from the logits that step uses); where local steps leave samples out of the first
        epoch, one loss pass over the samples first (``[M, N]``) and per-client means by segment."""
        from .batched import BatchResult, EStep, batched_sgd, block_losses, expand_starts, rows_of
        n, log_pi = block.n[sel], torch.log(states["pi"])
        theta = expand_starts(starts, len(sel))
        if EStep.covers(n, self.cfg.train):
            em = EStep(log_pi, starts)
            batched_sgd(self.model, theta, block, sel, self.cfg.train, gens, self.lr, estep=em)
            states["pi"].copy_(em.pi)
            return BatchResult(theta, em.nll.numpy())
        if starts.dim() == 2:
            losses, rows = block_losses(self.model, starts, block, sel)
        else:                                   # own stacks (gossip): one loss pass per client
            losses = torch.cat([self.model.losses(starts[j], [(block.x[o:o + m], block.y[o:o + m])])
                                for j, (o, m) in enumerate(zip(block.off[sel], n))], dim=1) if len(sel) else \
                torch.zeros(self.n_shared, 0)
            rows = rows_of(block, sel)
        nll, q, pi = _batched_e_step(log_pi, losses, n)
        states["pi"].copy_(pi)
        if rows is not None:                    # over the block's rows, as batched_sgd indexes them
            q = torch.zeros(q.shape[0], block.x.shape[0]).index_copy_(1, torch.from_numpy(rows), q)
        batched_sgd(self.model, theta, block, sel, self.cfg.train, gens, self.lr, weights=q)
        return BatchResult(theta, nll.double().numpy())

    def predict_proba(self, x, shared, state):
        return torch.einsum("m,mbc->bc", state["pi"], self.model.proba(shared, x))

    def predict_batch(self, x, shared, states):
        """``predict_proba`` of A clients on ``x [A, w, d]``: ``[A, w, C]``."""
        from .batched import stack_proba
        return torch.einsum("am,amwc->awc", states["pi"], stack_proba(self.model, shared, x))

    def adapt(self, data, shared, state):
        losses = self.model.losses(shared, data.iter_train())
        state["pi"].copy_(fit_mixture_weights(state["pi"].clone(), losses, self.params.adapt_iters))

    def adapt_batch(self, block, sel, shared, states):
        """``adapt`` of the clients ``sel`` of ``block`` at once: one loss pass, then EM on every
        client's pi together, each client stopping at its own iteration as ``fit_mixture_weights``."""
        from .batched import block_losses
        n = block.n[sel]
        losses = block_losses(self.model, shared, block, sel)[0]
        pi = states["pi"].clone()
        going = torch.ones(len(sel), dtype=torch.bool)
        for _ in range(self.params.adapt_iters):
            new = _batched_e_step(torch.log(pi), losses, n)[2]
            done = (new - pi).abs().amax(dim=1) < 1e-10
            pi = torch.where(going[:, None], new, pi)
            going &= ~done
            if not bool(going.any()):
                break
        states["pi"].copy_(pi)


def _batched_e_step(log_pi: torch.Tensor, losses: torch.Tensor, n) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``e_step`` / ``mixture_nll`` of C clients whose samples are consecutive columns of ``losses [M, N]``
    (``n [C]`` each, ``log_pi [C, M]``): nll ``[C]``, q ``[M, N]``, the new pi ``[C, M]``.

    Samples run along the last dimension (the reductions over the M components are element-wise over
    whole vectors), padded to a multiple of ``batched.ALIGN`` so exp/log never take torch's scalar
    tail loop: a sample's result depends on the sample alone, not on where it sits (rank-count invariance).
    """
    from .batched import ALIGN, segment_mean
    m = losses.shape[1]
    a = torch.zeros(losses.shape[0], -(-m // ALIGN) * ALIGN, dtype=losses.dtype)
    torch.sub(log_pi.T.repeat_interleave(torch.from_numpy(n), dim=1), losses, out=a[:, :m])
    nll = -segment_mean(torch.logsumexp(a, dim=0)[None, :m], n)[:, 0]
    q = torch.softmax(a, dim=0)[:, :m].contiguous()     # batched_sgd gathers from it: no strided copies
    return nll, q, segment_mean(q, n)
