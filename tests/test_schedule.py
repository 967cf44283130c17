"""train.lr_schedule: the learning rate changes exactly at the milestones, on every rank and across a resume."""

import pytest

from fedmtl_hpc.config import parse_config
from fedmtl_hpc.errors import ConfigError
from fedmtl_hpc.schedule import lr_at, milestone_rounds
from tests.conftest import engine_for


def _train(**kw):
    return parse_config({"train": {"lr": 0.5, **kw}}).train


def test_constant_never_changes():
    t = _train()
    assert milestone_rounds(t, 200) == [] and {lr_at(t, 200, r) for r in range(200)} == {0.5}


def test_multistep_changes_exactly_at_the_milestones():
    """FedEM paper: x0.1 at 1/2 and 3/4 of the rounds; 0-based round 100 is the first at 0.05."""
    t = _train(lr_schedule="multistep")
    assert milestone_rounds(t, 200) == [100, 150]
    lrs = [lr_at(t, 200, r) for r in range(200)]
    assert lrs[:100] == [0.5] * 100
    assert lrs[100:150] == [pytest.approx(0.05)] * 50 and lrs[99] != lrs[100]
    assert lrs[150:] == [pytest.approx(0.005)] * 50 and lrs[149] != lrs[150]
    changes = [r for r in range(1, 200) if lrs[r] != lrs[r - 1]]
    assert changes == [100, 150]


def test_custom_milestones_and_factor():
    t = _train(lr_schedule="multistep", lr_milestones=[0.1, 0.2, 0.9], lr_factor=0.5)
    assert milestone_rounds(t, 10) == [1, 2, 9]
    assert [lr_at(t, 10, r) for r in (0, 1, 2, 8, 9)] == [0.5, 0.25, 0.125, 0.125, 0.0625]


@pytest.mark.parametrize("bad,text", [
    ({"lr_schedule": "cosine"}, "train.lr_schedule must be one of constant | multistep"),
    ({"lr_milestones": [0.75, 0.5]}, "train.lr_milestones must be a list of increasing numbers in (0, 1)"),
    ({"lr_milestones": [0.5, 1.0]}, "train.lr_milestones must be a list"),
    ({"lr_milestones": "half"}, "train.lr_milestones must be a list"),
    ({"lr_factor": 0}, "train.lr_factor must be in (0, 1]"),
])
def test_bad_schedule_keys_name_the_key(bad, text):
    with pytest.raises(ConfigError) as info:
        parse_config({"train": bad})
    assert text in str(info.value)


def test_algorithms_train_with_the_scheduled_lr():
    """The round's lr reaches local SGD: after the milestone, one round with lr x 0.1 moves the
    model by 0.1x what the same round moves it at the full lr (linear model, 1 step, same batch)."""
    sections = dict(data={"n_clients": 2, "unseen_clients": 0, "max_train": 60, "test_per_client": 10},
                    algorithm={"name": "fedavg"}, run={"rounds": 4},
                    train={"local_steps": 1, "batch_size": 1000, "lr": 0.5})
    full = engine_for({}, **sections)
    decayed = engine_for({}, **{**sections, "train": {**sections["train"], "lr_schedule": "multistep",
                                                  "lr_milestones": [0.25], "lr_factor": 0.1}})
    for eng in (full, decayed):
        eng.before_training()
        eng.round = 1             # round index 1 = the milestone round(0.25 * 4)
        eng.algo.begin_round(1, None)
    assert full.algo.lr == 0.5 and decayed.algo.lr == pytest.approx(0.05)
    start = full.shared.clone()
    full.step(), decayed.step()
    d_full, d_dec = full.shared - start, decayed.shared - start
    assert float(d_full.abs().max()) > 0
    assert float((d_dec - 0.1 * d_full).abs().max()) < 1e-5 * float(d_full.abs().max()) + 1e-7
