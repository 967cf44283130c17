"""YAML -> typed, frozen, validated configuration.

Every rule is checked here, before any MPI collective, identically on every
rank; a broken rule raises ConfigError naming the full key path and the rule
(``config error: train.lr must be > 0, got -1``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import yaml

from .algorithms.catalog import SPECS
from .errors import ConfigError
from .options import at_least, fractions_rule, one_of, option, positive, rule

__all__ = ["Config", "RunConfig", "DataConfig", "ModelConfig", "AlgorithmConfig", "TopologyConfig",
           "TrainConfig", "CheckpointConfig", "MTLConfig", "MTL_DATASETS", "load_config", "parse_config",
           "apply_overrides", "config_to_dict", "config_to_yaml", "config_sha256"]


_rule, _positive, _at_least, _one_of, _f = rule, positive, at_least, one_of, option


@dataclass(frozen=True)
class RunConfig:
    name: str = _f("synthetic-fedem", _rule(lambda v: v and "/" not in v, "must be a non-empty name without '/'"),
                   doc="run name; the default run directory is runs/<name>-<job id or time>")
    seed: int = _f(1234, _at_least(0), doc="master seed; every random stream derives from it")
    rounds: int = _f(200, _at_least(1), doc="communication rounds")
    eval_every: int = _f(10, _at_least(1), doc="evaluate every k rounds (and after the last round)")
    stop_after: int = _f(0, _at_least(0), doc="if > 0: checkpoint and stop (exit 3) after this round, as if signalled")
    watchdog_s: float = _f(-1.0, _rule(lambda v: v in (-1, 0) or v >= 1, "must be -1 (auto), 0 (off) or >= 1"),
                           doc="hang watchdog: abort the job (naming the stuck rank, with every rank's Python stack) "
                               "when no rank makes progress for this many seconds; -1: max(120, 20 x the slowest "
                               "round so far); 0: off (docs/debugging.md)")
    eval_clients: int = _f(0, _at_least(0), doc="0: evaluate every client; k > 0: a seeded sample of k training (and "
                           "k x unseen/n unseen) clients per evaluation, drawn from (seed, EVAL, round) (column eval_clients)")


DATASETS = ("synthetic", "cifar10", "cifar100", "mnist", "fashion_mnist", "emnist", "femnist", "shakespeare")
MTL_DATASETS = ("mtl_synthetic", "mtl_h5", "mtl_fashion_mnist")   # tasks of linear_mtl/ (algorithm program mtl)
PARTITIONS = ("auto", "iid", "dirichlet", "label_group", "pathological", "pachinko", "natural")
MODELS = ("linear", "femnist_cnn", "cifar_cnn", "mobilenet_v2", "resnet18", "lstm")
# which models fit each dataset's inputs (28x28 grey, 32x32 colour, 80-character windows)
_FITS = {"synthetic": ("linear",), "shakespeare": ("lstm",),
         **{d: ("linear", "femnist_cnn") for d in ("mnist", "fashion_mnist", "emnist", "femnist")},
         **{d: ("linear", "cifar_cnn", "mobilenet_v2", "resnet18") for d in ("cifar10", "cifar100")},
         **{d: ("linear",) for d in MTL_DATASETS}}


@dataclass(frozen=True)
class DataConfig:
    name: str = _f("synthetic", _one_of(*DATASETS, *MTL_DATASETS), doc="dataset: " + " | ".join(DATASETS)
                   + "; multi-task (linear MTL solvers): " + " | ".join(MTL_DATASETS))
    n_clients: int = _f(300, _at_least(1), doc="clients that train")
    unseen_clients: int = _f(30, _at_least(0), doc="extra clients never trained on; adapted and evaluated at each eval")
    dim: int = _f(150, _at_least(1), doc="synthetic: feature dimension d")
    n_components: int = _f(3, _at_least(1), doc="synthetic: true mixture components")
    alpha: float = _f(0.4, _positive(), doc="synthetic: Dirichlet concentration of client mixture weights")
    noise_std: float = _f(0.1, _at_least(0.0), doc="synthetic: std of the label noise inside the sigmoid; "
                          "mtl_synthetic: std of the noise added to x^T w (squared: y; logistic: inside the sign)")
    test_per_client: int = _f(500, _at_least(1), doc="synthetic: test samples per client")
    min_train: int = _f(50, _at_least(1), doc="synthetic: train size = min(lognormal(4, 2) + min_train, max_train)")
    max_train: int = _f(1000, _at_least(1), doc="synthetic: cap on the train size per client")
    lazy: str = _f("auto", _one_of("auto", "on", "off"),
                   doc="synthetic, client-server: on: hold no client samples, regenerate a client's (bit for bit) when it "
                       "trains or is evaluated; auto: on when train.participation < 1 and a rank's samples would exceed "
                       "256 MiB")
    root: str = _f("", doc="real data: folder of the released files; empty: $FEDMTL_DATA/<name> "
                   "(cifar: $FEDMTL_DATA; fashion_mnist: else /usr/share/datasets/fashion-mnist)")
    seed: int = _f(-1, _at_least(-1), doc="real data: partition seed (-1: run.seed); fix it to keep one split across run seeds")
    partition: str = _f("auto", _one_of(*PARTITIONS), doc="real data: " + " | ".join(PARTITIONS) + "; auto: "
                        "the paper's split (label_group for cifar10/emnist/mnist/fashion_mnist, pachinko for "
                        "cifar100, natural for femnist/shakespeare)")
    partition_alpha: float = _f(0.4, _positive(), doc="dirichlet / label_group: Dirichlet concentration; "
                                "pachinko: coarse-label concentration")
    pachinko_beta: float = _f(10.0, _positive(), doc="pachinko: fine-label concentration within a coarse label")
    n_groups: int = _f(0, _at_least(0), doc="label_group: label groups (0: one group per label)")
    shards_per_client: int = _f(2, _at_least(1), doc="pathological: label-sorted shards per client")
    fraction: float = _f(1.0, _rule(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
                         doc="share of the pooled samples (train + test files) kept before partitioning")
    test_fraction: float = _f(0.2, _rule(lambda v: 0.0 < v < 1.0, "must be in (0, 1)"),
                              doc="per-client share of samples held out for testing")
    val_fraction: float = _f(0.0, _rule(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
                             doc="per-client share held out for validation (used when eval_split = val)")
    eval_split: str = _f("test", _one_of("test", "val"), doc="held-out share that evaluation reports: test | val")
    min_samples: int = _f(1, _at_least(1), doc="fewest samples a client may get; natural: smaller writers/roles are skipped")
    emnist_split: str = _f("byclass", _one_of("byclass", "bymerge", "balanced", "letters", "digits", "mnist"),
                           doc="emnist: which of the six released splits")
    verify: bool = _f(False, doc="cifar10 / cifar100: check the MD5 of the released files before reading them")
    augment: bool = _f(False, doc="cifar10 / cifar100: random crop (pad 4) + horizontal flip of every training batch")
    path: str = _f("", doc="mtl_h5: the HDF5 file of tasks (/tasks/<name>/X, y; optional X_test, y_test)")
    n_tasks: int = _f(8, _at_least(1), doc="mtl_synthetic: tasks T; mtl_fashion_mnist: one-vs-rest tasks (classes "
                      "0..T-1, T <= 10)")
    samples_per_task: int = _f(200, _at_least(1), doc="mtl_synthetic / mtl_fashion_mnist: training samples n_t per task")
    test_per_task: int = _f(200, _at_least(0), doc="mtl_synthetic / mtl_fashion_mnist: test samples per task (0: none)")
    structure: str = _f("group_sparse", _one_of("group_sparse", "low_rank", "clustered", "related"),
                        doc="mtl_synthetic: true W: group_sparse (support shared rows) | low_rank (rank) | clustered "
                            "(clusters) | related (a common w0 + small task offsets)")
    support: int = _f(5, _at_least(1), doc="mtl_synthetic group_sparse: non-zero rows of the true W")
    rank: int = _f(2, _at_least(1), doc="mtl_synthetic low_rank: rank of the true W")
    clusters: int = _f(2, _at_least(1), doc="mtl_synthetic clustered: task clusters (tasks dealt round robin)")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _f("linear", _one_of(*MODELS), doc="model: " + " | ".join(MODELS))


@dataclass(frozen=True)
class AlgorithmConfig:
    """``algorithm.name``, ``algorithm.mode`` and the chosen algorithm's own section
    ``algorithm.<name>`` (its keys are declared in ``algorithms/catalog.py``)."""

    name: str = _f("fedem", _one_of(*SPECS), doc=" | ".join(SPECS) + " (each with its own keys below)")
    mode: str = _f("client-server", _one_of("client-server", "decentralized"),
                   doc="client-server (one Allreduce per round) | decentralized (gossip over `topology`: "
                       "fedem = D-FedEM, fedavg = D-SGD)")
    params: object = field(default=None, metadata={"section": True})

    def __post_init__(self):
        spec = SPECS[self.name]
        if self.params is None:
            object.__setattr__(self, "params", spec.params())
        if self.mode not in spec.modes:
            ok = [n for n, s in SPECS.items() if self.mode in s.modes]
            raise ConfigError(f"algorithm.mode = {self.mode} needs algorithm.name {' or '.join(ok)}, got {self.name}")


def _shape_rule(v) -> bool:
    return v is None or (isinstance(v, list) and len(v) == 2 and all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in v))


@dataclass(frozen=True)
class TopologyConfig:
    """The gossip graph of decentralized mode; its nodes are the training clients (comm/topology.py)."""

    kind: str = _f("ring", _one_of("ring", "torus", "complete", "star", "erdos_renyi", "edges"),
                   doc="decentralized: graph over the clients: ring | torus | complete | star | erdos_renyi | edges")
    p: float = _f(0.5, _rule(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
                  doc="erdos_renyi: edge probability (redrawn until connected, bounded tries)")
    seed: int = _f(7, _at_least(0), doc="seed of random graphs and of time-varying relabelings")
    file: str = _f("", doc="edges: text file of `i j` client pairs, one per line (path relative to the working directory)")
    change_every: int = _f(0, _at_least(0), doc="if > 0: a new seeded graph every k rounds (0: static)")
    weights: str = _f("metropolis", _rule(bool, "must be metropolis, uniform or a path"),
                      doc="metropolis | uniform (regular graphs) | path of an n x n matrix file (rows of "
                          "numbers like 0.25 or 1/4)")
    shape: object = _f(None, _rule(_shape_rule, "must be null or [rows, cols] with integers >= 1"),
                       doc="torus: null (most square rows x cols = n) or [rows, cols]")

    def __post_init__(self):
        if self.kind == "edges" and not self.file:
            raise ConfigError("topology.file is required when topology.kind = edges")
        if self.shape is not None and self.kind != "torus":
            raise ConfigError(f"topology.shape applies to kind torus only, got kind {self.kind}")
        if self.change_every and self.weights not in ("metropolis", "uniform"):
            raise ConfigError("topology.weights: a matrix file cannot follow a time-varying graph "
                              "(topology.change_every > 0); use metropolis or uniform")


@dataclass(frozen=True)
class TrainConfig:
    # 3.0 suits the default linear model on x ~ U[-1,1]^150 (Hessian eigenvalues ~1/12);
    # image models want ~0.01-0.1 (see configs/)
    lr: float = _f(3.0, _positive(), doc="local SGD learning rate")
    batch_size: int = _f(128, _at_least(1), doc="local minibatch size")
    local_epochs: int = _f(1, _at_least(1), doc="local epochs per round (ignored when local_steps > 0)")
    local_steps: int = _f(0, _at_least(0), doc="if > 0: exactly this many local SGD steps per round")
    momentum: float = _f(0.0, _rule(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"), doc="SGD momentum (buffers restart each round)")
    weight_decay: float = _f(0.0, _at_least(0.0), doc="L2 weight decay")
    lr_schedule: str = _f("constant", _one_of("constant", "multistep"),
                          doc="constant | multistep: lr x lr_factor at each milestone (FedEM paper: x0.1 at 1/2 and 3/4 of the rounds)")
    lr_milestones: object = _f([0.5, 0.75], fractions_rule(),
                               doc="multistep: milestones as shares of run.rounds; the lr drops from 1-based round "
                                   "floor(share x run.rounds + 1/2) + 1 on (changing run.rounds on resume moves them)")
    lr_factor: float = _f(0.1, _rule(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"), doc="multistep: factor per milestone")
    participation: float = _f(1.0, _rule(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"), doc="share of clients sampled per round")
    batched: str = _f("auto", _one_of("auto", "on", "off"),
                      doc="auto | on | off: a rank's sampled clients train as one batched computation (linear model; "
                          "fedem, fedavg, fedavg_plus, fedprox, local); auto: wherever supported; off: the per-client loop")
    device: str = _f("cpu", _one_of("cpu", "cuda", "auto"), doc="cpu | cuda | auto (node-local GPU when present)")
    allow_oversubscribe: bool = _f(False, doc="let more ranks than GPUs share a node's GPUs")
    wire_dtype: str = _f("float64", _one_of("float64", "float32"),
                         doc="client-server: float64 | float32: dtype of the round's all-reduce; float32 packs the "
                             "float64 payload into a float32 buffer and back (half the bytes_exchanged) and rounds "
                             "each rank's partial sum and the cross-rank sum to float32, so results then depend on "
                             "the number of ranks by a few float32 ulps; decentralized mode always sends float32 rows")


@dataclass(frozen=True)
class MTLConfig:
    """The objective of the linear multi-task solvers (algorithm program mtl, ``linear_mtl/``)."""

    loss: str = _f("squared", _one_of("squared", "logistic"), doc="mtl: f_t = 1/(2 n_t)||X_t w - y_t||^2 (squared) | "
                   "1/n_t sum log(1 + exp(-y x^T w)) (logistic)")
    regularizer: str = _f("l21", _one_of("l21", "nuclear"), doc="mtl: Omega(W) for prox_sync / prox_async: l21 (sum of "
                          "row norms) | nuclear (sum of singular values)")
    lam: float = _f(0.1, _at_least(0.0), doc="mtl: weight of the coupling term (lam Omega(W); per solver in the README)")
    lam2: float = _f(0.0, _at_least(0.0), doc="mtl: + lam2/2 ||W||_F^2")
    tol: float = _f(1e-8, _positive(), doc="mtl: stop when the relative objective change or the relative prox-gradient "
                    "norm falls below this")
    max_iters: int = _f(1000, _at_least(1), doc="mtl: most iterations (rounds); run.rounds is ignored by these solvers")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = _f(10, _at_least(0), doc="checkpoint every k rounds (0: only at the end and on a stop signal)")
    keep: int = _f(3, _at_least(1), doc="keep the newest k checkpoints")


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    mtl: MTLConfig = field(default_factory=MTLConfig)

    @property
    def program(self) -> str:
        """Which Loop runs this config: federated (engine.py) or mtl (linear_mtl/)."""
        return SPECS[self.algorithm.name].program

    def check_world(self, world_size: int) -> None:
        """Rules that need the number of ranks (known without communication). MTL programs check
        theirs in ``linear_mtl.check`` (the number of tasks may come from a file)."""
        if self.program == "mtl":
            return
        if world_size > self.data.n_clients:
            raise ConfigError(f"data.n_clients must be >= the number of MPI ranks ({world_size}), "
                              f"got {self.data.n_clients}")


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


# auto | on | off keys: YAML 1.1 reads a bare on / off as true / false, so those mean "on" / "off" here
_ON_OFF = ("train.batched", "data.lazy")


def _coerce(path: str, typ: type, value: Any) -> Any:
    if typ is str and isinstance(value, bool) and path in _ON_OFF:
        value = "on" if value else "off"
    ok = (isinstance(value, bool) if typ is bool else
          isinstance(value, int) and not isinstance(value, bool) if typ is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if typ is float else
          isinstance(value, typ))
    if not ok:
        raise ConfigError(f"{path} must be {_TYPE_NAMES[typ]}, got {value!r}")
    if typ is float and not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number, got {value!r}")
    return float(value) if typ is float else value


# keys that moved into an algorithm's own section (a hint beats "not a known key")
_MOVED = {"n_components": "algorithm.fedem.n_components", "adapt_iters": "algorithm.fedem.adapt_iters"}


def _shown(key: Any) -> str:
    """A key as an error message shows it: plain when printable, else its repr (one line, visible)."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() == key and key else repr(key)


