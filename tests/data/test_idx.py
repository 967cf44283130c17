"""IDX reader and MNIST/Fashion-MNIST/EMNIST loaders on tiny gzip files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fedmtl_hpc.data.idx import (FASHION_MNIST_DEBIAN_DIR, load_emnist,
                                 load_fashion_mnist, load_mnist, read_idx)
from fedmtl_hpc.errors import DataError
from tests.data.fabricate import TYPE_BYTES, idx_bytes, write_idx, write_mnist


@pytest.mark.parametrize("dtype", list(TYPE_BYTES))
def test_every_type_round_trips_big_endian(tmp_path: Path, dtype: np.dtype) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) * 37 - 300).astype(dtype)
    if dtype.kind == "f":
        arr = arr + np.asarray(0.25, dtype)
    out = read_idx(write_idx(tmp_path / "a.gz", arr))
    assert out.shape == (2, 3, 4) and out.dtype == dtype
    assert out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, arr)


def test_int32_byte_order(tmp_path: Path) -> None:
    path = tmp_path / "one"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 1)
                     + b"\x01\x02\x03\x04")
    assert read_idx(path)[0] == 0x01020304  # raw (not gzip) files work too


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x01\x00\x08\x01" + bytes(8)))
    with pytest.raises(DataError, match=r"bad.gz: expected IDX magic 0x00 "
                                        r"0x00, got 0x01 0x00"):
        read_idx(path)


def test_unknown_type_byte(tmp_path: Path) -> None:
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7])))
    with pytest.raises(DataError, match=r"t.gz: expected IDX type byte .* "
                                        r"got 0x0a"):
        read_idx(path)


def test_short_header(tmp_path: Path) -> None:
    path = tmp_path / "h.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 2])))
    with pytest.raises(DataError, match=r"h.gz: expected a 16-byte header for "
                                        r"3 dims, got 8 bytes"):
        read_idx(path)


def test_truncated_payload(tmp_path: Path) -> None:
    raw = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: "
                                        r"truncated: expected 7840 data bytes "
                                        r"for dims \(10, 28, 28\) of uint8, "
                                        r"got 7740"):
        read_idx(path)
    path.write_bytes(gzip.compress(raw + b"xx"))
    with pytest.raises(DataError, match="trailing bytes: expected 7840 .* got 7842"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blob = gzip.compress(idx_bytes(rng.integers(0, 256, (50, 28, 28), np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"cut.gz: truncated: expected 39200 "
                                        r"data bytes .* got \d+"):
        read_idx(path)
    path.write_bytes(blob[:-4])  # only the gzip trailer is missing
    with pytest.raises(DataError, match="cut.gz: truncated gzip stream"):
        read_idx(path)


def test_load_mnist(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path)
    for train, prefix in ((True, "train"), (False, "t10k")):
        x, y = load_mnist(tmp_path, train=train)
        assert x.dtype == np.uint8 and x.shape == arrays[prefix + "_x"].shape
        assert y.dtype == np.int64 and y.shape == (len(x),)
        np.testing.assert_array_equal(x, arrays[prefix + "_x"])
        np.testing.assert_array_equal(y, arrays[prefix + "_y"])


def test_uncompressed_names_are_found(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        gz = tmp_path / (name + ".gz")
        (tmp_path / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    x, _ = load_fashion_mnist(tmp_path, train=False)
    np.testing.assert_array_equal(x, arrays["t10k_x"])


def test_count_mismatch_and_label_range(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: expected "
                                        r"6 labels .* got 5"):
        load_mnist(tmp_path)
    write_idx(labels, np.array([0, 1, 2, 10, 3, 4], np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: expected "
                                        r"labels in \[0, 10\), got 10 at "
                                        r"position 3"):
        load_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((6, 28, 28), np.int32))
    with pytest.raises(DataError, match="expected uint8 images"):
        load_mnist(tmp_path)


def test_missing_root_and_file_hints(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope does not exist; run 'apt-get "
                                        r"install dataset-fashion-mnist'"):
        load_fashion_mnist(tmp_path / "nope")
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: file not "
                                        r"found .*ossci-datasets"):
        load_mnist(tmp_path, train=False)


def _emnist(root: Path, split: str, upright: np.ndarray, labels: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for part in ("train", "test"):
        stem = f"emnist-{split}-{part}"
        # The released files hold each image transposed.
        write_idx(root / f"{stem}-images-idx3-ubyte.gz",
                  np.ascontiguousarray(upright.transpose(0, 2, 1)))
        write_idx(root / f"{stem}-labels-idx1-ubyte.gz", labels)


def test_emnist_is_upright(tmp_path: Path) -> None:
    # An "L": a tall bar in column 5 and a foot in the bottom rows, right side.
    img = np.zeros((28, 28), np.uint8)
    img[3:24, 5] = 255
    img[23, 5:15] = 200
    upright = np.stack([img, np.fliplr(img)])
    _emnist(tmp_path / "gzip", "balanced", upright, np.array([3, 46], np.uint8))
    x, y = load_emnist(tmp_path, "balanced", train=False)  # finds gzip/
    np.testing.assert_array_equal(x, upright)
    assert x[0, 10, 5] == 255 and x[0, 5, 10] == 0  # not transposed
    assert x.flags.c_contiguous and y.tolist() == [3, 46]


def test_emnist_letters_shift_and_ranges(tmp_path: Path) -> None:
    imgs = np.zeros((3, 28, 28), np.uint8)
    _emnist(tmp_path, "letters", imgs, np.array([1, 26, 13], np.uint8))
    _, y = load_emnist(tmp_path, "letters")
    assert y.tolist() == [0, 25, 12]
    _emnist(tmp_path, "letters", imgs, np.array([1, 0, 13], np.uint8))
    with pytest.raises(DataError, match=r"emnist-letters-train-labels-idx1-ubyte"
                                        r".gz: expected labels in \[1, 27\), got 0"):
        load_emnist(tmp_path, "letters")
    _emnist(tmp_path, "digits", imgs, np.array([1, 10, 3], np.uint8))
    with pytest.raises(DataError, match=r"in \[0, 10\), got 10 at position 1"):
        load_emnist(tmp_path, "digits")
    with pytest.raises(DataError, match="split must be one of"):
        load_emnist(tmp_path, "bogus")
    with pytest.raises(DataError, match=r"emnist-byclass-train-images-idx3-ubyte"
                                        r".gz: file not found.*gzip.zip"):
        load_emnist(tmp_path, "byclass")


@pytest.mark.skipif(not FASHION_MNIST_DEBIAN_DIR.is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    x, y = load_fashion_mnist(train=False)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    assert 0 < x.mean() < 255
