"""The learners, by name: ``build_model("sasrec", num_items, hidden_size=32, ...)``.

Every model is a ``SequentialRecommender`` (see ``base.py``): ids or item distributions in,
sequence features and item logits out. ``build_model`` refuses impossible configurations
with a ``ConfigError`` before any tensor is allocated.
"""
from __future__ import annotations

import inspect
import numbers

from ..errors import ConfigError
from .base import SequentialRecommender
from .bert4rec import BERT4Rec
from .gru4rec import GRU4Rec
from .narm import NARM
from .sasrec import SASRec

MODELS: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "narm": NARM,
    "bert4rec": BERT4Rec,
}

# Options that must be positive integers, and options that are probabilities (with their
# allowed interval), wherever a model has them.
_POSITIVE_INTS = ("max_len", "hidden_size", "embedding_size", "num_layers", "num_heads", "inner_size")
_PROBABILITIES = {"dropout": "[0, 1)", "emb_dropout": "[0, 1)", "ct_dropout": "[0, 1)",
                  "hidden_dropout": "[0, 1)", "attn_dropout": "[0, 1)",
                  "mask_ratio": "(0, 1]", "ft_ratio": "[0, 1]"}


def _is_positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _in_interval(value, interval: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    low_ok = value > 0 if interval[0] == "(" else value >= 0
    high_ok = value < 1 if interval[-1] == ")" else value <= 1
    return low_ok and high_ok


def model_problems(name: str, **kwargs) -> list[str]:
    """What is impossible in learner ``name`` with options ``kwargs`` (empty: buildable), known
    before any data: runs check their learners with it before they start."""
    key = str(name).lower()
    if key not in MODELS:
        return [f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"]
    params = inspect.signature(MODELS[key].__init__).parameters
    accepted = [p for p in params if p not in ("self", "num_items")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        return [f"model {key!r} got unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"]
    config = {p: params[p].default for p in accepted} | kwargs
    problems = []
    for option in _POSITIVE_INTS:
        if option in config and not (option == "embedding_size" and config[option] is None):
            if not _is_positive_int(config[option]):
                problems.append(f"model {key!r}: {option} must be a positive integer, got {config[option]!r}")
    for option, interval in _PROBABILITIES.items():
        if option in config and not _in_interval(config[option], interval):
            problems.append(f"model {key!r}: {option} must lie in {interval}, got {config[option]!r}")
    if not problems and "num_heads" in config and config["hidden_size"] % config["num_heads"]:
        problems.append(f"model {key!r}: hidden_size {config['hidden_size']} is not divisible "
                        f"by num_heads {config['num_heads']}")
    return problems


def build_model(name: str, num_items: int, **kwargs) -> SequentialRecommender:
    """Instantiate a learner by name, refusing impossible configurations with ConfigError."""
    problems = model_problems(name, **kwargs)
    if not _is_positive_int(num_items):
        problems.append(f"model {str(name).lower()!r}: num_items must be a positive integer, got {num_items!r}")
    if problems:
        raise ConfigError("; ".join(problems))
    return MODELS[str(name).lower()](num_items, **kwargs)


__all__ = ["MODELS", "build_model", "model_problems", "SequentialRecommender", "SASRec", "GRU4Rec", "NARM", "BERT4Rec"]
