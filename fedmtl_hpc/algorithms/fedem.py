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
        """``local_update`` for the clients ``sel`` of ``block`` at once: one loss pass over their
        samples (``[N, M]``), the E-step per sample, per-client means by segment, then batched SGD."""
        from .batched import BatchResult, batched_sgd, block_losses, expand_starts, rows_of, segment_mean
        n = block.n[sel]
        if starts.dim() == 2:
            losses, rows = block_losses(self.model, starts, block, sel)
        else:                                   # own stacks (gossip): one loss pass per client
            losses = torch.cat([self.model.losses(starts[j], [(block.x[o:o + m], block.y[o:o + m])]).T
                                for j, (o, m) in enumerate(zip(block.off[sel], n))]) if len(sel) else \
                torch.zeros(0, self.n_shared)
            rows = rows_of(block, sel)
        log_pi = torch.log(states["pi"])                                            # [C, M]
        a = log_pi.repeat_interleave(torch.from_numpy(n), dim=0) - losses            # [N_sel, M]
        nll = -segment_mean(torch.logsumexp(a, dim=1)[:, None], n)[:, 0]
        q = torch.softmax(a, dim=1)
        states["pi"].copy_(segment_mean(q, n))
        weights = q if rows is None else torch.zeros(block.x.shape[0], q.shape[1]).index_copy_(
            0, torch.from_numpy(rows), q)
        theta = expand_starts(starts, len(sel))
        batched_sgd(self.model, theta, block, sel, self.cfg.train, gens, self.lr, weights=weights)
        return BatchResult(theta, nll.double().numpy())

    def predict_proba(self, x, shared, state):
        return torch.einsum("m,mbc->bc", state["pi"], self.model.proba(shared, x))

    def adapt(self, data, shared, state):
        losses = self.model.losses(shared, data.iter_train())
        state["pi"].copy_(fit_mixture_weights(state["pi"].clone(), losses, self.params.adapt_iters))
