"""LEAF JSON readers (FEMNIST, Shakespeare) and a windowed text dataset.

LEAF (Caldas et al. 2018) writes each split as many JSON files in ``train/``
and ``test/``, each ``{"users": [...], "num_samples": [...], "user_data":
{user: {"x": [...], "y": [...]}}}``. Users are kept apart (the natural
partition): readers return ``{user: (x, y)}`` in file-name order, then the
order of ``users`` inside each file. Characters map to LEAF's 80-symbol
vocabulary (``models/utils/language_utils.py``), index i for
``ALL_LETTERS[i]``; anything else maps to the explicit ``UNKNOWN_INDEX`` (80)
where LEAF's ``str.find`` would silently give -1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fedmtl_hpc.errors import DataError

__all__ = ["ALL_LETTERS", "UNKNOWN_INDEX", "VOCAB_SIZE", "SEQ_LEN",
           "FEMNIST_CLASSES", "encode_text", "load_femnist", "load_shakespeare",
           "flatten_users", "ShakespeareWindows", "leaf_files", "file_users",
           "read_counts", "femnist_user", "shakespeare_user"]

ALL_LETTERS = ("\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]"
               "abcdefghijklmnopqrstuvwxyz}")
UNKNOWN_INDEX = len(ALL_LETTERS)  # 80
VOCAB_SIZE = UNKNOWN_INDEX + 1
SEQ_LEN = 80
FEMNIST_CLASSES = 62  # 10 digits, 26 upper-case, 26 lower-case letters

# All LEAF symbols are ASCII, so a 256-entry table covers every known code
# point; anything at or above 256 is unknown by construction.
_TABLE = np.full(256, UNKNOWN_INDEX, dtype=np.uint8)
_TABLE[[ord(c) for c in ALL_LETTERS]] = np.arange(len(ALL_LETTERS))

_HINT = ("generate it with LEAF (https://github.com/TalwalkarLab/leaf): "
         "cd data/{name} && ./preprocess.sh ..., then point root at "
         "data/{name}/data")

Users = dict[str, tuple[np.ndarray, np.ndarray]]


def encode_text(text: str) -> np.ndarray:
    """Characters -> vocabulary indices, uint8 [len(text)], unknown -> 80."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    return np.where(points < 256, _TABLE[np.minimum(points, 255)],
                    UNKNOWN_INDEX).astype(np.uint8)


def _files(root: Path, split: str, name: str) -> list[Path]:
    """Sorted JSON files of ``root/split``; DataError with a hint if none."""
    if split not in ("train", "test"):
        raise DataError(f"LEAF split must be 'train' or 'test', got '{split}'")
    folder = root / split
    if not folder.is_dir():
        what = "does not exist" if not root.is_dir() else f"has no {split}/"
        raise DataError(f"LEAF root {root} {what}; " + _HINT.format(name=name))
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no *.json files; " + _HINT.format(name=name))
    return files


def _users(root: str | Path, split: str,
           name: str) -> Iterator[tuple[Path, str, list[Any], list[Any]]]:
    """Yield (file, user, x, y) for every user, checking LEAF's structure."""
    seen: dict[str, Path] = {}
    for path in _files(Path(root), split, name):
        yield from file_users(path, seen)


