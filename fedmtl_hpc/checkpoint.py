"""HDF5 checkpoints: layout, atomic write, verification, loading.

Layout (``format_version`` 4; see docs/checkpoint-format.md; versions 1 to 3 still load)::

    /                      attrs: format_version, producer, round, rounds_total, algorithm,
                                  n_clients, n_shared, n_params, world_size, config_sha256,
                                  params_sha256, complete, content_sha256 (written last: SHA-256 of
                                  every other attribute and dataset); mode (decentralized runs only)
    /config                YAML text of the resolved config (the run's exact settings)
    /global/params         float32 [K, P]   shared components; attr layout (JSON). Decentralized:
                                            the network average of the clients' own components.
                                            Absent when the program has no shared stack (linear MTL)
    /clients/ids           int64   [N]      client ids (training clients); with shards: virtual
                                            datasets over the shard files (see "Shards" below)
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
      /topology/edge_weight float64 [E]     W[i, j] on each edge (W is sparse: edges + diagonal)
      /topology/self_weight float64 [N]     W's diagonal (version <= 3 files held a dense /topology/W)
                           attrs: kind, weights, seed, change_every, p, n_nodes, spectral_gap,
                                  graph_round, period, next_round, schedule (the schedule is
                                  stateless: (seed, next_round) is its whole state)
    /metrics/<column>      float64 [R]      the metrics rows so far (timing columns excluded);
                           attrs pending_<column>: totals since the last row (bytes_exchanged)

Shards: a run on more than one rank never gathers client rows to rank 0. Each rank writes
its own rows to ``ckpt-<round>.shards-<ranks>/shard-<rank>.h5`` (the /clients datasets for
rows [row_start, row_stop), its own ``content_sha256``); then rank 0 writes the small master
``ckpt-<round>.h5``, whose /clients datasets are HDF5 virtual datasets over the shards (h5ls,
h5dump and h5py see one logical file) and whose root attr ``shards`` (JSON) lists every
shard's file, rows and digest. The master, written and renamed last, is the commit point: a
set whose master is missing was never written; a master whose shard is missing or differs
from its recorded digest fails ``verify``. One rank writes one self-contained file.

Files are written under a temporary name, flushed, fsynced and renamed (then the
directory is fsynced), so a reader never sees half a file.
Every array is stored with the Fletcher-32 checksum filter; ``verify`` reads
everything back. Nothing is pickled; no wall-clock time is stored, so two
identical runs write byte-identical files.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field

import h5py
import numpy as np

from . import __version__
from .atomic import fsync_path
from .errors import CheckpointError, FedMTLError, storage_cause, storage_error

__all__ = ["FORMAT_VERSION", "Snapshot", "save", "verify", "read_config", "load", "newest_valid", "list_checkpoints"]

FORMAT_VERSION = 4
# version 1 had /optimizer instead of /algorithm; 3 added content_sha256; 4: shards, sparse /topology
_READABLE = (1, 2, 3, 4)
_DIGEST = "content_sha256"
_NAME = re.compile(r"ckpt-(\d{6,})\.h5$")
_SHARD_DIR = re.compile(r"ckpt-(\d{6,})\.shards-(\d+)$")
_ROWS = ("clients/ids", "clients/weight")      # plus every clients/state/<name>: the row-sharded datasets


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
    n_rows: int | None = None                     # set: row-sharded, client_* hold this rank's rows of n_rows
    row_start: int = 0                            # the first of them (ranks hold contiguous blocks)


def _ds(group: h5py.Group, name: str, data: np.ndarray, **attrs) -> None:
    data = np.ascontiguousarray(data)
    kw = {"fletcher32": True, "chunks": True} if data.size else {}
    d = group.create_dataset(name, data=data, track_times=False, **kw)
    d.attrs.update(attrs)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def save(snap: Snapshot | None, directory: str, keep: int, comm=None) -> str | None:
    """Write ``ckpt-<round>.h5`` atomically into directory; keep the newest ``keep``.

    Collective when ``snap`` is row-sharded (``n_rows`` set) and ``comm`` has more than one
    rank: every rank writes its shard, rank 0 the master (see the module doc); every rank
    returns the master's path. Otherwise the rank holding the whole snapshot writes one file;
    ranks passing None (a program that gathered to rank 0) return None.

    A storage failure (full, read-only or vanished file system, I/O error) removes the
    temporary file and raises ``StorageError`` naming the file; the checkpoints already
    there are untouched. Only the last level of ``directory`` is created: a run directory
    that vanished is an error, not silently made anew.
    """
    if snap is None:
        return None
    final = os.path.join(directory, f"ckpt-{snap.round:06d}.h5")
    if snap.n_rows is None or comm is None or comm.size == 1:
        _commit(final, lambda tmp: _write(snap, tmp), "checkpoint", directory)
    else:
        shards = _write_shard(snap, directory, comm)
        if comm.rank != 0:
            return final
        _commit(final, lambda tmp: _write(snap, tmp, shards), "checkpoint", directory)
    _rotate(directory, keep)
    return final


def _commit(final: str, write, what: str, *dirs: str) -> None:
    """Make ``dirs`` (one level each, in order), write(tmp), fsync, rename to final, fsync the
    directory; storage errors name ``final``. Ranks may race to make the same directory."""
    tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.tmp{os.getpid()}")
    try:
        for d in dirs:
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, final)
    except BaseException as exc:
        _discard(tmp)
        cause = storage_cause(exc)
        known = cause is not None and (getattr(cause, "errno", None) or "errno" in str(cause))
        if not known and isinstance(exc, Exception) and not os.path.isdir(os.path.dirname(final)):
            # the directory vanished under the write: HDF5's message then often has no errno
            cause = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        if cause is not None:
            raise storage_error(what, final, cause) from None
        raise
    try:
        fsync_path(os.path.dirname(final))
    except OSError as exc:  # the file is complete and in place; its rename may not be durable
        raise storage_error(what, final, exc, verb="sync the directory of") from None


def _write_shard(snap: Snapshot, directory: str, comm) -> list[dict]:
    """Collective: write this rank's shard; rank 0 gets every shard's {file, rows, content_sha256}.

    A rank that cannot write its shard is agreed on (one Allgatherv of a small table, which is
    also the barrier before the master): the lowest failing rank raises its one-line error, which
    aborts the job (``runner._guarded``); the others wait in a barrier to be ended with it, so the
    user reads one line, not one per rank.
    """
    sub = f"ckpt-{snap.round:06d}.shards-{comm.size}"
    rel = f"{sub}/shard-{comm.rank:05d}.h5"
    start, stop = snap.row_start, snap.row_start + len(snap.client_ids)
    err, digest = None, "00" * 32
    try:
        _commit(os.path.join(directory, rel), lambda tmp: _write_rows_file(snap, tmp, start, stop, comm.rank),
                "checkpoint shard", directory, os.path.join(directory, sub))
        with h5py.File(os.path.join(directory, rel), "r") as f:
            digest = str(f.attrs[_DIGEST])
    except FedMTLError as exc:
        err = exc
    mine = np.array([[start, stop, err is not None, *np.frombuffer(bytes.fromhex(digest), dtype=np.int64)]],
                    dtype=np.int64)
    table = comm.allgather_rows(mine, [1] * comm.size)
    failed = np.flatnonzero(table[:, 2])
    if failed.size:
        if comm.rank == failed[0]:
            raise err
        comm.barrier()   # never returns: the failing rank's MPI_Abort ends this rank too
    if comm.rank != 0:
        return []
    return [{"file": f"{sub}/shard-{r:05d}.h5", "rows": [int(row[0]), int(row[1])], _DIGEST: row[3:].tobytes().hex()}
            for r, row in enumerate(table)]


def _write_rows_file(snap: Snapshot, tmp: str, start: int, stop: int, rank: int) -> None:
    with h5py.File(tmp, "w") as f:
        f.attrs.update({"format_version": FORMAT_VERSION, "producer": f"fedmtl_hpc {__version__}",
                        "kind": "shard", "round": snap.round, "rank": rank, "row_start": start, "row_stop": stop})
        _write_rows(f, snap)
        f.attrs["complete"] = 1
        f.attrs[_DIGEST] = _content_digest(f)[0]
        f.flush()


def _write_rows(f: h5py.File, snap: Snapshot, shards: list[dict] | None = None) -> None:
    """/clients: the snapshot's own rows, or (``shards``) virtual datasets over the shard files."""
    c = f.create_group("clients", track_times=False)
    s = c.create_group("state", track_times=False)
    # np.asarray, not astype: no copy of rows already in the stored dtype (a shard may be large)
    rows = {"clients/ids": np.asarray(snap.client_ids, np.int64), "clients/weight": np.asarray(snap.client_weight, np.float64),
            **{f"clients/state/{k}": np.asarray(snap.client_state[k], np.float32) for k in sorted(snap.client_state)}}
    units = {"clients/weight": "aggregation weight (train samples)"}
    for name, a in rows.items():
        grp = c if name.count("/") == 1 else s
        leaf = name.rsplit("/", 1)[1]
        if shards is None:
            _ds(grp, leaf, a, **({"units": units[name]} if name in units else {}))
            continue
        d = _virtual(grp, leaf, (shards[-1]["rows"][1], *a.shape[1:]), a.dtype,
                     [(*sh["rows"], sh["file"]) for sh in shards], name)
        if name in units:
            d.attrs["units"] = units[name]


