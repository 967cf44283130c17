"""YAML -> typed, frozen, validated configuration.

Every rule is checked here, before any MPI collective, identically on every
rank; a broken rule raises ConfigError naming the full key path and the rule
(``config error: train.lr must be > 0, got -1``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import yaml

from .errors import ConfigError

__all__ = ["Config", "RunConfig", "DataConfig", "ModelConfig", "AlgorithmConfig",
           "TrainConfig", "CheckpointConfig", "load_config", "parse_config",
           "apply_overrides", "config_to_yaml", "config_sha256"]


def _rule(check: Callable[[Any], bool], text: str) -> dict:
    return {"check": check, "rule": text}


def _positive(): return _rule(lambda v: v > 0, "must be > 0")
def _at_least(n): return _rule(lambda v: v >= n, f"must be >= {n}")
def _one_of(*opts): return _rule(lambda v: v in opts, "must be one of " + " | ".join(map(str, opts)))


def _f(default, *rules, doc=""):
    """A config field with its default, rules and one-line documentation."""
    return field(default=default, metadata={"rules": rules, "doc": doc})


@dataclass(frozen=True)
class RunConfig:
    name: str = _f("synthetic-fedem", _rule(lambda v: v and "/" not in v, "must be a non-empty name without '/'"),
                   doc="run name; the default run directory is runs/<name>-<job id or time>")
    seed: int = _f(1234, _at_least(0), doc="master seed; every random stream derives from it")
    rounds: int = _f(200, _at_least(1), doc="communication rounds")
    eval_every: int = _f(10, _at_least(1), doc="evaluate every k rounds (and after the last round)")
    stop_after: int = _f(0, _at_least(0), doc="if > 0: checkpoint and stop (exit 3) after this round, as if signalled")


@dataclass(frozen=True)
class DataConfig:
    name: str = _f("synthetic", _one_of("synthetic"), doc="dataset")
    n_clients: int = _f(300, _at_least(1), doc="clients that train")
    unseen_clients: int = _f(30, _at_least(0), doc="extra clients never trained on; adapted and evaluated at each eval")
    dim: int = _f(150, _at_least(1), doc="synthetic: feature dimension d")
    n_components: int = _f(3, _at_least(1), doc="synthetic: true mixture components")
    alpha: float = _f(0.4, _positive(), doc="synthetic: Dirichlet concentration of client mixture weights")
    noise_std: float = _f(0.1, _at_least(0.0), doc="synthetic: std of the label noise inside the sigmoid")
    test_per_client: int = _f(500, _at_least(1), doc="synthetic: test samples per client")
    min_train: int = _f(50, _at_least(1), doc="synthetic: train size = min(lognormal(4, 2) + min_train, max_train)")
    max_train: int = _f(1000, _at_least(1), doc="synthetic: cap on the train size per client")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _f("linear", _one_of("linear"), doc="model architecture")


@dataclass(frozen=True)
class AlgorithmConfig:
    name: str = _f("fedem", _one_of("fedem", "fedavg", "local"), doc="fedem | fedavg | local")
    n_components: int = _f(3, _at_least(1), doc="fedem: mixture components M")
    adapt_iters: int = _f(50, _at_least(0), doc="fedem: E-step/pi iterations for clients unseen in training")


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
    participation: float = _f(1.0, _rule(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"), doc="share of clients sampled per round")
    device: str = _f("cpu", _one_of("cpu", "cuda", "auto"), doc="cpu | cuda | auto (node-local GPU when present)")
    allow_oversubscribe: bool = _f(False, doc="let more ranks than GPUs share a node's GPUs")


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
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def check_world(self, world_size: int) -> None:
        """Rules that need the number of ranks (known without communication)."""
        if world_size > self.data.n_clients:
            raise ConfigError(f"data.n_clients must be >= the number of MPI ranks ({world_size}), "
                              f"got {self.data.n_clients}")


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(path: str, typ: type, value: Any) -> Any:
    ok = (isinstance(value, bool) if typ is bool else
          isinstance(value, int) and not isinstance(value, bool) if typ is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if typ is float else
          isinstance(value, typ))
    if not ok:
        raise ConfigError(f"{path} must be {_TYPE_NAMES[typ]}, got {value!r}")
    return float(value) if typ is float else value


def _build(cls: type, raw: Any, path: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in known:
            raise ConfigError(f"{path}.{key} is not a known key (known: {', '.join(known)})".lstrip("."))
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


def parse_config(raw: Any) -> Config:
    """Validate a mapping (from YAML) into a frozen Config."""
    cfg = _build(Config, raw, "")
    if cfg.data.min_train > cfg.data.max_train:
        raise ConfigError(f"data.min_train must be <= data.max_train ({cfg.data.max_train}), got {cfg.data.min_train}")
    return cfg


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
            raise ConfigError(f"--set {key}: cannot parse value {text!r}: {exc}") from None
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
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return parse_config(apply_overrides(raw or {}, overrides or []))


def config_to_yaml(cfg: Config) -> str:
    """The resolved config (every default filled in) as YAML text."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def reference() -> list[tuple[str, Any, str]]:
    """(key, default, doc) for every key: the README's config reference comes from here."""
    rows = []
    for sec in fields(Config):
        for f in fields(sec.default_factory()):
            rows.append((f"{sec.name}.{f.name}", f.default, f.metadata.get("doc", "")))
    return rows
