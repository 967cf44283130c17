"""HDF5 checkpoints: layout, atomic write, verification, loading.

Layout (``format_version`` 3; see docs/checkpoint-format.md; versions 1 and 2 still load)::

    /                      attrs: format_version, producer, round, rounds_total, algorithm,
                                  n_clients, n_shared, n_params, world_size, config_sha256,
                                  params_sha256, complete, content_sha256 (written last: SHA-256 of
                                  every other attribute and dataset); mode (decentralized runs only)
    /config                YAML text of the resolved config (the run's exact settings)
    /global/params         float32 [K, P]   shared components; attr layout (JSON). Decentralized:
                                            the network average of the clients' own components.
                                            Absent when the program has no shared stack (linear MTL)
    /clients/ids           int64   [N]      client ids (training clients)
    /clients/weight        float64 [N]      aggregation weights (n_t)
    /clients/state/<name>  float32 [N, ...] private state (FedEM: pi [N, M]; Local: params [N, 1, P];
                                            decentralized: components [N, K, P], each client's own copy)
    /rng                   attrs: seed, next_round, scheme (counter-based streams: no hidden state)
    /algorithm             attrs and datasets the algorithm's ``state_dict`` declares (name, optimizer
                           record, lr schedule; server state such as Clustered FL's cluster ids)
    /<group>               further groups a program declares (``Snapshot.groups``), e.g. /mtl
    /partition             attrs: kind, seed, sha256
    /topology              decentralized runs only: the graph of the last round (round - 1)
      /topology/edges      int64   [E, 2]   undirected client pairs i < j
      /topology/W          float64 [N, N]   its mixing matrix
                           attrs: kind, weights, seed, change_every, p, n_nodes, spectral_gap,
                                  graph_round, period, next_round, schedule (the schedule is
                                  stateless: (seed, next_round) is its whole state)
    /metrics/<column>      float64 [R]      the metrics rows so far (timing columns excluded);
                           attrs pending_<column>: totals since the last row (bytes_exchanged)

Files are written by rank 0 under a temporary name, flushed, fsynced and
renamed (then the directory is fsynced), so a reader never sees half a file.
Every array is stored with the Fletcher-32 checksum filter; ``verify`` reads
everything back. Nothing is pickled; no wall-clock time is stored, so two
identical runs write byte-identical files.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field

import h5py
import numpy as np

from . import __version__
from .atomic import fsync_path
from .errors import CheckpointError, storage_cause, storage_error

__all__ = ["FORMAT_VERSION", "Snapshot", "save", "verify", "read_config", "load", "newest_valid", "list_checkpoints"]

FORMAT_VERSION = 3
_READABLE = (1, 2, 3)   # version 1 had /optimizer instead of /algorithm; 3 added content_sha256
_DIGEST = "content_sha256"
_NAME = re.compile(r"ckpt-(\d{6,})\.h5$")


@dataclass
class Snapshot:
    """Everything needed to resume a run exactly."""

    round: int
    algorithm: str
    config_text: str
    shared: np.ndarray | None               # [K, P] float32; None: no shared stack (no /global)
    layout: list
    client_ids: np.ndarray                  # [N] int64
    client_weight: np.ndarray               # [N] float64
    client_state: dict[str, np.ndarray]     # name -> [N, ...]
    seed: int
    partition: dict
    groups: dict = field(default_factory=dict)   # name -> {"attrs": {...}, "arrays": {name: ndarray}}
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    pending: dict = field(default_factory=dict)   # deterministic totals since the last metrics row
    attrs: dict = field(default_factory=dict)
    topology: dict | None = None                  # decentralized: {"edges", "W", "attrs"}
    rng_scheme: str = ""                          # /rng attr scheme; empty: rng.SCHEME (the federated streams)


def _ds(group: h5py.Group, name: str, data: np.ndarray, **attrs) -> None:
    data = np.ascontiguousarray(data)
    kw = {"fletcher32": True, "chunks": True} if data.size else {}
    d = group.create_dataset(name, data=data, track_times=False, **kw)
    d.attrs.update(attrs)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def save(snap: Snapshot, directory: str, keep: int) -> str:
    """Write ``ckpt-<round>.h5`` atomically into directory; keep the newest ``keep``.

    A storage failure (full, read-only or vanished file system, I/O error) removes the
    temporary file and raises ``StorageError`` naming the checkpoint; the checkpoints
    already there are untouched. Only the last level of ``directory`` is created: a run
    directory that vanished is an error, not silently made anew.
    """
    final = os.path.join(directory, f"ckpt-{snap.round:06d}.h5")
    tmp = os.path.join(directory, f".ckpt-{snap.round:06d}.h5.tmp{os.getpid()}")
    try:
        if not os.path.isdir(directory):
            os.mkdir(directory)
        _write(snap, tmp)
        fsync_path(tmp)
        os.replace(tmp, final)
    except BaseException as exc:
        _discard(tmp)
        cause = storage_cause(exc)
        if cause is not None:
            raise storage_error("checkpoint", final, cause) from None
        raise
    try:
        fsync_path(directory)
    except OSError as exc:  # the file is complete and in place; its rename may not be durable
        raise storage_error("checkpoint", final, exc, verb="sync the directory of") from None
    for old in list_checkpoints(directory)[:-keep] + _stale_temporaries(directory):
        try:
            os.remove(old)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error("old checkpoint", old, exc, verb="remove") from None
    return final


def _stale_temporaries(directory: str) -> list[str]:
    """``.ckpt-*.tmp*`` files of writers that died (SIGKILL, node loss) before they could clean up.

    Only rank 0 of the one job that owns the run directory writes there, so once a checkpoint
    has been written every other temporary file is stale. They are hidden names that
    ``list_checkpoints`` never returns; this only reclaims their space.
    """
    return sorted(glob.glob(os.path.join(glob.escape(directory), ".ckpt-*.h5.tmp*")))


def _discard(path: str) -> None:
    """Remove a temporary file if it is there; never raises (the caller reports the first error)."""
    try:
        os.remove(path)
    except OSError:
        pass


def _write(snap: Snapshot, tmp: str) -> None:
    """The HDF5 file of a snapshot at tmp (flushed; the caller fsyncs and renames)."""
    with h5py.File(tmp, "w", track_order=True) as f:
        f.attrs.update({"format_version": FORMAT_VERSION, "producer": f"fedmtl_hpc {__version__}",
                        "round": snap.round, "algorithm": snap.algorithm,
                        "n_clients": len(snap.client_ids),
                        "n_shared": 0 if snap.shared is None else snap.shared.shape[0],
                        "n_params": snap.shared.shape[1] if snap.shared is not None and snap.shared.ndim == 2 else 0,
                        "config_sha256": hashlib.sha256(snap.config_text.encode()).hexdigest(),
                        "params_sha256": "" if snap.shared is None else _sha(snap.shared), **snap.attrs})
        f.create_dataset("config", data=snap.config_text, dtype=h5py.string_dtype(), track_times=False)
        if snap.shared is not None:  # programs without a shared stack (linear MTL) have no /global
            g = f.create_group("global", track_times=False)
            _ds(g, "params", snap.shared.astype(np.float32), units="model parameters, one row per component",
                layout=json.dumps(snap.layout))
        c = f.create_group("clients", track_times=False)
        _ds(c, "ids", snap.client_ids.astype(np.int64))
        _ds(c, "weight", snap.client_weight.astype(np.float64), units="aggregation weight (train samples)")
        s = c.create_group("state", track_times=False)
        for k in sorted(snap.client_state):
            _ds(s, k, snap.client_state[k].astype(np.float32))
        r = f.create_group("rng", track_times=False)
        if snap.rng_scheme:
            scheme = snap.rng_scheme
        else:
            from .rng import SCHEME as scheme
        r.attrs.update({"seed": snap.seed, "next_round": snap.round, "scheme": scheme})
        for name in sorted(snap.groups):
            grp, part = f.create_group(name, track_times=False), snap.groups[name]
            grp.attrs.update(part.get("attrs", {}))
            for k in sorted(part.get("arrays", {})):
                _ds(grp, k, np.asarray(part["arrays"][k]))
        f.create_group("partition", track_times=False).attrs.update(snap.partition)
        if snap.topology is not None:
            t = f.create_group("topology", track_times=False)
            t.attrs.update(snap.topology["attrs"])
            _ds(t, "edges", np.asarray(snap.topology["edges"], dtype=np.int64).reshape(-1, 2),
                units="undirected client-id pairs, i < j")
            _ds(t, "W", np.asarray(snap.topology["W"], dtype=np.float64),
                units="mixing weight: symmetric, doubly stochastic, W[i, j] > 0 only on edges and the diagonal")
        m = f.create_group("metrics", track_times=False)
        m.attrs.update({f"pending_{k}": v for k, v in snap.pending.items()})
        for k, v in snap.metrics.items():
            _ds(m, k, np.asarray(v, dtype=np.float64))
        f.attrs["complete"] = 1  # a file without it was never finished
        # last: a digest of everything above, so a flipped byte anywhere (an attribute, the config
        # text: HDF5 metadata has no checksum of its own) cannot pass verify as a different file
        f.attrs[_DIGEST] = _content_digest(f)[0]
        f.flush()


def list_checkpoints(directory: str) -> list[str]:
    """Finished checkpoint files in directory, oldest first (by round)."""
    files = [p for p in glob.glob(os.path.join(directory, "ckpt-*.h5")) if _NAME.search(p)]
    return sorted(files, key=lambda p: int(_NAME.search(p).group(1)))


def verify(path: str) -> dict:
    """Open, check the format and every checksum; return a summary dict or raise CheckpointError."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format_version") not in _READABLE:
                raise CheckpointError(f"{path}: format_version {f.attrs.get('format_version')!r}, "
                                      f"expected one of {_READABLE}")
            if f.attrs.get("complete") != 1:
                raise CheckpointError(f"{path}: not marked complete (an interrupted write)")
            digest, shapes = _content_digest(f)  # reads every byte: Fletcher-32 is checked here
            stored = f.attrs.get(_DIGEST)
            if stored is None and f.attrs["format_version"] >= 3:
                raise CheckpointError(f"{path}: no {_DIGEST} attribute (damaged)")
            if stored is not None and stored != digest:
                raise CheckpointError(f"{path}: content does not match {_DIGEST} (damaged)")
            if "global" in f and _sha(f["global/params"][()]) != f.attrs["params_sha256"]:
                raise CheckpointError(f"{path}: global/params do not match params_sha256")
            info = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            info["path"], info["datasets"] = path, shapes
            info["client_state"] = sorted(f["clients/state"].keys())
            info["partition"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f["partition"].attrs.items()}
            for name in ("mtl",):
                if name in f:
                    info[name] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f[name].attrs.items()}
            if "topology" in f:
                info["topology"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f["topology"].attrs.items()}
            return info
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file can make h5py fail in many ways
        raise CheckpointError(f"{path} is not a readable fedmtl_hpc checkpoint: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _canon(value) -> bytes:
    """Bytes that identify an attribute or dataset value (type, shape and content)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return b"O" + repr(value.shape).encode() + b"".join(_canon(v) + b"\0" for v in value.ravel())
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        return a.dtype.str.encode() + repr(a.shape).encode() + np.ascontiguousarray(a).tobytes()
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"b" + value
    return b"r" + repr(value).encode()


def _content_digest(f: h5py.File) -> tuple[str, dict]:
    """SHA-256 over every object's name, attributes (sorted; not the digest itself) and dataset
    dtype, shape and bytes, in name order; plus the dataset shapes (for ``verify``'s summary)."""
    h, shapes, names = hashlib.sha256(), {}, []
    f.visit(names.append)
    for name in [""] + sorted(names):
        obj = f[name] if name else f
        h.update(b"\0name:" + name.encode())
        for k in sorted(obj.attrs.keys()):
            if not name and k == _DIGEST:
                continue
            h.update(b"\0attr:" + k.encode() + b"=" + _canon(obj.attrs[k]))
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            shapes[name] = list(np.shape(data))
            h.update(b"\0data:" + str(obj.dtype).encode() + _canon(data))
    return h.hexdigest(), shapes


def read_config(path: str) -> str:
    """The config text stored in a checkpoint (reads nothing else)."""
    try:
        with h5py.File(path, "r") as f:
            return f["config"][()].decode()
    except Exception as exc:  # noqa: BLE001 - a damaged file can make h5py fail in many ways
        raise CheckpointError(f"{path} is not a readable fedmtl_hpc checkpoint: {_one_line(exc)}") from None


def load(path: str, rows: range | None = None) -> Snapshot:
    """Read a checkpoint; ``rows`` selects the client rows this rank owns (all when None)."""
    try:
        with h5py.File(path, "r") as f:
            sel = slice(None) if rows is None else slice(rows.start, rows.stop)
            pa = f["partition"].attrs
            return Snapshot(
                round=int(f.attrs["round"]), algorithm=str(f.attrs["algorithm"]),
                config_text=f["config"][()].decode(),
                shared=f["global/params"][()] if "global" in f else None,
                layout=json.loads(f["global/params"].attrs["layout"]) if "global" in f else [],
                client_ids=f["clients/ids"][sel], client_weight=f["clients/weight"][sel],
                client_state={k: f["clients/state"][k][sel] for k in f["clients/state"]},
                seed=int(f["rng"].attrs["seed"]),
                partition={k: (v.item() if hasattr(v, "item") else v) for k, v in pa.items()},
                groups=_load_groups(f),
                metrics={k: f["metrics"][k][()] for k in f["metrics"]},
                pending={k[8:]: float(v) for k, v in f["metrics"].attrs.items() if k.startswith("pending_")},
                topology=_load_topology(f))
    except Exception as exc:  # noqa: BLE001 - a damaged file can make h5py fail in many ways
        raise CheckpointError(f"{path} is not a readable fedmtl_hpc checkpoint: {_one_line(exc)}") from None


_CORE = ("config", "global", "clients", "rng", "partition", "topology", "metrics", "optimizer")


def _load_groups(f: h5py.File) -> dict:
    """Every group beyond the core layout (/algorithm, /mtl, ...) as {"attrs", "arrays"}."""
    out = {}
    for name, grp in f.items():
        if name in _CORE or not isinstance(grp, h5py.Group):
            continue
        out[name] = {"attrs": {k: (v.item() if hasattr(v, "item") else v) for k, v in grp.attrs.items()},
                     "arrays": {k: d[()] for k, d in grp.items() if isinstance(d, h5py.Dataset)}}
    return out


def _load_topology(f: h5py.File) -> dict | None:
    if "topology" not in f:
        return None
    t = f["topology"]
    return {"edges": t["edges"][()].reshape(-1, 2), "W": t["W"][()],
            "attrs": {k: (v.item() if hasattr(v, "item") else v) for k, v in t.attrs.items()}}


def newest_valid(directory: str, warn=print) -> str | None:
    """The newest checkpoint in directory that verifies (older ones are tried in turn)."""
    for path in reversed(list_checkpoints(directory)):
        try:
            verify(path)
            return path
        except CheckpointError as exc:
            warn(f"warning: skipping {_one_line(exc)}")
    return None