def _virtual(group: h5py.Group, leaf: str, shape: tuple, dtype, sources: list, name: str) -> h5py.Dataset:
    """A virtual dataset whose rows [lo, hi) are dataset ``name`` of file ``f`` for each (lo, hi, f).

    Built on the low-level API because h5py's ``create_virtual_dataset`` stores a modification
    time (identical runs must write identical files). A missing source reads as the fill value
    (HDF5 does not fail): -1 / NaN make that visible; ``verify`` and ``load`` refuse it first.
    """
    dtype = np.dtype(dtype)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_fill_value(np.array([-1 if dtype.kind == "i" else np.nan], dtype=dtype))
    dcpl.set_obj_track_times(False)
    for lo, hi, path in sources:
        if hi > lo:
            sel = h5py.h5s.create_simple(shape)
            sel.select_hyperslab((lo, *[0] * (len(shape) - 1)), (hi - lo, *shape[1:]))
            dcpl.set_virtual(sel, path.encode(), name.encode(), h5py.h5s.create_simple((hi - lo, *shape[1:])))
    dsid = h5py.h5d.create(group.id, leaf.encode(), h5py.h5t.py_create(dtype, logical=1),
                           h5py.h5s.create_simple(shape), dcpl=dcpl)
    return h5py.Dataset(dsid)


