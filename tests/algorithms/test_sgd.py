"""Local SGD on flat stacks against torch.optim.SGD on ordinary modules."""

import torch
from torch import nn

from fedmtl_hpc.algorithms.sgd import batches, local_sgd
from fedmtl_hpc.config import TrainConfig
from fedmtl_hpc.data.base import ClientData
from fedmtl_hpc.models.linear import LinearModel
from fedmtl_hpc.params import FlatModel


def _reference(module, x, y, cfg, order, weights=None):
    opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    for idx in order:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(module(x[idx]), y[idx], reduction="none")
        if weights is not None:
            loss = loss * weights[idx]
        (loss.sum() / len(idx)).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_matches_torch_sgd_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    x, y = torch.randn(70, 5), torch.randint(0, 3, (70,))
    cfg = TrainConfig(lr=0.3, batch_size=16, local_epochs=2, momentum=0.9, weight_decay=0.01)
    mods = [LinearModel(5, 3) for _ in range(2)]
    fm = FlatModel(LinearModel(5, 3))
    theta = torch.stack([fm.flatten_module(m) for m in mods])
    w = torch.rand(2, 70)
    order = list(batches(70, cfg, torch.Generator().manual_seed(7), "cpu"))
    assert len(order) == 2 * 5 and sorted(torch.cat(order[:5]).tolist()) == list(range(70))
    local_sgd(fm, theta, ClientData(0, x, y, x[:0], y[:0]), cfg, torch.Generator().manual_seed(7), weights=w)
    for k in range(2):  # each row follows its own weighted objective, independently
        ref = _reference(mods[k], x, y, cfg, order, weights=w[k])
        assert torch.allclose(theta[k], ref, atol=1e-5), (theta[k] - ref).abs().max()


def test_local_steps_counts_batches_across_epochs():
    cfg = TrainConfig(batch_size=8, local_steps=7)
    assert len(list(batches(20, cfg, torch.Generator().manual_seed(1), "cpu"))) == 7
