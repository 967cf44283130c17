"""CIFAR-10 and CIFAR-100 readers for the released "python version" files.

The files are Python-2 pickles of dicts (``data``: N x 3072 uint8, the R, G
and B planes of a 32x32 image one after the other; ``labels`` or
``fine_labels``/``coarse_labels``: lists of ints). They are read with a
restricted unpickler that admits only numpy's array reconstruction, so a
data file can never run code. Images come back NCHW (N x 3 x 32 x 32 uint8),
which is the stored plane order reshaped without a copy and what torch
convolutions take; labels come back int64.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedmtl_hpc.errors import DataError

__all__ = ["CifarSplit", "CIFAR10_MD5", "CIFAR100_MD5", "load_cifar10",
           "load_cifar100", "verify_md5", "restricted_load", "cifar_files",
           "read_cifar_file"]

# MD5 of the extracted files of cifar-10-python.tar.gz and
# cifar-100-python.tar.gz, as published in torchvision's datasets/cifar.py.
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_URL = "https://www.cs.toronto.edu/~kriz/{}.tar.gz"
_IMAGE_BYTES = 3 * 32 * 32


def _array_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name: numpy array reconstruction."""
    try:  # numpy >= 2 moved the implementation to numpy._core
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # Python-2 files and numpy 1.x name numpy.core; numpy 2 names numpy._core.
    # Both resolve to the real function without importing the deprecated shim.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    # copyreg._reconstructor is deliberately absent: numpy arrays never need
    # it, and it would call __new__/__init__ of whatever class it is handed.
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside ``_array_globals``."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path
        self._allowed = _array_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise DataError(f"{self._path}: refused to load global "
                            f"{module}.{name}; a CIFAR file may only contain "
                            f"numpy arrays, lists, strings and numbers")
        return found


