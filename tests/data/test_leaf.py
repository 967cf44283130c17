"""LEAF JSON readers and the windowed Shakespeare dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedmtl_hpc.data.leaf import (ALL_LETTERS, UNKNOWN_INDEX, VOCAB_SIZE,
                                  ShakespeareWindows, encode_text, flatten_users,
                                  load_femnist, load_shakespeare)
from fedmtl_hpc.data.partition import natural
from fedmtl_hpc.errors import DataError
from tests.data.fabricate import write_leaf

# Copied by hand from LEAF's models/utils/language_utils.py.
LEAF_LETTERS = ("\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]"
                "abcdefghijklmnopqrstuvwxyz}")


def _pixels(rng: np.random.Generator, n: int) -> list[list[float]]:
    return np.round(rng.random((n, 784)), 3).tolist()


@pytest.fixture
def femnist(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    users = {"f0001_12": (_pixels(rng, 3), [0, 61, 7]),
             "f0002_33": (_pixels(rng, 2), [10, 36]),
             "f0003_04": (_pixels(rng, 4), [1, 2, 3, 4])}
    files = [{"f0001_12": users["f0001_12"]},
             {"f0002_33": users["f0002_33"], "f0003_04": users["f0003_04"]}]
    write_leaf(tmp_path, "train", files)
    write_leaf(tmp_path, "test", [{"f0001_12": (_pixels(rng, 1), [5])}])
    return tmp_path, users


def test_femnist_per_writer(femnist: tuple[Path, dict]) -> None:
    root, users = femnist
    data = load_femnist(root, "train")
    assert list(data) == ["f0001_12", "f0002_33", "f0003_04"]  # file order
    for user, (x, y) in data.items():
        xs, ys = users[user]
        assert x.dtype == np.float32 and x.shape == (len(ys), 1, 28, 28)
        assert y.dtype == np.int64 and y.tolist() == ys
        np.testing.assert_allclose(x.reshape(len(ys), 784), xs, rtol=1e-6)
    # Row-major 28x28: pixel 30 is row 1, column 2.
    assert data["f0002_33"][0][1, 0, 1, 2] == np.float32(users["f0002_33"][0][1][30])
    test = load_femnist(root, "test")
    assert list(test) == ["f0001_12"] and test["f0001_12"][1].tolist() == [5]


def test_flatten_then_natural_gives_users_back(femnist: tuple[Path, dict]) -> None:
    data = load_femnist(femnist[0])
    x, y, group = flatten_users(data)
    assert x.shape == (9, 1, 28, 28) and group.dtype == np.int64
    for part, (ux, uy) in zip(natural(group), data.values()):
        np.testing.assert_array_equal(x[part], ux)
        np.testing.assert_array_equal(y[part], uy)


@pytest.mark.parametrize("field, value, message", [
    ("y", [0, 62, 7], r"expected integer labels in 0..61, got 62"),
    ("y", [0, 1.5, 7], r"expected integer labels in 0..61, got 1.5"),
    ("x_pixel", 1.5, r"expected pixels in \[0, 1\]"),
    ("x_short", None, r"expected 784 pixels per image, got 783"),
])
def test_femnist_bad_values(tmp_path: Path, field: str, value, message: str) -> None:
    rng = np.random.default_rng(1)
    x, y = _pixels(rng, 3), [0, 1, 2]
    if field == "y":
        y = value
    elif field == "x_pixel":
        x[2][100] = value
    else:
        x = [row[:783] for row in x]
    write_leaf(tmp_path, "train", [{"u1": (x, y)}])
    with pytest.raises(DataError, match=r"all_data_0_niid_0_keep_0_train_9.json: "
                                        r"user 'u1': " + message):
        load_femnist(tmp_path)


def test_leaf_structure_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere does not exist; .*LEAF.*femnist"):
        load_femnist(tmp_path / "nowhere")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"train: no \*.json files"):
        load_femnist(tmp_path)
    bad = tmp_path / "train" / "a.json"
    bad.write_text('{"users": ["u"], "num_samples": [2], "user_data": '
                   '{"u": {"x": [[0.5]], "y": [1]}}}')
    with pytest.raises(DataError, match=r"a.json: user 'u': expected 2 samples "
                                        r"\(num_samples\), got 1 x and 1 y"):
        load_femnist(tmp_path)
    bad.write_text('{"users": ["u"], "num_sam')
    with pytest.raises(DataError, match="a.json: not valid JSON"):
        load_femnist(tmp_path)
    bad.write_text(json.dumps({"users": ["u"], "user_data": {}}))
    with pytest.raises(DataError, match="a.json: expected keys users"):
        load_femnist(tmp_path)
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        load_femnist(tmp_path, "val")


def test_duplicate_user_across_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    write_leaf(tmp_path, "train", [{"u": (_pixels(rng, 1), [1])},
                                   {"u": (_pixels(rng, 1), [2])}])
    with pytest.raises(DataError, match=r"train_9.json: user 'u' already read"):
        load_femnist(tmp_path)


def test_vocabulary_is_leafs() -> None:
    assert ALL_LETTERS == LEAF_LETTERS and len(ALL_LETTERS) == 80
    assert UNKNOWN_INDEX == 80 and VOCAB_SIZE == 81
    assert encode_text(ALL_LETTERS).tolist() == list(range(80))
    # Unknown: ASCII outside the set, Latin-1, BMP and astral characters.
    assert encode_text("~\té€😀").tolist() == [UNKNOWN_INDEX] * 5
    assert encode_text("").shape == (0,)


def test_shakespeare(tmp_path: Path) -> None:
    text = ("To be, or~ not to be: that is the question. Whether 'tis nobler "
            "in the mind to suffer the slings and arrows")
    xs = [text[i:i + 80] for i in range(5)]
    ys = [text[i + 80] for i in range(5)]
    write_leaf(tmp_path, "train", [{"HAMLET": (xs, ys)}, {"OPHELIA": (xs[:1], ys[:1])}])
    data = load_shakespeare(tmp_path)
    x, y = data["HAMLET"]
    assert list(data) == ["HAMLET", "OPHELIA"]
    assert x.shape == (5, 80) and y.dtype == np.int64
    decoded = ["".join(ALL_LETTERS[i] if i < 80 else "?" for i in row) for row in x]
    assert decoded == [s.replace("~", "?") for s in xs]
    assert (x == UNKNOWN_INDEX).sum() == 5  # the "~" is in every window
    assert [ALL_LETTERS[i] for i in y] == ys
    write_leaf(tmp_path, "test", [{"R": ([text[:79]], ["a"])}])
    with pytest.raises(DataError, match=r"test_9.json: user 'R': expected each x "
                                        r"to be a 80-character string"):
        load_shakespeare(tmp_path, "test")


def test_windows_match_direct_encoding() -> None:
    text = "".join(ALL_LETTERS[(7 * i) % 80] for i in range(300)) + "é"
    windows = ShakespeareWindows(text)
    assert len(windows) == len(text) - 80
    x, y = windows.batch(np.array([0, 5, len(windows) - 1]))
    assert x.dtype == np.int64 and y.dtype == np.int64 and x.shape == (3, 80)
    for row, target, i in zip(x, y, [0, 5, len(windows) - 1]):
        np.testing.assert_array_equal(row, encode_text(text[i:i + 80]))
        assert target == encode_text(text[i + 80])[0]
    assert y[-1] == UNKNOWN_INDEX
    # The windows are a strided view of one code array, not an N x 80 copy.
    assert np.shares_memory(windows._windows, windows.codes)
    assert windows.codes.nbytes == len(text)
    with pytest.raises(IndexError):
        windows.batch([len(windows)])
    with pytest.raises(IndexError):
        windows.batch([-1])


def test_short_text_has_no_windows() -> None:
    assert len(ShakespeareWindows("a" * 80)) == 0
    assert len(ShakespeareWindows("abc")) == 0
    assert len(ShakespeareWindows("abcd", seq_len=3)) == 1
    x, y = ShakespeareWindows("abcd", seq_len=3).batch([0])
    assert x.tolist() == [encode_text("abc").tolist()]
    assert y.tolist() == [encode_text("d")[0]]
