"""CIFAR readers on tiny files written in the released Python-2 pickle format."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from fedmtl_hpc.data.cifar import (CIFAR10_MD5, CIFAR100_MD5, load_cifar10,
                                   load_cifar100, restricted_load, verify_md5)
from fedmtl_hpc.errors import DataError
from tests.data.fabricate import NAMES10, cifar_batch, py2_dumps


def _batch(rng: np.random.Generator, n: int, n_classes: int = 10) -> dict:
    return cifar_batch(rng, n, n_classes)


@pytest.fixture
def cifar10(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i}": _batch(rng, 3 + i) for i in range(1, 6)}
    batches["test_batch"] = _batch(rng, 5)
    for name, d in batches.items():
        (folder / name).write_bytes(py2_dumps(d))
    meta = {"num_cases_per_batch": 10000, "label_names": NAMES10,
            "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_dumps(meta))
    return tmp_path, batches


def test_writer_matches_the_py2_format() -> None:
    blob = py2_dumps({"data": np.arange(6, dtype=np.uint8).reshape(2, 3)})
    assert b"cnumpy.core.multiarray\n_reconstruct" in blob
    assert b"X" not in blob[:4] and blob[2:5] == b"}(U"  # str keys as BINSTRING
    back = pickle.loads(blob, encoding="latin1")
    np.testing.assert_array_equal(back["data"], [[0, 1, 2], [3, 4, 5]])


def test_cifar10_train_nchw_int64(cifar10: tuple[Path, dict]) -> None:
    root, batches = cifar10
    split = load_cifar10(root, train=True)
    n = sum(3 + i for i in range(1, 6))
    assert split.images.shape == (n, 3, 32, 32) and split.images.dtype == np.uint8
    assert split.labels.shape == (n,) and split.labels.dtype == np.int64
    data = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    np.testing.assert_array_equal(split.labels, labels)
    # Plane order: channel c, row r, column k is byte c*1024 + r*32 + k.
    assert split.images[7, 1, 3, 5] == data[7, 1024 + 3 * 32 + 5]
    assert split.images[0, 2, 31, 0] == data[0, 2048 + 31 * 32]
    np.testing.assert_array_equal(split.images.reshape(n, -1), data)
    assert split.label_names == tuple(NAMES10) and split.coarse_labels is None


def test_cifar10_test_split_and_folder_as_root(cifar10: tuple[Path, dict]) -> None:
    root, batches = cifar10
    split = load_cifar10(root / "cifar-10-batches-py", train=False)
    assert split.images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(split.labels, batches["test_batch"]["labels"])


def test_bytes_keys_are_accepted(cifar10: tuple[Path, dict]) -> None:
    root, batches = cifar10
    folder = root / "cifar-10-batches-py"
    d = batches["test_batch"]
    bytes_keys = {b"labels": d["labels"], b"data": d["data"]}
    (folder / "test_batch").write_bytes(pickle.dumps(bytes_keys, protocol=4))
    meta = {b"label_names": [s.encode() for s in NAMES10]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=3))
    split = load_cifar10(root, train=False)
    np.testing.assert_array_equal(split.images.reshape(5, -1), d["data"])
    assert split.label_names == tuple(NAMES10)


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [int(v) for v in rng.integers(0, 100, 6)]
    for name in ("train", "test"):
        d = {"filenames": ["a"] * 6, "batch_label": name, "fine_labels": fine,
             "coarse_labels": [f // 5 for f in fine],
             "data": rng.integers(0, 256, (6, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(py2_dumps(d))
    meta = {"fine_label_names": [f"f{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(py2_dumps(meta))
    split = load_cifar100(tmp_path, train=True)
    assert split.images.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(split.labels, fine)
    np.testing.assert_array_equal(split.coarse_labels, [f // 5 for f in fine])
    assert split.coarse_labels.dtype == np.int64
    assert split.label_names[99] == "f99" and split.coarse_label_names[19] == "c19"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_code_in_a_pickle_is_refused(cifar10: tuple[Path, dict],
                                     protocol: int) -> None:
    root, _ = cifar10
    marker = root / "pwned"
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({"data": _Evil(marker), "labels": []},
                                  protocol=protocol))
    with pytest.raises(DataError, match="refused to load global") as info:
        load_cifar10(root)
    assert "data_batch_2" in str(info.value) and "system" in str(info.value)
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(pickle.dumps({"x": [1, 2], "f": print}, protocol=2))
    pattern = r"blob: refused to load global \S*builtin\S*\.print"
    with pytest.raises(DataError, match=pattern):
        restricted_load(path)


def test_missing_root_gives_download_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path / "nowhere")
    msg = str(info.value)
    assert "nowhere" in msg and "cifar-10-python.tar.gz" in msg
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        load_cifar100(tmp_path)


def test_missing_file_is_named(cifar10: tuple[Path, dict]) -> None:
    root, _ = cifar10
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: file not found"):
        load_cifar10(root)


def test_truncated_file_is_named(cifar10: tuple[Path, dict]) -> None:
    root, _ = cifar10
    path = root / "cifar-10-batches-py" / "data_batch_4"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match="data_batch_4: not a readable CIFAR"):
        load_cifar10(root)


def test_label_out_of_range(cifar10: tuple[Path, dict]) -> None:
    root, batches = cifar10
    d = dict(batches["test_batch"], labels=[0, 1, 10, 2, 3])
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(py2_dumps(d))
    with pytest.raises(DataError, match=r"test_batch: 'labels' must lie in "
                                        r"\[0, 10\), got 10 at position 2"):
        load_cifar10(root, train=False)


def test_bad_data_shape_and_label_count(cifar10: tuple[Path, dict]) -> None:
    root, batches = cifar10
    path = root / "cifar-10-batches-py" / "test_batch"
    d = dict(batches["test_batch"], data=np.zeros((5, 100), np.uint8))
    path.write_bytes(py2_dumps(d))
    with pytest.raises(DataError, match="test_batch: expected 'data' as uint8"):
        load_cifar10(root, train=False)
    d = dict(batches["test_batch"], labels=[1, 2])
    path.write_bytes(py2_dumps(d))
    with pytest.raises(DataError, match="expected 5 entries in 'labels'"):
        load_cifar10(root, train=False)
    del d["labels"]
    path.write_bytes(py2_dumps(d))
    with pytest.raises(DataError, match="missing key 'labels'"):
        load_cifar10(root, train=False)


def test_md5(cifar10: tuple[Path, dict]) -> None:
    root, _ = cifar10
    path = root / "cifar-10-batches-py" / "test_batch"
    verify_md5(path, hashlib.md5(path.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="test_batch: MD5 .* does not match"):
        verify_md5(path, "0" * 32)
    # Our fake files are not the released ones: verify=True must notice.
    with pytest.raises(DataError, match="published 40351d587109b95175f43aff81a1287e"):
        load_cifar10(root, train=False, verify=True)
    assert len(CIFAR10_MD5) == 7 and len(CIFAR100_MD5) == 3
    assert all(len(v) == 32 for v in {**CIFAR10_MD5, **CIFAR100_MD5}.values())