def _rotate(directory: str, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints; remove older ones, their shards, orphaned shard
    directories (a set whose master was never written) and dead writers' temporaries."""
    files = list_checkpoints(directory)
    kept = {_shard_dir_of(p) for p in files[-keep:]} - {None}
    old = files[:-keep] + _stale_temporaries(directory)
    orphans = [p for p in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.shards-*"))
               if _SHARD_DIR.search(p) and os.path.basename(p) not in kept]
    for path in old + orphans:
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error("old checkpoint", path, exc, verb="remove") from None


def _shard_dir_of(master: str) -> str | None:
    """The shard directory a master file refers to (None: a self-contained file or unreadable)."""
    try:
        with h5py.File(master, "r") as f:
            shards = json.loads(f.attrs.get("shards", "[]"))
    except Exception:  # noqa: BLE001 - a damaged master keeps nothing alive; verify reports it
        return None
    return shards[0]["file"].split("/", 1)[0] if shards else None


def _stale_temporaries(directory: str) -> list[str]:
    """``.ckpt-*.tmp*`` files of writers that died (SIGKILL, node loss) before they could clean up.

    Only the one job that owns the run directory writes there, and every rank's shard is
    renamed before rank 0 writes the master, so once a checkpoint has been written every other
    temporary file is stale. They are hidden names that ``list_checkpoints`` never returns;
    this only reclaims their space.
    """
    d = glob.escape(directory)
    return sorted(glob.glob(os.path.join(d, ".ckpt-*.h5.tmp*")) +
                  glob.glob(os.path.join(d, "ckpt-*.shards-*", ".shard-*.h5.tmp*")))


def _discard(path: str) -> None:
    """Remove a temporary file if it is there; never raises (the caller reports the first error)."""
    try:
        os.remove(path)
    except OSError:
        pass


def _write(snap: Snapshot, tmp: str, shards: list[dict] | None = None) -> None:
    """The HDF5 file of a snapshot at tmp (flushed; the caller fsyncs and renames); with
    ``shards`` the master of a sharded set (its /clients datasets are virtual)."""
    n_clients = snap.n_rows if shards is not None else len(snap.client_ids)
    with h5py.File(tmp, "w", track_order=True) as f:
        f.attrs.update({"format_version": FORMAT_VERSION, "producer": f"fedmtl_hpc {__version__}",
                        "round": snap.round, "algorithm": snap.algorithm,
                        "n_clients": n_clients,
                        "n_shared": 0 if snap.shared is None else snap.shared.shape[0],
                        "n_params": snap.shared.shape[1] if snap.shared is not None and snap.shared.ndim == 2 else 0,
                        "config_sha256": hashlib.sha256(snap.config_text.encode()).hexdigest(),
                        "params_sha256": "" if snap.shared is None else _sha(snap.shared), **snap.attrs})
        if shards is not None:
            f.attrs.update({"n_shards": len(shards), "shards": json.dumps(shards)})
        f.create_dataset("config", data=snap.config_text, dtype=h5py.string_dtype(), track_times=False)
        if snap.shared is not None:  # programs without a shared stack (linear MTL) have no /global
            g = f.create_group("global", track_times=False)
            _ds(g, "params", snap.shared.astype(np.float32), units="model parameters, one row per component",
                layout=json.dumps(snap.layout))
        _write_rows(f, snap, shards)
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
            t, topo = f.create_group("topology", track_times=False), snap.topology
            t.attrs.update(topo["attrs"])
            _ds(t, "edges", np.asarray(topo["edges"], dtype=np.int64).reshape(-1, 2),
                units="undirected client-id pairs, i < j")
            _ds(t, "edge_weight", np.asarray(topo["edge_weight"], dtype=np.float64),
                units="mixing weight W[i, j] = W[j, i] of each edge (W is symmetric and doubly stochastic)")
            _ds(t, "self_weight", np.asarray(topo["self_weight"], dtype=np.float64),
                units="mixing weight W[i, i]; W is zero off the edges and the diagonal")
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
    """Open, check the format and every checksum (every shard's too); return a summary dict or
    raise CheckpointError naming the file and the fault in one line."""
    try:
        with h5py.File(path, "r") as f:
            _check_sealed(f, path)
            digest, shapes = _content_digest(f)  # reads every byte: Fletcher-32 is checked here
            if "global" in f and _sha(f["global/params"][()]) != f.attrs["params_sha256"]:
                raise CheckpointError(f"{path}: global/params do not match params_sha256")
            shards = json.loads(f.attrs.get("shards", "[]"))
            for sh in shards:
                _verify_shard(path, sh)
            info = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            info["path"], info["datasets"] = path, shapes
            info["shards"] = shards
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


def _check_sealed(f: h5py.File, path: str) -> None:
    """Format version, the complete mark and the stored content digest (checked by the caller)."""
    if f.attrs.get("format_version") not in _READABLE:
        raise CheckpointError(f"{path}: format_version {f.attrs.get('format_version')!r}, "
                              f"expected one of {_READABLE}")
    if f.attrs.get("complete") != 1:
        raise CheckpointError(f"{path}: not marked complete (an interrupted write)")
    stored = f.attrs.get(_DIGEST)
    if stored is None and f.attrs["format_version"] >= 3:
        raise CheckpointError(f"{path}: no {_DIGEST} attribute (damaged)")
    if stored is not None and stored != _content_digest(f)[0]:
        raise CheckpointError(f"{path}: content does not match {_DIGEST} (damaged)")


def _verify_shard(master: str, sh: dict) -> None:
    """One shard of a master: present, sealed, the digest and rows the master recorded."""
    path = os.path.join(os.path.dirname(master), sh["file"])
    if not os.path.isfile(path):
        raise CheckpointError(f"{master}: shard {sh['file']} is missing")
    try:
        with h5py.File(path, "r") as f:
            try:
                _check_sealed(f, path)
            except CheckpointError as exc:
                raise CheckpointError(f"{master}: shard {sh['file']} is damaged ({exc})") from None
            rows = [int(f.attrs["row_start"]), int(f.attrs["row_stop"])]
            if f.attrs[_DIGEST] != sh[_DIGEST] or rows != list(sh["rows"]):
                raise CheckpointError(f"{master}: shard {sh['file']} is not the one this checkpoint "
                                      f"recorded (content_sha256 or rows differ)")
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file can make h5py fail in many ways
        raise CheckpointError(f"{master}: shard {sh['file']} is damaged ({_one_line(exc)})") from None


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
    dtype, shape and bytes, in name order; plus the dataset shapes (for ``verify``'s summary).
    A virtual dataset contributes its mapping (source file, dataset and rows), not the bytes:
    a master is sealed over its shards' recorded digests, each shard over its own bytes."""
    h, shapes, names = hashlib.sha256(), {}, []
    f.visit(names.append)
    for name in [""] + sorted(names):
        obj = f[name] if name else f
        h.update(b"\0name:" + name.encode())
        for k in sorted(obj.attrs.keys()):
            if not name and k == _DIGEST:
                continue
            h.update(b"\0attr:" + k.encode() + b"=" + _canon(obj.attrs[k]))
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            shapes[name] = list(obj.shape)
            h.update(b"\0virtual:" + str(obj.dtype).encode() + repr(obj.shape).encode())
            for m in obj.virtual_sources():
                h.update(repr((m.file_name, m.dset_name, m.vspace.get_select_bounds(),
                               m.src_space.get_select_type())).encode())
        elif isinstance(obj, h5py.Dataset):
            shapes[name] = list(obj.shape)
            h.update(b"\0data:" + str(obj.dtype).encode())
            _hash_data(h, obj)
    return h.hexdigest(), shapes


_SLAB = 4 << 20   # bytes read at a time: hashing a shard of big client rows never holds it again


def _hash_data(h, d: h5py.Dataset) -> None:
    """``h.update(_canon(d[()]))``, reading an array in slabs of rows (the same bytes)."""
    if d.ndim == 0 or d.size == 0 or d.dtype.kind == "O":
        h.update(_canon(d[()]))
        return
    h.update(d.dtype.str.encode() + repr(d.shape).encode())
    step = max(1, _SLAB // max(1, d.dtype.itemsize * (d.size // d.shape[0])))
    for i in range(0, d.shape[0], step):
        h.update(np.ascontiguousarray(d[i:i + step]))   # the buffer itself: no bytes copy


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
            for sh in json.loads(f.attrs.get("shards", "[]")):  # HDF5 reads a missing source as fill values
                if not os.path.isfile(os.path.join(os.path.dirname(path), sh["file"])):
                    raise CheckpointError(f"{path}: shard {sh['file']} is missing")
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
    except CheckpointError:
        raise
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
    """/topology as {"edges", "edge_weight", "self_weight", "attrs"}; a version <= 3 file's dense
    /topology/W is read into the same sparse parts (W on the edges and its diagonal)."""
    if "topology" not in f:
        return None
    t = f["topology"]
    edges = t["edges"][()].reshape(-1, 2)
    if "W" in t:
        W = t["W"][()]
        ew, sw = W[edges[:, 0], edges[:, 1]], np.diag(W).copy()
    else:
        ew, sw = t["edge_weight"][()], t["self_weight"][()]
    return {"edges": edges, "edge_weight": ew, "self_weight": sw,
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
