"""Real-sequence baselines at the summary's budget (docs/method.md, "Using a summary"):
Random and Longest.

A summary of μ sequences of length ζ holds μ·ζ interactions. A fair real-data baseline
gets the same number of interactions, not the same number of users, so both selectors
fill a budget of μ·ζ interactions:

- each chosen user contributes the last ζ items of its training sequence (the most
  recent behaviour; a learner's context is the last max_len = ζ items, docs/protocol.md,
  "Data and split");
- users are taken in order (Random: a permutation drawn from ``seed``; Longest: training
  length descending, ties by user index) until the interactions reach μ·ζ;
- the user that would overflow the budget is trimmed to the remaining count, keeping its
  most recent items; if that leaves fewer than 2 items it is dropped, because a sequence
  of one item has no next-item example to train on. The total is then μ·ζ exactly, or
  μ·ζ − 1 in that one case;
- users whose training sequence has fewer than 2 items are skipped for the same reason;
- a dataset with fewer usable interactions than the budget gives all of them.

``td3.data.formats.write_inter`` writes them (or a summary's hard sequences) as a RecBole
atomic file, so another library can train on exactly what we trained on.
"""
from __future__ import annotations


import numpy as np

from td3.errors import ConfigError

__all__ = ["random_sequences", "longest_sequences"]


def _check_budget(mu: int, zeta: int) -> None:
    for name, value in (("mu", mu), ("zeta", zeta)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if zeta < 2:
        raise ConfigError(f"zeta={zeta} must be >= 2: a shorter sequence has no next-item example")


def _fill_budget(train: list[np.ndarray], order: np.ndarray, mu: int, zeta: int) -> list[np.ndarray]:
    """Take users in ``order`` (their last ζ items each) until μ·ζ interactions."""
    budget = mu * zeta
    chosen: list[np.ndarray] = []
    used = 0
    for user in order:
        sequence = np.asarray(train[int(user)], dtype=np.int64)[-zeta:]
        if len(sequence) < 2:
            continue  # no next-item example in it
        take = min(len(sequence), budget - used)
        if take < 2:
            break  # the remainder (one interaction) cannot form an example
        chosen.append(sequence[-take:].copy())  # most recent items
        used += take
        if used == budget:
            break
    return chosen


def random_sequences(train: list[np.ndarray], mu: int, zeta: int, seed: int) -> list[np.ndarray]:
    """Users in a random order drawn from ``seed``, filled up to μ·ζ interactions."""
    _check_budget(mu, zeta)
    order = np.random.default_rng(seed).permutation(len(train))
    return _fill_budget(train, order, mu, zeta)


def longest_sequences(train: list[np.ndarray], mu: int, zeta: int) -> list[np.ndarray]:
    """Users by training length, longest first (ties: lower user index), up to μ·ζ interactions."""
    _check_budget(mu, zeta)
    lengths = np.fromiter((len(s) for s in train), dtype=np.int64, count=len(train))
    order = np.lexsort((np.arange(len(train)), -lengths))  # last key is the primary one
    return _fill_budget(train, order, mu, zeta)
