"""Evaluate a next-item model on the validation or test split (docs/protocol.md).

Ranking protocols (``docs/protocol.md``):
- ``"recbole100"``: the paper's; each user's target is ranked against 100 negatives drawn
  as RecBole's RepeatableSampler draws them for sequential models (every item but the
  split's target, with replacement: the user's own earlier items can be negatives);
- ``"unseen100"``: the target against 100 items the user never interacted with (drawn
  without replacement), an easier protocol (td3 called it "uni100" before it had both);
- ``"full"``: the target is ranked against every real item (never padding). With
  ``exclude_history=True`` the user's earlier items do not count against the target:
  the training items for split ``"valid"``; training items + the validation item for
  split ``"test"``. The target itself is never excluded.

Ranks are pessimistic under ties (see ``td3.metrics``). Both protocols rank the same
score rows, computed once per batch.

Both sampled protocols use negatives stored with the dataset, drawn once per dataset, so
every run ranks against the same candidates.

The data object needs only: ``num_items``, ``num_users``,
``negatives_for(protocol, split) -> (U, 100)``,
``eval_inputs(split, max_len) -> (inputs (U, max_len), lengths (U,), targets (U,))`` and
``history(u) -> all of user u's items in time order`` (train..., valid, test). Row u of
``eval_inputs`` / the negatives is user u (0-based).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from td3.errors import ConfigError, DataError
from td3.metrics import KS, full_ranks, mean_metrics, metrics_from_ranks, sampled_ranks

SAMPLED: tuple[str, ...] = ("recbole100", "unseen100")
PROTOCOLS: tuple[str, ...] = (*SAMPLED, "full")
SPLITS: tuple[str, ...] = ("valid", "test")
#: Names records held before a protocol was renamed: records written then still load.
LEGACY_PROTOCOLS = {"uni100": "unseen100"}

__all__ = ["PROTOCOLS", "SAMPLED", "SPLITS", "LEGACY_PROTOCOLS", "EvalResult", "evaluate",
           "protocol_problems"]


def protocol_problems(protocols: Sequence[str], name: str = "eval.protocols") -> list[str]:
    """What is wrong with a list of ranking protocols (empty list: nothing)."""
    protocols = [protocols] if isinstance(protocols, str) else list(protocols)
    problems = []
    for p in protocols:
        if p in LEGACY_PROTOCOLS:
            problems.append(f"{name}: {p!r} is ambiguous and no longer accepted: it was td3's "
                            f"{LEGACY_PROTOCOLS[p]!r} (negatives the user never interacted with); "
                            f"the paper's protocol is 'recbole100' (RecBole's negatives)")
        elif p not in PROTOCOLS:
            problems.append(f"{name}: unknown ranking protocol {p!r}; choose from {', '.join(PROTOCOLS)}")
    if not protocols:
        problems.append(f"{name} is empty; choose from {', '.join(PROTOCOLS)}")
    if len(set(protocols)) != len(protocols):
        problems.append(f"{name} lists a protocol twice: {protocols}")
    return problems


@dataclass
class EvalResult:
    """Metrics of one evaluation.

    metrics:  {protocol: {metric name: mean over users (float, a fraction)}}
    per_user: {protocol: {metric name: np.ndarray (U,) float64}}, row i is ``users[i]``
    users:    np.ndarray (U,) of user indices, in order
    ranks:    {protocol: np.ndarray (U,) int64}, the ranks the metrics come from
    """

    split: str
    users: np.ndarray
    metrics: dict[str, dict[str, float]]
    per_user: dict[str, dict[str, np.ndarray]]
    ranks: dict[str, np.ndarray] = field(default_factory=dict)
    exclude_history: bool = False

    def to_frame(self) -> pd.DataFrame:
        """Long per-user table: columns ``user, protocol, metric, value`` (one row per
        user × protocol × metric), for saving and paired significance tests."""
        parts = []
        for protocol, per_metric in self.per_user.items():
            for name, values in per_metric.items():
                parts.append(pd.DataFrame({
                    "user": self.users,
                    "protocol": protocol,
                    "metric": name,
                    "value": np.asarray(values, dtype=np.float64),
                }))
        if not parts:
            return pd.DataFrame({"user": pd.Series(dtype=np.int64),
                                 "protocol": pd.Series(dtype=object),
                                 "metric": pd.Series(dtype=object),
                                 "value": pd.Series(dtype=np.float64)})
        frame = pd.concat(parts, ignore_index=True)
        frame.attrs["split"] = self.split
        frame.attrs["exclude_history"] = self.exclude_history
        return frame


def _model_device(model: Any) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _excluded_items(data: Any, split: str, users: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
    """Per user, the earlier items that do not count against the target."""
    pos = -2 if split == "valid" else -1  # where the target sits in the history
    out = []
    for u, target in zip(users, targets):
        hist = np.asarray(data.history(int(u)), dtype=np.int64).reshape(-1)
        if hist.size < -pos or hist[pos] != target:
            raise DataError(
                f"user {int(u)}: history does not end with the {split} target {int(target)} "
                f"at position {pos}; history(u) must list all the user's items in time order")
        out.append(hist[:pos])  # valid: training items; test: training + valid item
    return out


def evaluate(model: Any, data: Any, split: str,
             protocols: Sequence[str] | str = PROTOCOLS, max_len: int = 50,
             batch_size: int = 512, device: torch.device | str | None = None,
             exclude_history: bool = False, ks: Sequence[int] = KS) -> EvalResult:
    """Score every user's next item after its ``split`` input sequence and rank the target.

    ``model`` is anything with ``score_next(x (B, L) long, lengths (B,) long) ->
    (B, num_items + 1)`` and ``eval()`` / ``train()``; it is put in eval mode and run
    under ``torch.no_grad()``, and its previous train/eval mode is restored afterwards.
    """
    if isinstance(protocols, str):
        protocols = (protocols,)
    protocols = tuple(protocols)
    problems = protocol_problems(protocols, "protocols")
    if problems:
        raise ConfigError("; ".join(problems))
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {SPLITS}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size}")

    num_items = int(data.num_items)
    inputs, lengths, targets = data.eval_inputs(split, max_len)
    inputs = torch.as_tensor(np.asarray(inputs), dtype=torch.long)
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
    targets_np = np.asarray(targets, dtype=np.int64)
    n_users = targets_np.shape[0]
    if inputs.shape[0] != n_users or lengths.shape[0] != n_users:
        raise DataError("eval_inputs returned inputs, lengths and targets of different lengths")
    if n_users != int(data.num_users):
        raise DataError(f"eval_inputs returned {n_users} rows for {data.num_users} users")
    if n_users and (targets_np.min() < 1 or targets_np.max() > num_items):
        raise DataError(f"{split} targets must be item ids in 1..{num_items}")
    users = np.arange(n_users, dtype=np.int64)
    negatives = {}
    for p in protocols:
        if p in SAMPLED:
            negatives[p] = np.asarray(data.negatives_for(p, split), dtype=np.int64)
            if negatives[p].ndim != 2 or negatives[p].shape[0] != n_users:
                raise DataError(f"{p} negatives must be (U, C) with U = {n_users}; "
                                f"got shape {negatives[p].shape}")
    exclude = (_excluded_items(data, split, users, targets_np)
               if exclude_history and "full" in protocols else None)

    device = torch.device(device) if device is not None else _model_device(model)
    ranks: dict[str, list[np.ndarray]] = {p: [] for p in protocols}
    was_training = getattr(model, "training", None)
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n_users, batch_size):
                stop = min(start + batch_size, n_users)
                x = inputs[start:stop].to(device)
                n = lengths[start:stop].to(device)
                t = torch.from_numpy(targets_np[start:stop]).to(device)
                scores = model.score_next(x, n)
                if tuple(scores.shape) != (stop - start, num_items + 1):
                    raise ValueError(
                        f"score_next returned shape {tuple(scores.shape)}; expected "
                        f"{(stop - start, num_items + 1)}")
                for p, neg in negatives.items():
                    neg = torch.from_numpy(neg[start:stop]).to(scores.device)
                    ranks[p].append(sampled_ranks(scores, t, neg).cpu().numpy())
                if "full" in protocols:
                    ex = exclude[start:stop] if exclude is not None else None
                    ranks["full"].append(full_ranks(scores, t, ex).cpu().numpy())
    finally:
        if was_training is None or was_training:
            model.train()
        else:
            model.eval()

    all_ranks = {p: (np.concatenate(r) if r else np.zeros(0, dtype=np.int64)).astype(np.int64)
                 for p, r in ranks.items()}
    per_user = {p: metrics_from_ranks(r, ks) for p, r in all_ranks.items()}
    metrics = {p: mean_metrics(v) for p, v in per_user.items()} if n_users else {
        p: {name: float("nan") for name in v} for p, v in per_user.items()}
    return EvalResult(split=split, users=users, metrics=metrics, per_user=per_user,
                      ranks=all_ranks, exclude_history=exclude_history)
