"""data.* / model.name keys: defaults, rules and cross-field checks name the key and the rule."""

from pathlib import Path

import pytest

from fedmtl_hpc.algorithms.catalog import SPECS
from fedmtl_hpc.config import DATASETS, load_config, parse_config
from fedmtl_hpc.errors import ConfigError


def test_synthetic_defaults_unchanged_and_real_keys_documented():
    d = parse_config({}).data
    assert (d.name, d.partition, d.fraction, d.test_fraction, d.seed, d.augment) == ("synthetic", "auto", 1.0,
                                                                                     0.2, -1, False)
    ok = parse_config({"data": {"name": "cifar10", "partition": "label_group", "n_groups": 3},
                       "model": {"name": "mobilenet_v2"}})
    assert ok.data.n_groups == 3 and ok.model.name == "mobilenet_v2"


@pytest.mark.parametrize("raw, message", [
    ({"data": {"name": "imagenet"}}, "data.name must be one of synthetic | cifar10"),
    ({"data": {"partition": "iid"}}, "data.partition applies to real datasets"),
    ({"data": {"name": "femnist", "partition": "iid"}, "model": {"name": "femnist_cnn"}},
     "data.partition must be natural (or auto) for femnist"),
    ({"data": {"name": "mnist", "partition": "natural"}}, "data.partition natural needs femnist or shakespeare"),
    ({"data": {"name": "cifar10", "partition": "pachinko"}}, "data.partition pachinko needs cifar100"),
    ({"data": {"name": "shakespeare", "fraction": 0.5}, "model": {"name": "lstm"}},
     "data.fraction must be 1 for shakespeare"),
    ({"data": {"name": "mnist", "fraction": 0.0}}, "data.fraction must be in (0, 1], got 0.0"),
    ({"data": {"name": "mnist", "test_fraction": 0.6, "val_fraction": 0.5}},
     "data.test_fraction + data.val_fraction must be < 1"),
    ({"data": {"name": "mnist", "eval_split": "val"}}, "data.eval_split = val needs data.val_fraction > 0"),
    ({"data": {"name": "mnist", "augment": True}}, "data.augment and data.verify apply to cifar10 / cifar100"),
    ({"data": {"name": "mnist", "emnist_split": "letter"}}, "data.emnist_split must be one of byclass"),
    ({"data": {"name": "cifar10"}, "model": {"name": "lstm"}},
     "model.name must be one of linear | cifar_cnn | mobilenet_v2 | resnet18 for data.name cifar10, got lstm"),
    ({"data": {"name": "shakespeare"}, "model": {"name": "linear"}}, "must be one of lstm for data.name shakespeare"),
    ({"model": {"name": "resnet18"}}, "for data.name synthetic, got resnet18"),
    ({"model": {"name": "vgg"}}, "model.name must be one of linear | femnist_cnn"),
    ({"data": {"name": "mnist", "seed": -2}}, "data.seed must be >= -1"),
])
def test_rules_name_key_and_rule(raw, message):
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert message in str(e.value)


@pytest.mark.parametrize("name", DATASETS[1:])
def test_every_dataset_accepts_its_auto_partition_and_a_model(name):
    model = {"shakespeare": "lstm", "cifar10": "resnet18", "cifar100": "cifar_cnn"}.get(name, "femnist_cnn")
    assert parse_config({"data": {"name": name}, "model": {"name": model}}).data.partition == "auto"


CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                 if not p.name.startswith(("synthetic", "compare", "mtl")))
FEDERATED = [n for n, s in SPECS.items() if getattr(s, "program", "federated") == "federated"]


def _split(stem: str) -> tuple[str, str]:
    """<dataset>_<algorithm>, the algorithm matched against the catalog (names hold underscores)."""
    for algo in sorted(FEDERATED, key=len, reverse=True):
        if stem.endswith("_" + algo):
            return stem[:-len(algo) - 1], algo
    raise AssertionError(f"{stem}: not <dataset>_<algorithm>")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_real_data_configs_are_valid(path):
    cfg = load_config(str(path))
    dataset, algo = _split(path.stem)
    assert cfg.data.name == dataset and cfg.algorithm.name == algo and cfg.run.name == f"{dataset}-{algo}"
    assert cfg.train.lr_schedule == "multistep"  # the FedEM paper decays every real-data run


def test_configs_cover_every_dataset_with_every_method():
    assert {p.stem for p in CONFIGS} == {f"{d}_{a}" for d in DATASETS[1:] for a in FEDERATED}
    c10 = load_config(str(CONFIGS[0].parent / "cifar10_fedem.yaml"))  # jobs/run_cifar.slurm runs this one
    assert (c10.data.n_clients, c10.data.partition, c10.data.n_groups, c10.data.partition_alpha, c10.model.name,
            c10.run.rounds, c10.train.batch_size, c10.train.lr) == (80, "label_group", 3, 0.4, "mobilenet_v2",
                                                                    200, 128, 0.03)


def test_synthetic_configs_cover_every_method():
    root = CONFIGS[0].parent
    for algo in FEDERATED:
        cfg = load_config(str(root / f"synthetic_{algo}.yaml"))
        assert cfg.algorithm.name == algo and cfg.data.name == "synthetic"
