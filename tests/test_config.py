"""Config parsing: defaults, types, rules, overrides, the reference table."""

import pytest
import yaml

from fedmtl_hpc.config import Config, apply_overrides, config_to_yaml, load_config, parse_config, reference
from fedmtl_hpc.errors import ConfigError


def test_defaults_match_issue_keys():
    cfg = parse_config({})
    assert cfg.run.seed == 1234 and cfg.run.rounds == 200 and cfg.run.eval_every == 10
    assert cfg.data.n_clients == 300 and cfg.data.dim == 150 and cfg.data.alpha == 0.4
    assert cfg.algorithm.name == "fedem" and cfg.algorithm.params.n_components == 3
    assert cfg.checkpoint.every == 10 and cfg.checkpoint.keep == 3


@pytest.mark.parametrize("raw, message", [
    ({"train": {"lr": -1}}, "config error: train.lr must be > 0, got -1"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number, got 'fast'"),
    ({"run": {"rounds": 2.5}}, "run.rounds must be an integer, got 2.5"),
    ({"run": {"rounds": True}}, "run.rounds must be an integer, got True"),
    ({"train": {"momentum": 1.0}}, "train.momentum must be in [0, 1), got 1.0"),
    ({"train": {"lr": float("inf")}}, "train.lr must be a finite number, got inf"),
    ({"data": {"n_clients": 0}}, "data.n_clients must be >= 1, got 0"),
    ({"data": {"colour": 1}}, "data.colour is not a known key"),
    ({"optimiser": {}}, "optimiser is not a known key"),
    ({"model": "linear"}, "model must be a mapping, got 'linear'"),
    ({"data": {"min_train": 10, "max_train": 5}}, "data.min_train must be <= data.max_train"),
])
def test_rules_name_key_and_rule(raw, message):
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert message in str(e.value)


def test_world_size_rule():
    with pytest.raises(ConfigError, match="data.n_clients must be >= the number of MPI ranks"):
        parse_config({"data": {"n_clients": 3}}).check_world(4)


def test_overrides_and_roundtrip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {lr: 0.5}\n")
    cfg = load_config(str(p), ["train.lr=0.25", "run.name=x", "data.n_clients=12"])
    assert (cfg.train.lr, cfg.run.name, cfg.data.n_clients) == (0.25, "x", 12)
    assert parse_config(yaml.safe_load(config_to_yaml(cfg))) == cfg
    assert apply_overrides({}, ["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])


def test_frozen_and_reference_complete():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.train.lr = 1.0  # type: ignore[misc]
    keys = [k for k, _, doc in reference()]
    assert "train.lr" in keys and "checkpoint.keep" in keys
    assert all(doc for _, _, doc in reference()), "every key documents itself"
