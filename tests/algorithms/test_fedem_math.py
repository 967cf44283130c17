"""FedEM's E-step, pi update and adaptation against hand computations."""

import math

import torch

from fedmtl_hpc.algorithms.fedem import e_step, fit_mixture_weights, mixture_nll


def test_e_step_matches_bayes_rule_by_hand():
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    losses = torch.tensor([[0.1, 2.0], [1.0, 0.5], [3.0, 0.2]], dtype=torch.float64)  # [M=3, n=2]
    q = e_step(pi.log(), losses)
    for i in range(2):
        unnorm = [pi[m].item() * math.exp(-losses[m, i].item()) for m in range(3)]
        for m in range(3):
            assert abs(q[m, i].item() - unnorm[m] / sum(unnorm)) < 1e-15
    assert torch.allclose(q.sum(0), torch.ones(2, dtype=torch.float64))


def test_e_step_is_stable_for_huge_losses():
    q = e_step(torch.log(torch.tensor([0.5, 0.5])), torch.tensor([[1e4], [1e4 + 1.0]]))
    assert torch.isfinite(q).all() and abs(q[0, 0].item() - 1 / (1 + math.exp(-1))) < 1e-6


def test_mixture_nll_by_hand():
    pi = torch.tensor([0.25, 0.75], dtype=torch.float64)
    losses = torch.tensor([[1.0, 2.0], [0.5, 3.0]], dtype=torch.float64)
    want = -sum(math.log(0.25 * math.exp(-losses[0, i]) + 0.75 * math.exp(-losses[1, i])) for i in range(2)) / 2
    assert abs(mixture_nll(pi.log(), losses).item() - want) < 1e-14


def test_fit_mixture_weights_recovers_true_pi():
    # samples drawn from component m have loss 0 under m and 5 under the others:
    # the MLE of pi is close to the sample shares.
    g = torch.Generator().manual_seed(0)
    true = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64)
    z = torch.multinomial(true, 4000, replacement=True, generator=g)
    losses = torch.full((3, 4000), 5.0, dtype=torch.float64)
    losses[z, torch.arange(4000)] = 0.0
    pi = fit_mixture_weights(torch.full((3,), 1 / 3, dtype=torch.float64), losses, iters=500)
    share = torch.bincount(z, minlength=3).double() / 4000
    assert torch.allclose(pi, share, atol=0.02), (pi, share)
    assert abs(pi.sum().item() - 1) < 1e-12
