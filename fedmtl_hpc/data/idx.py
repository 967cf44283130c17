"""IDX readers for MNIST, Fashion-MNIST and EMNIST (gzip or raw).

IDX layout (LeCun's MNIST page): two zero bytes, a type byte (0x08 uint8,
0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte with
the number of dimensions, the dimensions as big-endian uint32, then the data
big-endian in C order. Every length is checked so that a truncated download
fails with the byte counts instead of returning a short array.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from fedmtl_hpc.errors import DataError

__all__ = ["IDX_TYPES", "EMNIST_CLASSES", "FASHION_MNIST_DEBIAN_DIR",
           "read_idx", "load_mnist", "load_fashion_mnist", "load_emnist"]

IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"),
             0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# Number of classes per EMNIST split (Cohen et al. 2017, Table II). The
# "letters" file labels are 1..26; load_emnist shifts them to 0..25.
EMNIST_CLASSES = {"byclass": 62, "bymerge": 47, "balanced": 47,
                  "letters": 26, "digits": 10, "mnist": 10}

# Where Debian's package dataset-fashion-mnist installs the four .gz files.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

_MNIST_HINT = ("download the four files from "
               "https://ossci-datasets.s3.amazonaws.com/mnist/")
_FASHION_HINT = ("run 'apt-get install dataset-fashion-mnist' (installs "
                 f"{FASHION_MNIST_DEBIAN_DIR}) or download from "
                 "https://github.com/zalandoresearch/fashion-mnist")
_EMNIST_HINT = ("download https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip "
                "and unzip it (the files are in gzip/)")


def _read_bytes(path: Path) -> tuple[bytes, bool]:
    """File content, gunzipped when it starts with the gzip magic; (data, complete)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:  # permissions, a directory, I/O errors
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw, True
    parts, rest, complete = [], raw, True
    try:
        # Decompress member by member so that a truncated stream still yields
        # the bytes it holds and the error can report expected vs got sizes.
        while rest:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            parts.append(inflater.decompress(rest))
            if not inflater.eof:
                complete = False
                break
            rest = inflater.unused_data
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt gzip stream ({exc})") from None
    return b"".join(parts), complete


def read_idx(path: str | Path) -> np.ndarray:
    """IDX file (gzip or raw) as a native-endian array with the stored dims."""
    path = Path(path)
    raw, complete = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: expected a 4-byte IDX header, got "
                        f"{len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: expected IDX magic 0x00 0x00, got "
                        f"0x{raw[0]:02x} 0x{raw[1]:02x}; not an IDX file")
    dtype = IDX_TYPES.get(raw[2])
    if dtype is None:
        known = ", ".join(f"0x{k:02x}" for k in IDX_TYPES)
        raise DataError(f"{path}: expected IDX type byte in {{{known}}}, "
                        f"got 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: expected a {header}-byte header for "
                        f"{ndim} dims, got {len(raw)} bytes")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no int64 wrap-around on huge dims
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "trailing bytes"
        raise DataError(f"{path}: {what}: expected {expected} data bytes for "
                        f"dims {dims} of {dtype.name}, got {got}")
    if not complete:
        raise DataError(f"{path}: truncated gzip stream (the data is complete "
                        f"but the gzip trailer is missing)")
    try:
        data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    except ValueError:  # e.g. an empty array whose other dims are too big for numpy
        raise DataError(f"{path}: dims {dims} cannot be held as an array") from None
    return data.astype(dtype.newbyteorder("="))  # native order, owned copy


def _find(root: Path, names: tuple[str, ...], hint: str) -> Path:
    """First of ``names`` present under ``root``; DataError with a hint if none."""
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist; {hint}")
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root / names[0]}: file not found "
                    f"(also tried {', '.join(names[1:])}); {hint}")


def _pair(images_path: Path, labels_path: Path,
          n_classes: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Check and return images uint8 [N,H,W] and labels int64 [N] - offset."""
    images = read_idx(images_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{images_path}: expected uint8 images N x H x W, "
                        f"got {images.dtype} with dims {images.shape}")
    labels = read_idx(labels_path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected uint8 labels of 1 dim, "
                        f"got {labels.dtype} with dims {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path}: expected {images.shape[0]} labels "
                        f"(one per image in {images_path.name}), "
                        f"got {labels.shape[0]}")
    labels = labels.astype(np.int64) - offset
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{labels_path}: expected labels in "
                        f"[{offset}, {n_classes + offset}), got "
                        f"{labels[i] + offset} at position {i}")
    return images, labels


def _mnist_like(root: str | Path, train: bool,
                hint: str) -> tuple[np.ndarray, np.ndarray]:
    root = Path(root)
    prefix = "train" if train else "t10k"
    found = []
    for kind, idx in (("images", "idx3"), ("labels", "idx1")):
        # Released .gz name first, then the raw and the dotted (Kaggle) names.
        names = (f"{prefix}-{kind}-{idx}-ubyte.gz", f"{prefix}-{kind}-{idx}-ubyte",
                 f"{prefix}-{kind}.{idx}-ubyte")
        found.append(_find(root, names, hint))
    return _pair(found[0], found[1], 10)


def load_mnist(root: str | Path,
               train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST: images uint8 [N,28,28], labels int64 [N] in 0..9."""
    return _mnist_like(root, train, _MNIST_HINT)


def load_fashion_mnist(root: str | Path = FASHION_MNIST_DEBIAN_DIR,
                       train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (same layout as MNIST): uint8 [N,28,28], int64 [N] in 0..9."""
    return _mnist_like(root, train, _FASHION_HINT)


def load_emnist(root: str | Path, split: str, train: bool = True,
                upright: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """EMNIST split, upright: images uint8 [N,28,28], labels int64 [N] from 0.

    ``upright=False`` returns the stored (transposed) images without the
    full-size copy, for callers that keep a subset and transpose only that.
    """
    if split not in EMNIST_CLASSES:
        raise DataError(f"EMNIST split must be one of "
                        f"{sorted(EMNIST_CLASSES)}, got '{split}'")
    root = Path(root)
    # The NIST archive unpacks to gzip/; accept that folder or its parent.
    if not (root / f"emnist-{split}-train-labels-idx1-ubyte.gz").is_file() \
            and (root / "gzip").is_dir():
        root = root / "gzip"
    part = "train" if train else "test"
    found = []
    for kind, idx in (("images", "idx3"), ("labels", "idx1")):
        stem = f"emnist-{split}-{part}-{kind}-{idx}-ubyte"
        found.append(_find(root, (stem + ".gz", stem), _EMNIST_HINT))
    offset = 1 if split == "letters" else 0  # letters are stored as 1..26
    images, labels = _pair(found[0], found[1], EMNIST_CLASSES[split], offset)
    if not upright:
        return images, labels
    # EMNIST stores each image transposed (column-major); swap H and W.
    return np.ascontiguousarray(images.transpose(0, 2, 1)), labels