def restricted_load(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only plain data and numpy arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle, path).load()
    except DataError:
        raise
    except MemoryError:
        # pickle allocates what a length field claims before reading: a small file that asks for
        # more memory than there is has a corrupt length (a real CIFAR file is < 200 MB)
        size = path.stat().st_size
        if size >= 1 << 30:
            raise
        raise DataError(f"{path}: not a readable CIFAR pickle (a length field asks for more memory "
                        f"than there is; the file has {size} bytes)") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # truncated or garbage pickle: many error types
        raise DataError(f"{path}: not a readable CIFAR pickle "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None


def verify_md5(path: str | Path, expected: str) -> None:
    """Raise DataError unless the MD5 of ``path`` equals ``expected`` (hex)."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    if digest.hexdigest() != expected.lower():
        raise DataError(f"{path}: MD5 {digest.hexdigest()} does not match "
                        f"the published {expected}; the file is corrupted "
                        f"or not the released one")


@dataclass(frozen=True)
class CifarSplit:
    """One split: images uint8 [N,3,32,32], labels int64 [N], names."""

    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    coarse_labels: np.ndarray | None = None  # int64 [N], CIFAR-100 only
    coarse_label_names: tuple[str, ...] = ()


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _load_dict(path: Path) -> dict[str, Any]:
    """Load a CIFAR pickle and normalise bytes keys to str keys."""
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got "
                        f"{type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def _field(d: dict[str, Any], key: str, path: Path) -> Any:
    if key not in d:
        raise DataError(f"{path}: missing key '{key}' "
                        f"(found {sorted(d)})")
    return d[key]


def _labels(d: dict[str, Any], key: str, n: int, n_classes: int,
            path: Path) -> np.ndarray:
    """Labels as int64 [n], each in [0, n_classes)."""
    try:
        raw = np.asarray(_field(d, key, path))
    except ValueError as exc:  # ragged nested lists
        raise DataError(f"{path}: '{key}' is not a flat list ({exc})") from None
    if raw.size and raw.dtype.kind not in "iu":
        raise DataError(f"{path}: expected '{key}' as a list of ints, got "
                        f"{raw.dtype} values")
    labels = raw.astype(np.int64).reshape(-1)
    if labels.shape[0] != n:
        raise DataError(f"{path}: expected {n} entries in '{key}' "
                        f"(one per image), got {labels.shape[0]}")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise DataError(f"{path}: '{key}' must lie in [0, {n_classes}), got "
                        f"{labels[bad][0]} at position {np.flatnonzero(bad)[0]}")
    return labels


def _images(d: dict[str, Any], path: Path) -> np.ndarray:
    """Images uint8 [N,3,32,32] from the stored N x 3072 plane-major rows."""
    data = _field(d, "data", path)
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8
            or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path}: expected 'data' as uint8 N x {_IMAGE_BYTES}, "
                        f"got {dtype} {shape}")
    return data.reshape(-1, 3, 32, 32)


def _names(path: Path, key: str, n: int) -> tuple[str, ...]:
    names = tuple(_text(s) for s in _field(_load_dict(path), key, path))
    if len(names) != n:
        raise DataError(f"{path}: expected {n} names in '{key}', "
                        f"got {len(names)}")
    return names


def _folder(root: str | Path, name: str, probe: str, archive: str) -> Path:
    """Accept either the parent of ``name`` or the extracted folder itself."""
    root = Path(root)
    for candidate in (root / name, root):
        if (candidate / probe).is_file():
            return candidate
    if not root.is_dir():
        problem = f"dataset root {root} does not exist"
    else:
        problem = f"{root / name / probe} not found"
    raise DataError(f"{problem}; download {_URL.format(archive)} and "
                    f"extract it with 'tar xzf' into {root}")


def _check(folder: Path, files: list[str], table: dict[str, str],
           verify: bool) -> None:
    for name in files:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: file not found; the extracted "
                            f"folder should hold {sorted(table)}")
        if verify:
            verify_md5(folder / name, table[name])


def load_cifar10(root: str | Path, train: bool = True,
                 verify: bool = False) -> CifarSplit:
    """CIFAR-10 train (50k) or test (10k): uint8 [N,3,32,32], int64 [N] in 0..9."""
    folder = _folder(root, _CIFAR10_DIR, "batches.meta", "cifar-10-python")
    files = ([f"data_batch_{i}" for i in range(1, 6)] if train
             else ["test_batch"])
    _check(folder, files + ["batches.meta"], CIFAR10_MD5, verify)
    images, labels = [], []
    for name in files:
        d = _load_dict(folder / name)
        x = _images(d, folder / name)
        images.append(x)
        labels.append(_labels(d, "labels", x.shape[0], 10, folder / name))
    return CifarSplit(images=np.concatenate(images),
                      labels=np.concatenate(labels),
                      label_names=_names(folder / "batches.meta",
                                         "label_names", 10))


def load_cifar100(root: str | Path, train: bool = True,
                  verify: bool = False) -> CifarSplit:
    """CIFAR-100: uint8 [N,3,32,32], fine int64 [N] in 0..99, coarse in 0..19."""
    folder = _folder(root, _CIFAR100_DIR, "meta", "cifar-100-python")
    name = "train" if train else "test"
    _check(folder, [name, "meta"], CIFAR100_MD5, verify)
    path = folder / name
    d = _load_dict(path)
    images = _images(d, path)
    n = images.shape[0]
    meta = folder / "meta"
    return CifarSplit(
        images=images,
        labels=_labels(d, "fine_labels", n, 100, path),
        label_names=_names(meta, "fine_label_names", 100),
        coarse_labels=_labels(d, "coarse_labels", n, 20, path),
        coarse_label_names=_names(meta, "coarse_label_names", 20))


def cifar_files(root: str | Path, dataset: str,
                verify: bool = False) -> list[Path]:
    """Data files of ``dataset`` ("cifar10" or "cifar100"), train then test.

    Checks what ``load_cifar10`` / ``load_cifar100`` check (folder, every
    file present, MD5 when ``verify``) without reading the images, so a
    caller can read one file at a time (:func:`read_cifar_file`).
    """
    if dataset == "cifar10":
        folder = _folder(root, _CIFAR10_DIR, "batches.meta", "cifar-10-python")
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        _check(folder, files + ["batches.meta"], CIFAR10_MD5, verify)
    else:
        folder = _folder(root, _CIFAR100_DIR, "meta", "cifar-100-python")
        files = ["train", "test"]
        _check(folder, files + ["meta"], CIFAR100_MD5, verify)
    return [folder / name for name in files]


def read_cifar_file(path: Path, dataset: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One data file: images uint8 [N,3,32,32], labels int64 [N], coarse (CIFAR-100) or None."""
    d = _load_dict(path)
    images = _images(d, path)
    n = images.shape[0]
    if dataset == "cifar10":
        return images, _labels(d, "labels", n, 10, path), None
    return (images, _labels(d, "fine_labels", n, 100, path),
            _labels(d, "coarse_labels", n, 20, path))