def _build(cls: type, raw: Any, path: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {raw!r}")
    if cls is AlgorithmConfig:
        return _build_algorithm(raw, path)
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in known:
            raise ConfigError(f"{path}.{_shown(key)} is not a known key (known: {', '.join(known)})".lstrip("."))
    values = {}
    for name, f in known.items():
        key = f"{path}.{name}".lstrip(".")
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            values[name] = _build(typ, raw.get(name), key)
            continue
        if name not in raw:
            continue
        value = _coerce(key, typ, raw[name])
        for r in f.metadata.get("rules", ()):
            if not r["check"](value):
                raise ConfigError(f"{key} {r['rule']}, got {raw[name]!r}")
        values[name] = value
    return cls(**values)


def _build_algorithm(raw: Mapping, path: str) -> "AlgorithmConfig":
    """``algorithm``: name and mode, then the section of the chosen algorithm only."""
    head = {k: v for k, v in raw.items() if k in ("name", "mode")}
    for key in raw:
        if key in ("name", "mode") or key in SPECS:
            continue
        hint = f"; it moved to {_MOVED[key]}" if key in _MOVED else ""
        raise ConfigError(f"{path}.{_shown(key)} is not a known key (known: name, mode, "
                          f"{', '.join(SPECS)}){hint}")
    cfg = _build(_AlgorithmHead, head, path)
    # every section present is validated (a typo is caught even in a section not in use, so a base
    # config can carry several methods' keys and switch with --set algorithm.name=...); only the
    # chosen one is kept, so the resolved config and its hash hold what the run uses
    for key in raw:
        if key in SPECS and key != cfg.name:
            _build(SPECS[key].params, raw[key], f"{path}.{key}")
    params = _build(SPECS[cfg.name].params, raw.get(cfg.name), f"{path}.{cfg.name}")
    return AlgorithmConfig(name=cfg.name, mode=cfg.mode, params=params)


@dataclass(frozen=True)
class _AlgorithmHead:
    name: str = fields(AlgorithmConfig)[0].default
    mode: str = fields(AlgorithmConfig)[1].default


for _f_head, _f_full in zip(fields(_AlgorithmHead), fields(AlgorithmConfig)):
    _f_head.metadata = _f_full.metadata  # the same rules and docs as the public fields


def _check_data(d: "DataConfig", model: str) -> None:
    """Cross-field rules of data.* and model.name (real datasets, partitions, models)."""
    natural = d.name in ("femnist", "shakespeare")
    rules = [
        (d.name == "synthetic" and d.partition != "auto", "data.partition applies to real datasets; "
         f"synthetic draws its own mixture, got {d.partition}"),
        (natural and d.partition not in ("auto", "natural"), f"data.partition must be natural (or auto) for "
         f"{d.name}: clients are its writers/roles, got {d.partition}"),
        (not natural and d.partition == "natural", f"data.partition natural needs femnist or shakespeare, got {d.name}"),
        (d.partition == "pachinko" and d.name != "cifar100", f"data.partition pachinko needs cifar100 "
         f"(coarse and fine labels), got {d.name}"),
        (natural and d.fraction < 1.0, f"data.fraction must be 1 for {d.name}: choose how many writers/roles "
         f"take part with data.n_clients, got {d.fraction}"),
        (d.test_fraction + d.val_fraction >= 1.0, f"data.test_fraction + data.val_fraction must be < 1, got "
         f"{d.test_fraction} + {d.val_fraction}"),
        (d.eval_split == "val" and d.val_fraction == 0.0, "data.eval_split = val needs data.val_fraction > 0"),
        ((d.augment or d.verify) and d.name not in ("cifar10", "cifar100"),
         f"data.augment and data.verify apply to cifar10 / cifar100 only, got {d.name}"),
        (model not in _FITS[d.name], f"model.name must be one of {' | '.join(_FITS[d.name])} for data.name "
         f"{d.name}, got {model}"),
    ]
    for broken, message in rules:
        if broken:
            raise ConfigError(message)


def parse_config(raw: Any) -> Config:
    """Validate a mapping (from YAML) into a frozen Config."""
    cfg = _build(Config, raw, "")
    if cfg.data.min_train > cfg.data.max_train:
        raise ConfigError(f"data.min_train must be <= data.max_train ({cfg.data.max_train}), got {cfg.data.min_train}")
    _check_data(cfg.data, cfg.model.name)
    _check_mtl(cfg)
    if cfg.train.wire_dtype != "float64" and (cfg.program == "mtl" or cfg.algorithm.mode != "client-server"):
        raise ConfigError(f"train.wire_dtype = {cfg.train.wire_dtype} applies to the federated client-server "
                          f"all-reduce only, got algorithm.name {cfg.algorithm.name}, mode {cfg.algorithm.mode}")
    return cfg


def _check_mtl(cfg: "Config") -> None:
    """Program and data must match: MTL solvers read tasks, federated algorithms read clients."""
    mtl_data, d, m = cfg.data.name in MTL_DATASETS, cfg.data, cfg.mtl
    rules = [
        (cfg.program == "mtl" and not mtl_data, f"data.name must be one of {' | '.join(MTL_DATASETS)} for "
         f"algorithm.name {cfg.algorithm.name}, got {d.name}"),
        (cfg.program != "mtl" and mtl_data, f"data.name {d.name} needs an MTL solver (algorithm.name prox_sync | "
         f"prox_async | mtrl_surrogate | dsml | clustered_mtl), got {cfg.algorithm.name}"),
        (mtl_data and d.partition != "auto", f"data.partition applies to federated datasets, got {d.partition}"),
        (d.name == "mtl_h5" and not d.path, "data.path is required when data.name = mtl_h5"),
        (d.name == "mtl_fashion_mnist" and d.n_tasks > 10, f"data.n_tasks must be <= 10 for mtl_fashion_mnist "
         f"(one-vs-rest per class), got {d.n_tasks}"),
        (d.name == "mtl_fashion_mnist" and m.loss != "logistic", "mtl.loss must be logistic for mtl_fashion_mnist "
         f"(binary one-vs-rest labels), got {m.loss}"),
        (cfg.algorithm.name == "dsml" and m.loss != "squared", f"mtl.loss must be squared for algorithm.name dsml "
         f"(debiased lasso), got {m.loss}"),
        (cfg.algorithm.name == "mtrl_surrogate" and m.lam <= 0, f"mtl.lam must be > 0 for mtrl_surrogate, got {m.lam}"),
    ]
    for broken, message in rules:
        if broken:
            raise ConfigError(message)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars) to a raw mapping."""
    raw = dict(raw or {})
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key.sub=value, got {item!r}")
        parts = key.split(".")
        node = raw
        for p in parts[:-1]:
            child = node.get(p)
            child = dict(child) if isinstance(child, Mapping) else {}
            node[p] = child
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {_shown(key)}: cannot parse value {text!r}: {' '.join(str(exc).split())}") from None
        except RecursionError:
            raise ConfigError(f"--set {_shown(key)}: value nested too deeply") from None
    return raw


def load_config(path: str, overrides: list[str] | None = None) -> Config:
    """Read a YAML file, apply ``--set`` overrides, validate."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return parse_config(apply_overrides(raw or {}, overrides or []))


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as plain data; the algorithm section is ``algorithm.<name>``."""
    out = dataclasses.asdict(cfg)
    a = cfg.algorithm
    out["algorithm"] = {"name": a.name, "mode": a.mode, a.name: dataclasses.asdict(a.params)}
    return out


def config_to_yaml(cfg: Config) -> str:
    """The resolved config (every default filled in) as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def reference() -> list[tuple[str, Any, str]]:
    """(key, default, doc) for every key: the README's config reference comes from here."""
    rows = []
    for sec in fields(Config):
        for f in fields(sec.default_factory()):
            if f.metadata.get("section"):
                for name, spec in SPECS.items():
                    for p in fields(spec.params):
                        default = p.default_factory() if p.default is dataclasses.MISSING else p.default
                        rows.append((f"algorithm.{name}.{p.name}", default, p.metadata.get("doc", "")))
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            rows.append((f"{sec.name}.{f.name}", default, f.metadata.get("doc", "")))
    return rows


def reference_markdown() -> str:
    """The README's config table (a test keeps the README equal to it)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in reference():
        shown = "''" if default == "" else str(default)
        rows.append(f"| `{key}` | `{shown}` | {doc.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)
