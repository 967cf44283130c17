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

__all__ = ["GLOBAL", "DATA", "INIT", "SAMPLE", "TRAIN", "EVAL", "SKETCH", "SCHEME", "np_stream", "torch_stream"]

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