def file_users(path: Path, seen: dict[str, Path] | None = None
               ) -> Iterator[tuple[Path, str, list[Any], list[Any]]]:
    """Yield (file, user, x, y) for every user of one LEAF file (``seen``: users read so far)."""
    seen = {} if seen is None else seen
    try:
        with open(path, encoding="utf-8") as handle:
            blob = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid LEAF JSON (nested too deeply)") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:  # permissions, a directory named *.json, I/O errors
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(blob, dict) or not {"users", "num_samples",
                                           "user_data"} <= blob.keys():
        raise DataError(f"{path}: expected keys users, num_samples, "
                        f"user_data")
    users, counts = blob["users"], blob["num_samples"]
    if not (isinstance(users, list) and isinstance(counts, list)
            and isinstance(blob["user_data"], dict)):
        raise DataError(f"{path}: expected users and num_samples as lists "
                        f"and user_data as an object")
    if len(users) != len(counts):
        raise DataError(f"{path}: expected one num_samples per user "
                        f"({len(users)}), got {len(counts)}")
    bad = [u for u in users if not isinstance(u, str)]
    if bad:
        raise DataError(f"{path}: expected users as strings, got {json.dumps(bad[0])[:40]}")
    for user, count in zip(users, counts):
        if user in seen:
            raise DataError(f"{path}: user '{user}' already read from "
                            f"{seen[user]}")
        seen[user] = path
        record = blob["user_data"].get(user)
        if not isinstance(record, dict) or not isinstance(
                record.get("x"), list) or not isinstance(record.get("y"), list):
            raise DataError(f"{path}: expected user_data['{user}'] to "
                            f"hold lists 'x' and 'y'")
        x, y = record["x"], record["y"]
        if len(x) != count or len(y) != count:
            raise DataError(f"{path}: user '{user}': expected {count} "
                            f"samples (num_samples), got {len(x)} x and "
                            f"{len(y)} y")
        yield path, user, x, y


def femnist_user(path: Path, user: str, xs: list, ys: list) -> tuple[np.ndarray, np.ndarray]:
    """One writer's JSON lists -> x float32 [n,1,28,28] in [0,1], y int64 [n] in 0..61."""
    # Labels must be JSON integers: numpy would quietly cast 3.7 or "3".
    wrong = [v for v in ys if not isinstance(v, int) or isinstance(v, bool)
             or not 0 <= v < FEMNIST_CLASSES]
    if wrong:
        raise DataError(f"{path}: user '{user}': expected integer labels "
                        f"in 0..{FEMNIST_CLASSES - 1}, got {wrong[0]!r}")
    try:
        x = np.asarray(xs, dtype=np.float32).reshape(len(xs), -1) \
            if xs else np.empty((0, 784), np.float32)
        y = np.asarray(ys, dtype=np.int64) if ys else np.empty(0, np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: user '{user}': x must be lists of 784 "
                        f"numbers ({exc})") from None
    if x.shape[1] != 784:
        raise DataError(f"{path}: user '{user}': expected 784 pixels "
                        f"per image, got {x.shape[1]}")
    if x.size and not (np.all(np.isfinite(x)) and x.min() >= 0.0
                       and x.max() <= 1.0):
        raise DataError(f"{path}: user '{user}': expected pixels in "
                        f"[0, 1], got range [{x.min()}, {x.max()}]")
    return x.reshape(-1, 1, 28, 28), y


def shakespeare_user(path: Path, user: str, xs: list, ys: list) -> tuple[np.ndarray, np.ndarray]:
    """One role's JSON lists -> x uint8 [n,80] vocabulary indices, y int64 [n]."""
    if not all(isinstance(s, str) and len(s) == SEQ_LEN for s in xs):
        raise DataError(f"{path}: user '{user}': expected each x to be a "
                        f"{SEQ_LEN}-character string")
    if not all(isinstance(s, str) and len(s) == 1 for s in ys):
        raise DataError(f"{path}: user '{user}': expected each y to be "
                        f"one character")
    x = encode_text("".join(xs)).reshape(-1, SEQ_LEN)
    return x, encode_text("".join(ys)).astype(np.int64)


def load_femnist(root: str | Path, split: str = "train") -> Users:
    """FEMNIST per writer: x float32 [n,1,28,28] in [0,1], y int64 [n] in 0..61."""
    return {user: femnist_user(path, user, xs, ys)
            for path, user, xs, ys in _users(root, split, "femnist")}


def load_shakespeare(root: str | Path, split: str = "train") -> Users:
    """Shakespeare per role: x uint8 [n,80] indices, y int64 [n] next char."""
    # x stays uint8 (the vocabulary fits a byte): LEAF's ~4M windows would
    # take 2.7 GB as int64; cast a batch with .astype(np.int64) when used.
    return {user: shakespeare_user(path, user, xs, ys)
            for path, user, xs, ys in _users(root, split, "shakespeare")}


