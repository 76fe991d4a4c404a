"""How the benchmarks compare two things: alternating order and per-round ratios.

Pure helpers (no heavy imports) shared by the benchmark modules and by ``render.py``:

- :func:`alternating_order` gives the order of each round, ``A B``, ``B A``, ``A B``, … so
  neither side always runs first (warm caches, thermal state and the machine's drift hit both);
- :func:`alternate` runs two measurements in that order and returns the raw per-round lists;
- :func:`ratio_summary` reduces two per-round lists to the reported figures: the median of each
  side and the median, minimum and maximum of the per-round ratios ``a[i] / b[i]``.
"""

from __future__ import annotations

import statistics
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
U = TypeVar("U")


def alternating_order(rounds: int, names: Sequence[str] = ("A", "B")) -> list[tuple[str, ...]]:
    """The order of each round: ``names`` in even rounds (0, 2, …), reversed in odd ones.

    >>> alternating_order(3)
    [('A', 'B'), ('B', 'A'), ('A', 'B')]
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    forward = tuple(names)
    return [forward if i % 2 == 0 else forward[::-1] for i in range(rounds)]


def alternate(a_fn: Callable[[], T], b_fn: Callable[[], U], rounds: int) -> tuple[list[T], list[U]]:
    """Run ``a_fn`` and ``b_fn`` once per round in :func:`alternating_order`; return both lists
    of results in round order (``a[i]`` and ``b[i]`` come from the same round)."""
    a: list[T] = []
    b: list[U] = []
    for first, _ in alternating_order(rounds):
        if first == "A":
            a.append(a_fn())
            b.append(b_fn())
        else:
            b.append(b_fn())
            a.append(a_fn())
    return a, b


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-round ratios ``a[i] / b[i]``; the lists must have the same, non-zero length."""
    if len(a) != len(b) or not a:
        raise ValueError(f"per-round lists must be non-empty and of equal length, got {len(a)} and {len(b)}")
    return [float(x) / float(y) for x, y in zip(a, b)]


def ratio_summary(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``{"a": median a, "b": median b, "ratio": median of per-round a/b, "min": …, "max": …}``."""
    per_round = ratios(a, b)
    return {
        "a": float(statistics.median(a)),
        "b": float(statistics.median(b)),
        "ratio": float(statistics.median(per_round)),
        "min": min(per_round),
        "max": max(per_round),
    }
