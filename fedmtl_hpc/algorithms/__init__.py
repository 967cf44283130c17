"""Algorithms: ``ALGORITHMS[name]`` is the class of ``algorithm.name`` (imported on first use).

``catalog.py`` is the one list of names, their config sections and modes; adding an
algorithm is a module here plus one ``AlgorithmSpec`` line there.
"""

from __future__ import annotations

from collections.abc import Mapping

from .catalog import SPECS

__all__ = ["ALGORITHMS", "SPECS"]


class _Lazy(Mapping):
    """name -> class, importing an implementation (and torch) only when it is looked up."""

    def __getitem__(self, name):
        return SPECS[name].load()

    def __iter__(self):
        return iter(SPECS)

    def __len__(self):
        return len(SPECS)


ALGORITHMS: Mapping[str, type] = _Lazy()
