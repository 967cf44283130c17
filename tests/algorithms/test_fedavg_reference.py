"""FedAvg with one full-batch local step is centralized gradient descent on the pooled data."""

import torch
from torch import nn

from fedmtl_hpc.comm.base import SelfComm
from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data.synthetic import SyntheticMixture
from fedmtl_hpc.engine import Engine
from fedmtl_hpc.models import build_model
from fedmtl_hpc.params import FlatModel


def test_fedavg_one_full_batch_step_equals_centralized_gd():
    cfg = parse_config({"algorithm": {"name": "fedavg"},
                        "data": {"n_clients": 6, "max_train": 120, "test_per_client": 10},
                        "train": {"lr": 0.5, "batch_size": 1000, "local_steps": 1}})
    ds = SyntheticMixture(cfg.data, cfg.run.seed)
    fac = lambda: build_model("linear", ds.input_shape, 2)  # noqa: E731
    eng = Engine(cfg, SelfComm(), ds, FlatModel(fac()), fac, torch.device("cpu"))
    w = eng.shared[0].clone().double().requires_grad_(True)
    x = torch.cat([c.x_train for c in eng.clients]).double()
    y = torch.cat([c.y_train for c in eng.clients])
    for _ in range(3):
        eng.step()
        # sum_t n_t/n * mean-loss_t = mean over the pooled samples
        logits = x @ w[:300].view(2, 150).T + w[300:]
        loss = nn.functional.cross_entropy(logits, y)
        (g,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= 0.5 * g
        assert torch.allclose(eng.shared[0].double(), w.detach(), atol=1e-5)
