"""Writers of tiny (or full-size) dataset files in exactly the released formats.

Shared by the reader tests, the build tests, the MPI data tests and
bench/data.py: Python-2 CIFAR pickles, gzip IDX (MNIST / Fashion-MNIST /
EMNIST, EMNIST transposed as released), LEAF JSON (FEMNIST, Shakespeare).
Images carry their label (a class-dependent brightness) so that a working
pipeline can learn them; nothing else about the pixels matters.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np

__all__ = ["NAMES10", "py2_dumps", "cifar_batch", "write_cifar10", "write_cifar100", "TYPE_BYTES",
           "idx_bytes", "write_idx", "write_mnist", "write_emnist", "write_leaf", "write_femnist",
           "write_shakespeare", "leaf_windows"]

NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
           "horse", "ship", "truck"]


# -- CIFAR: Python-2 pickles ---------------------------------------------------
def _emit(obj: object, out: bytearray) -> None:
    """Python-2 cPickle protocol-2 opcodes: str is BINSTRING, arrays numpy 1.x."""
    if isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    elif isinstance(obj, (bytes, str)):  # a Python-2 str: SHORT_BINSTRING/BINSTRING
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        out += (b"U" + bytes([len(raw)]) if len(raw) < 256
                else b"T" + struct.pack("<i", len(raw))) + raw
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        out += (b"K" + bytes([obj]) if 0 <= obj < 256
                else b"J" + struct.pack("<i", obj))
    elif obj is None:
        out += b"N"
    elif isinstance(obj, list):
        out += b"]("
        for value in obj:
            _emit(value, out)
        out += b"e"
    elif isinstance(obj, tuple):
        out += b"("
        for value in obj:
            _emit(value, out)
        out += b"t"
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        # What numpy 1.x under Python 2 writes for an array (as in data_batch_*).
        out += (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                b"K\x00\x85U\x01b\x87R(K\x01")
        _emit(obj.shape, out)
        out += (b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNN"
                b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
        _emit(obj.tobytes(), out)
        out += b"tb"
    else:
        raise TypeError(type(obj))


def py2_dumps(obj: object) -> bytes:
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def _images(rng: np.random.Generator, labels: np.ndarray, n_classes: int, pixels: int) -> np.ndarray:
    """uint8 [n, pixels]: noise around a brightness that encodes the label."""
    base = (labels * (200 // max(n_classes - 1, 1))).astype(np.int16)[:, None]
    noise = rng.integers(0, 56, (len(labels), pixels), dtype=np.int16)
    return (base + noise).astype(np.uint8)


def cifar_batch(rng: np.random.Generator, n: int, n_classes: int = 10, key: str = "labels") -> dict:
    labels = rng.integers(0, n_classes, n)
    return {"batch_label": "training batch 1 of 5",
            key: [int(v) for v in labels],
            "data": _images(rng, labels, n_classes, 3072),
            "filenames": [f"img_{i}.png" for i in range(n)]}


def write_cifar10(root: Path, per_batch: int | list[int] = 10, n_test: int = 10,
                  seed: int = 0) -> dict[str, dict]:
    """``root/cifar-10-batches-py``: data_batch_1..5, test_batch, batches.meta; returns the dicts."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = per_batch if isinstance(per_batch, list) else [per_batch] * 5
    batches = {f"data_batch_{i}": cifar_batch(rng, sizes[i - 1]) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(rng, n_test)
    for name, d in batches.items():
        (folder / name).write_bytes(py2_dumps(d))
    meta = {"num_cases_per_batch": 10000, "label_names": NAMES10, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_dumps(meta))
    return batches


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 40, seed: int = 0) -> dict[str, dict]:
    """``root/cifar-100-python``: train, test, meta; fine label f has coarse label f // 5."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        d = cifar_batch(rng, n, 100, key="fine_labels")
        d["coarse_labels"] = [f // 5 for f in d["fine_labels"]]
        (folder / name).write_bytes(py2_dumps(d))
        out[name] = d
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    (folder / "meta").write_bytes(py2_dumps(meta))
    return out


# -- IDX (MNIST, Fashion-MNIST, EMNIST) ------------------------------------------
TYPE_BYTES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
              np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Raw IDX: 0 0, type byte, ndim, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, TYPE_BYTES[arr.dtype], arr.ndim])
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, level: int = 9) -> Path:
    path.write_bytes(gzip.compress(idx_bytes(arr), compresslevel=level))
    return path


def write_mnist(root: Path, n_train: int = 6, n_test: int = 4,
                seed: int = 0, level: int = 9) -> dict[str, np.ndarray]:
    """The four MNIST / Fashion-MNIST .gz files in ``root``; returns the arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = _images(rng, y, 10, 784).reshape(n, 28, 28)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x, level)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y, level)
        arrays[prefix + "_x"], arrays[prefix + "_y"] = x, y
    return arrays


