"""A generated dataset with sequential structure, for tests and quick experiments.

Why generated data: real files cannot be shipped with the project, and a test of a
sequential recommender needs data where *order* carries signal that a popularity ranking
cannot exploit. The generator builds that in on two time scales:

- long range: items are split into clusters (think genres); a user stays in a cluster for
  a while and, when leaving, mostly moves to the "next" cluster (a Markov chain on
  clusters), so the recent past tells which cluster comes next;
- short range: every item has a few likely successors (two in its own cluster, one in the
  next), followed with probability ``follow_prob``, so the last item tells a lot about the
  next one;
- popularity inside a cluster is Zipf-skewed, so a popularity baseline is not trivially 0.

Users never repeat an item (like ratings), so with the defaults every user leaves at least
``num_items - max_len`` (>= 101) items unseen for sampled evaluation.

Deterministic: one ``numpy.random.Generator`` seeded with ``seed`` drives everything.
"""
from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from td3.errors import ConfigError

#: Bump when the generator's output for a given config changes (enters cache keys).
GENERATOR_VERSION = 1

# Given a "follow" event: probabilities of the 1st, 2nd (same cluster) and 3rd (next
# cluster) successor.
_SUCCESSOR_PROBS = (0.6, 0.25, 0.15)
# When leaving a cluster: probability of moving to the next one (else a random one).
_NEXT_CLUSTER_PROB = 0.8


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated data (its hash identifies the dataset)."""

    num_users: int = 1000
    num_items: int = 500
    num_clusters: int = 10
    min_len: int = 20
    max_len: int = 60
    seed: int = 0
    follow_prob: float = 0.7      # P(next item is a successor of the current one)
    stay_prob: float = 0.85       # P(stay in the cluster) when not following a successor
    zipf_exponent: float = 1.0    # popularity skew inside a cluster

    #: The least each integer option can be on its own (the dataset loader checks these
    #: first, with the values' types; ``validate`` also checks how the options relate).
    MINIMUM: ClassVar[dict] = {"num_users": 1, "num_items": 3, "num_clusters": 1,
                               "min_len": 3, "max_len": 3, "seed": 0}

    def validate(self) -> "SyntheticConfig":
        problems = [f"{key}={getattr(self, key)} must be >= {least}"
                    for key, least in self.MINIMUM.items() if getattr(self, key) < least]
        if not self.num_clusters <= self.num_items // 3:
            problems.append(f"num_clusters={self.num_clusters} must be in "
                            f"[1, num_items // 3 = {self.num_items // 3}]")
        if not self.min_len <= self.max_len:
            problems.append(f"need min_len <= max_len, got {self.min_len}, {self.max_len}")
        if self.max_len > self.num_items:
            problems.append(f"max_len={self.max_len} > num_items={self.num_items} "
                            f"(users never repeat an item)")
        for name in ("follow_prob", "stay_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}={getattr(self, name)} not in [0, 1]")
        if problems:
            raise ConfigError("synthetic dataset: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict:
        return {"generator_version": GENERATOR_VERSION, **asdict(self)}


class _World:
    """The fixed structure users walk through: clusters, popularity, successors."""

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator):
        n, c = config.num_items, config.num_clusters
        self.num_clusters = c
        # members[k]: the items of cluster k, most popular first.
        self.members = [list(map(int, part)) for part in np.array_split(rng.permutation(n), c)]
        self.cluster_of = np.empty(n, dtype=np.int64)
        for k, items in enumerate(self.members):
            self.cluster_of[items] = k
        # cumulative Zipf weights per cluster, for drawing by bisection of a uniform.
        self.cumulative = []
        for items in self.members:
            weights = 1.0 / np.arange(1, len(items) + 1) ** config.zipf_exponent
            self.cumulative.append(list(np.cumsum(weights) / weights.sum()))
        # successors[i]: two other items of i's cluster, then one of the next cluster.
        self.successors = []
        for item in range(n):
            k = int(self.cluster_of[item])
            same = [x for x in self.members[k] if x != item]
            picks = rng.choice(len(same), size=2, replace=False)
            following = self.members[(k + 1) % c]
            self.successors.append(
                (same[picks[0]], same[picks[1]], following[int(rng.integers(len(following)))]))
        self.successor_cumulative = list(np.cumsum(_SUCCESSOR_PROBS))


def generate_synthetic(num_users: int = 1000, num_items: int = 500, num_clusters: int = 10,
                       min_len: int = 20, max_len: int = 60, seed: int = 0, *,
                       follow_prob: float = 0.7, stay_prob: float = 0.85,
                       zipf_exponent: float = 1.0) -> pd.DataFrame:
    """Generated interactions in the common schema (user, item, timestamp, rating).

    Users are ``u<k>``, items ``i<k>``; timestamps are step indices (distinct per user);
    ratings are 1.0. Rows are grouped by user in time order.
    """
    config = SyntheticConfig(num_users, num_items, num_clusters, min_len, max_len, seed,
                             follow_prob, stay_prob, zipf_exponent).validate()
    return generate_from_config(config)


def generate_from_config(config: SyntheticConfig) -> pd.DataFrame:
    rng = np.random.default_rng(config.seed)
    world = _World(config, rng)
    lengths = rng.integers(config.min_len, config.max_len + 1, size=config.num_users)
    start_clusters = rng.integers(config.num_clusters, size=config.num_users)
    # Three uniforms per step, drawn in bulk (a per-step numpy call would dominate runtime).
    uniforms = rng.random((int(lengths.sum()), 3))

    users, items, steps = [], [], []
    row = 0
    for user in range(config.num_users):
        sequence = _walk(world, config, int(start_clusters[user]), int(lengths[user]),
                         uniforms[row:row + lengths[user]], rng)
        row += int(lengths[user])
        users.extend([f"u{user}"] * len(sequence))
        items.extend(f"i{item}" for item in sequence)
        steps.extend(range(len(sequence)))
    return pd.DataFrame({
        "user": pd.Series(users, dtype=str),
        "item": pd.Series(items, dtype=str),
        "timestamp": np.asarray(steps, dtype=np.float64),
        "rating": np.ones(len(steps), dtype=np.float64),
    })


def _walk(world: _World, config: SyntheticConfig, cluster: int, length: int,
          uniforms: np.ndarray, rng: np.random.Generator) -> list[int]:
    """One user's item sequence (no repeats)."""
    seen: set[int] = set()
    sequence: list[int] = []
    current = None
    for follow_draw, pick_draw, move_draw in uniforms.tolist():
        item = None
        if current is not None and follow_draw < config.follow_prob:
            item = _follow(world, current, pick_draw, seen)
        if item is None:
            if current is not None:
                cluster = _move(world, config, cluster, move_draw)
            item = _popular_unseen(world, cluster, pick_draw, seen, rng)
        cluster = int(world.cluster_of[item])
        seen.add(item)
        sequence.append(item)
        current = item
    return sequence


