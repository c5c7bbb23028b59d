"""Every seed a run derives, and the process-wide random states: one home.

A run has one seed; everything random in it draws from a generator seeded by a function of
that seed here, so a run resumed from a checkpoint, or re-run on another machine, draws the
same numbers (docs/method.md, "Reproducibility").

Two derivations exist, and both stay: the outer loop's (prime arithmetic on the seed and
the step) and the summary training's (numpy's ``SeedSequence``). Published runs depend on
each bit for bit, so neither can be rewritten in terms of the other. A new derivation uses
``derive``, which spreads any tuple of integers through ``SeedSequence``.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from .device import cuda_rng_state, set_cuda_rng_state

_STEP_PRIME = 1_000_003
_EPOCH_PRIME = 7919
_FRESH_INIT_OFFSET = 10_000_019   # past any outer step: fresh-init draws never meet a step's
_CANDIDATES_MASK = 0x5A3D         # another stream than the step's own generator
_LEARNER_TAG = 0x1EA2             # the inner learner's draw (several learners)


def derive(*keys: int) -> int:
    """An independent 63-bit seed for the tuple ``keys`` (a seed and what it is for)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


# ---------------------------------------------------------- the outer loop
def step_seed(seed: int, step: int) -> int:
    """Outer step ``step``: its dropout, init draw, M, inner batches and ALT positions."""
    return (seed * _STEP_PRIME + step) % (2**63 - 1)


def epoch_order_seed(seed: int, epoch: int) -> int:
    """The order of the real windows in outer epoch ``epoch``."""
    return seed * _EPOCH_PRIME + epoch


def fresh_init_seed(seed: int, index: int) -> int:
    """The ``index``-th freshly initialised learner (``distill.init_from=scratch``)."""
    return step_seed(seed, _FRESH_INIT_OFFSET + index)


def candidates_seed(seed: int, step: int) -> int:
    """The sampled items of outer step ``step`` (``distill.sampled_items``): a stream of its
    own, so that turning sampling on leaves every other draw of the step as it was."""
    return step_seed(seed, step) ^ _CANDIDATES_MASK


def learner_draw(seed: int, step: int) -> int:
    """Which inner learner outer step ``step`` trains when there are several
    (``distill.learners``): a stream of its own, so one learner draws nothing more."""
    return derive(seed, step, _LEARNER_TAG)


# ------------------------------------------------------ training a learner
def training_seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for a learner's batch order and ALT's positions on a summary."""
    order_seed, alt_seed = np.random.SeedSequence(seed).generate_state(2)
    return int(order_seed), int(alt_seed)


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators (weights' initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global random states; on a GPU also its own, from which dropout draws there."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    cuda = cuda_rng_state()
    if cuda is not None:
        state["cuda"] = cuda
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    set_cuda_rng_state(state.get("cuda"))