def write_emnist(root: Path, split: str = "byclass", n_train: int = 40, n_test: int = 10,
                 n_classes: int = 62, seed: int = 0, level: int = 9) -> dict[str, np.ndarray]:
    """``emnist-<split>-{train,test}-*.gz`` in ``root``, images stored transposed as released."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    offset = 1 if split == "letters" else 0
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, n_classes, n)
        upright = _images(rng, y, n_classes, 784).reshape(n, 28, 28)
        stem = f"emnist-{split}-{part}"
        write_idx(root / f"{stem}-images-idx3-ubyte.gz", np.ascontiguousarray(upright.transpose(0, 2, 1)), level)
        write_idx(root / f"{stem}-labels-idx1-ubyte.gz", (y + offset).astype(np.uint8), level)
        arrays[part + "_x"], arrays[part + "_y"] = upright, y
    return arrays


# -- LEAF JSON -------------------------------------------------------------------
def write_leaf(root: Path, split: str,
               files: list[dict[str, tuple[list, list]]]) -> None:
    """One LEAF JSON file per dict {user: (x, y)}, named like LEAF's output."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for i, users in enumerate(files):
        blob = {"users": list(users),
                "num_samples": [len(x) for x, _ in users.values()],
                "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()}}
        (folder / f"all_data_{i}_niid_0_keep_0_{split}_9.json").write_text(
            json.dumps(blob))


def write_femnist(root: Path, sizes: dict[str, int], per_file: int = 3, test_share: float = 0.1,
                  seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """LEAF FEMNIST (train/ + test/, by-sample split) with ``sizes[writer]`` samples each."""
    rng = np.random.default_rng(seed)
    users, files = {}, {"train": [], "test": []}
    names = list(sizes)
    for start in range(0, len(names), per_file):
        chunk = {"train": {}, "test": {}}
        for name in names[start:start + per_file]:
            y = rng.integers(0, 62, sizes[name])
            x = np.round(_images(rng, y, 62, 784) / 255.0, 3)
            users[name] = (x.astype(np.float32), y)
            n_test = max(1, int(sizes[name] * test_share)) if sizes[name] > 1 else 0
            cut = sizes[name] - n_test
            chunk["train"][name] = (x[:cut].tolist(), [int(v) for v in y[:cut]])
            chunk["test"][name] = (x[cut:].tolist(), [int(v) for v in y[cut:]])
        for split in files:
            files[split].append(chunk[split])
    for split, blobs in files.items():
        write_leaf(root, split, blobs)
    return users


def leaf_windows(text: str, seq_len: int = 80) -> tuple[list[str], list[str]]:
    """LEAF's Shakespeare samples of one role: every window and its next character."""
    return ([text[i:i + seq_len] for i in range(len(text) - seq_len)],
            [text[i + seq_len] for i in range(len(text) - seq_len)])


def write_shakespeare(root: Path, roles: dict[str, str], per_file: int = 2, test_share: float = 0.1,
                      seed: int = 0) -> None:
    """LEAF Shakespeare: each role's windows split at random by sample (LEAF's split_data.py)."""
    rng = np.random.default_rng(seed)
    files = {"train": [], "test": []}
    names = list(roles)
    for start in range(0, len(names), per_file):
        chunk = {"train": {}, "test": {}}
        for name in names[start:start + per_file]:
            xs, ys = leaf_windows(roles[name])
            test = np.zeros(len(xs), bool)
            test[rng.choice(len(xs), max(1, int(len(xs) * test_share)), replace=False)] = True
            chunk["train"][name] = ([x for x, t in zip(xs, test) if not t], [y for y, t in zip(ys, test) if not t])
            chunk["test"][name] = ([x for x, t in zip(xs, test) if t], [y for y, t in zip(ys, test) if t])
        for split in files:
            files[split].append(chunk[split])
    for split, blobs in files.items():
        write_leaf(root, split, blobs)