def _follow(world: _World, current: int, draw: float, seen: set[int]) -> int | None:
    """A successor of ``current`` chosen by ``draw``; if already seen, the next likeliest
    unseen one; None when all are seen."""
    options = world.successors[current]
    first = bisect.bisect_right(world.successor_cumulative, draw)
    first = min(first, len(options) - 1)
    for offset in range(len(options)):
        candidate = options[(first + offset) % len(options)]
        if candidate not in seen:
            return candidate
    return None


def _move(world: _World, config: SyntheticConfig, cluster: int, draw: float) -> int:
    """Markov step on clusters: stay, go to the next one, or jump anywhere."""
    if draw < config.stay_prob:
        return cluster
    leave = (draw - config.stay_prob) / max(1.0 - config.stay_prob, 1e-12)   # in [0, 1)
    if leave < _NEXT_CLUSTER_PROB:
        return (cluster + 1) % world.num_clusters
    jump = (leave - _NEXT_CLUSTER_PROB) / (1.0 - _NEXT_CLUSTER_PROB)
    return min(int(jump * world.num_clusters), world.num_clusters - 1)


def _popular_unseen(world: _World, cluster: int, draw: float, seen: set[int],
                    rng: np.random.Generator) -> int:
    """A Zipf draw from the cluster, redrawn while it hits a seen item; a cluster the user
    has exhausted hands over to the next one."""
    for _ in range(world.num_clusters):
        members, cumulative = world.members[cluster], world.cumulative[cluster]
        for attempt in range(16):
            u = draw if attempt == 0 else rng.random()
            index = min(bisect.bisect_right(cumulative, u), len(members) - 1)
            if members[index] not in seen:
                return members[index]
        unseen = [i for i, item in enumerate(members) if item not in seen]
        if unseen:
            weights = np.diff([0.0] + cumulative)[unseen]
            pick = rng.choice(len(unseen), p=weights / weights.sum())
            return members[unseen[int(pick)]]
        cluster = (cluster + 1) % world.num_clusters
    raise AssertionError("every item seen; validate() guarantees max_len <= num_items")