def leaf_files(root: str | Path, split: str, name: str) -> list[Path]:
    """Sorted JSON files of ``root/split`` (DataError with LEAF's hint if none)."""
    return _files(Path(root), split, name)


def read_counts(path: Path, head: int = 1 << 20) -> tuple[list[str], list[int]]:
    """``users`` and ``num_samples`` of one LEAF file without parsing ``user_data``.

    LEAF writes the two short lists before the (large) ``user_data`` object, so
    they are decoded from the start of the file; any other layout falls back to
    a full parse. Structure errors name the file, as the full readers do.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(head)
            more = handle.read(1) != ""
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        found = _head_lists(text)
        if found is None and more:  # lists longer than the head: read it all
            found = _head_lists(path.read_text(encoding="utf-8"))
    except (RecursionError, UnicodeDecodeError):  # the full parse below names the problem
        found = None
    if found is None:
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        except RecursionError:
            raise DataError(f"{path}: not valid LEAF JSON (nested too deeply)") from None
        if not isinstance(blob, dict) or not {"users", "num_samples", "user_data"} <= blob.keys():
            raise DataError(f"{path}: expected keys users, num_samples, user_data")
        found = blob["users"], blob["num_samples"]
    users, counts = found
    if not (isinstance(users, list) and isinstance(counts, list) and len(users) == len(counts)
            and all(isinstance(u, str) for u in users)
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
        raise DataError(f"{path}: expected users (strings) and num_samples (counts >= 0) "
                        f"as lists of one length")
    return users, counts


def _head_lists(text: str) -> tuple[Any, Any] | None:
    """Decode top-level keys in order until users and num_samples are known, or None."""
    decoder, found, i = json.JSONDecoder(), {}, 0
    try:
        i = _skip(text, i)
        if text[i] != "{":
            return None
        i += 1
        while len(found) < 2:
            i = _skip(text, i)
            key, i = decoder.raw_decode(text, i)
            i = _skip(text, i)
            if text[i] != ":" or key == "user_data":  # user_data first: give up
                return None
            value, i = decoder.raw_decode(text, _skip(text, i + 1))
            if key in ("users", "num_samples"):
                found[key] = value
            i = _skip(text, i)
            if text[i] != ",":
                break
            i += 1
    except (IndexError, ValueError):  # cut off inside a value, or not JSON
        return None
    return (found["users"], found["num_samples"]) if len(found) == 2 else None


def _skip(text: str, i: int) -> int:
    while text[i] in " \t\r\n":
        i += 1
    return i


def flatten_users(users: Users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate users: x, y and the user position int64 [N] for natural()."""
    if not users:
        raise DataError("no users to flatten")
    xs, ys = zip(*users.values())
    group = np.repeat(np.arange(len(ys), dtype=np.int64), [len(y) for y in ys])
    return np.concatenate(xs), np.concatenate(ys), group


class ShakespeareWindows:
    """Every (80-char window, next char) pair of one text, built per batch."""

    def __init__(self, text: str, seq_len: int = SEQ_LEN) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.seq_len = seq_len
        # uint8 codes: a role's text costs one byte per character; windows are
        # strided views, copied only for the rows a batch asks for.
        self.codes = encode_text(text)
        n = max(len(self.codes) - seq_len, 0)
        self._windows = np.lib.stride_tricks.sliding_window_view(
            self.codes, seq_len)[:n] if n else np.empty((0, seq_len), np.uint8)

    def __len__(self) -> int:
        return int(self._windows.shape[0])

    def batch(self, indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Windows at ``indices``: x int64 [B,seq_len], y int64 [B]."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)}): "
                             f"got {idx.min()}..{idx.max()}")
        x = self._windows[idx].astype(np.int64)
        y = self.codes[idx + self.seq_len].astype(np.int64)
        return x, y
