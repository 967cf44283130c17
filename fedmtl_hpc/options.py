"""Config fields with rules and one-line docs (torch-free: login-node commands read configs).

``option(default, *rules, doc=...)`` declares a dataclass field; ``config.py`` checks the
rules when it builds a section and the README's config table prints the doc.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Callable

__all__ = ["option", "rule", "positive", "at_least", "one_of", "in_range", "fractions_rule"]


def rule(check: Callable[[Any], bool], text: str) -> dict:
    return {"check": check, "rule": text}


def positive(): return rule(lambda v: v > 0, "must be > 0")
def at_least(n): return rule(lambda v: v >= n, f"must be >= {n}")
def one_of(*opts): return rule(lambda v: v in opts, "must be one of " + " | ".join(map(str, opts)))


def in_range(lo, hi, lo_open=False, hi_open=False):
    """lo <= v <= hi, with open ends where asked (the rule text says which)."""
    def check(v):
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return rule(check, f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def fractions_rule():
    """A list of increasing numbers in (0, 1) (learning-rate milestones as shares of the run)."""
    def check(v):
        return (isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                            and 0.0 < x < 1.0 for x in v)
                and all(a < b for a, b in zip(v, v[1:])))
    return rule(check, "must be a list of increasing numbers in (0, 1)")


def option(default, *rules, doc=""):
    """A config field with its default, rules and one-line documentation."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"rules": rules, "doc": doc})
    return field(default=default, metadata={"rules": rules, "doc": doc})
