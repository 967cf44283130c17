"""Counter-based random streams: every draw is keyed, nothing is carried over.

A stream is ``SeedSequence([seed, purpose, *keys])``: the data of client 17
comes from ``(seed, DATA, 17)``, its batch order in round 5 from
``(seed, TRAIN, 17, 5)``, the clients sampled in round 5 from
``(seed, SAMPLE, 5)``. Results therefore do not depend on how clients are
dealt to ranks, and the whole RNG state of a run is ``(seed, round)``: a
checkpoint that stores both resumes the exact same streams.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["GLOBAL", "DATA", "INIT", "SAMPLE", "TRAIN", "EVAL", "SKETCH", "SCHEME", "np_stream", "torch_stream", "torch_seeds",
           "TorchStreams"]

# purpose codes (never renumber: they are part of the reproducibility contract)
GLOBAL, DATA, INIT, SAMPLE, TRAIN, EVAL, SKETCH = 1, 2, 3, 4, 5, 6, 7
SCHEME = ("numpy SeedSequence([seed, purpose, *keys]); purposes GLOBAL=1 DATA=2 INIT=3 SAMPLE=4 TRAIN=5 EVAL=6 "
          "SKETCH=7")


def _seq(seed: int, purpose: int, keys: tuple[int, ...]) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(purpose), *map(int, keys)])


def np_stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    """A numpy Generator (PCG64) for one (purpose, keys) stream."""
    return np.random.Generator(np.random.PCG64(_seq(seed, purpose, keys)))


def torch_stream(seed: int, purpose: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator for one (purpose, keys) stream (seeded from 63 bits of the SeedSequence)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(_seq(seed, purpose, keys).generate_state(1, np.uint64)[0] >> np.uint64(1)))
    return g


# -- many streams at once (the batched path: thousands of clients a round) ------------------------
# numpy's SeedSequence (pool of 4 uint32 words; hash and mix constants of bit_generator.pyx), on
# arrays: the same words as ``_seq(...).generate_state`` for every key at once (tests/scale checks it)
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _M32 = 0xCA01F9DD, 0x4973F715, 0xFFFFFFFF


def _words(v: int) -> list[int]:
    if v < 0:
        raise ValueError("stream keys must be non-negative")
    out = [v & _M32]
    while v > _M32:
        v >>= 32
        out.append(v & _M32)
    return out


def _state_words(seed: int, purpose: int, keys: tuple, n_words: int) -> list[np.ndarray]:
    """``_seq(seed, purpose, keys).generate_state(n_words, uint32)`` for every value of the one array key
    (each < 2**32) at once: n_words uint32 columns ``[C]``."""
    arr = [k for k in keys if np.ndim(k)]
    if len(arr) != 1:
        raise ValueError("one key must be an array")
    vals = np.asarray(arr[0], dtype=np.int64)
    if len(vals) and (vals.min() < 0 or vals.max() > _M32):
        raise ValueError("array keys must be in [0, 2**32)")
    c = len(vals)
    entropy: list = []
    for k in (seed, purpose, *keys):
        if np.ndim(k):
            entropy.append(vals.astype(np.uint32))
        else:
            entropy.extend(np.full(c, w, dtype=np.uint32) for w in _words(int(k)))
    hc = _INIT_A

    def hashmix(v):
        nonlocal hc
        v = v ^ np.uint32(hc)
        hc = (hc * _MULT_A) & _M32
        v = v * np.uint32(hc)
        return v ^ (v >> np.uint32(16))

    def mix(x, y):
        r = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        return r ^ (r >> np.uint32(16))

    pool = [hashmix(entropy[i] if i < len(entropy) else np.zeros(c, dtype=np.uint32)) for i in range(4)]
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                pool[i_dst] = mix(pool[i_dst], hashmix(pool[i_src]))
    for i_src in range(4, len(entropy)):
        for i_dst in range(4):
            pool[i_dst] = mix(pool[i_dst], hashmix(entropy[i_src]))
    hb, state = _INIT_B, []
    for i in range(n_words):          # generate_state: the pool's words in turn, hashed
        v = pool[i % 4] ^ np.uint32(hb)
        hb = (hb * _MULT_B) & _M32
        v = v * np.uint32(hb)
        state.append(v ^ (v >> np.uint32(16)))
    return state


def _uint64(state: list[np.ndarray]) -> np.ndarray:
    """uint32 words (pairs, little-endian) -> ``[C, len(state) // 2]`` uint64, as ``generate_state(.., uint64)``."""
    return np.stack([state[i].astype(np.uint64) | (state[i + 1].astype(np.uint64) << np.uint64(32))
                     for i in range(0, len(state), 2)], axis=1)


def torch_seeds(seed: int, purpose: int, *keys) -> np.ndarray:
    """The ``manual_seed`` values of ``torch_stream(seed, purpose, *keys)`` ``[C]`` uint64, where
    one key is an array of C values (each < 2**32) and the others are ints: one vectorized hash."""
    return _uint64(_state_words(seed, purpose, keys, 2))[:, 0] >> np.uint64(1)


class TorchStreams:
    """The streams ``torch_stream(seed, purpose, cids[j], *rest)`` of many clients, made on demand
    (``[j]``); ``seeds`` holds their seeds, so a batched consumer can reseed one Generator per client."""

    def __init__(self, seed: int, purpose: int, cids, *rest: int):
        self.cids = np.asarray(cids, dtype=np.int64)
        try:
            self.seeds = torch_seeds(seed, purpose, self.cids, *rest)
        except ValueError:          # keys out of the vectorized range: one SeedSequence each
            self.seeds = np.array([_seq(seed, purpose, (int(c), *rest)).generate_state(1, np.uint64)[0] >> np.uint64(1)
                                   for c in self.cids], dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, j: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(int(self.seeds[j]))
        return g

    def __iter__(self):
        return (self[j] for j in range(len(self)))
