"""Ranks -> HR / NDCG / MRR @k, for sampled (recbole100, unseen100) and full ranking.

Conventions (shared with ``td3.models`` and ``td3.data``, but nothing is imported from
them): item ids run 1..num_items, id 0 is padding; a score matrix has shape
(B, num_items + 1) and its column 0 (padding) is never a candidate.

Ranks start at 1 and are *pessimistic*: every candidate scoring >= the target counts as
ranked above it, so ties never favour the target (a model that scores everything equally
gets the worst rank, not the best). NaN is treated as "worst possible" for the target and
"beats the target" for a candidate, so a NaN can never improve a rank.

With one held-out item per user these are RecBole's definitions (Hit, NDCG, MRR with
``pos_len = 1``):

    HR@k   = 1[rank <= k]
    NDCG@k = 1 / log2(rank + 1)   if rank <= k else 0
    MRR@k  = 1 / rank             if rank <= k else 0
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

KS: tuple[int, ...] = (5, 10, 20)
METRICS: tuple[str, ...] = ("HR", "NDCG", "MRR")

__all__ = [
    "KS",
    "METRICS",
    "metric_names",
    "sampled_ranks",
    "full_ranks",
    "history_mask",
    "metrics_from_ranks",
    "mean_metrics",
]


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """``['HR@5', 'HR@10', ..., 'MRR@20']`` in the order ``metrics_from_ranks`` uses."""
    return [f"{m}@{k}" for m in METRICS for k in ks]


# --------------------------------------------------------------------------- helpers
def _as_scores(scores) -> torch.Tensor:
    scores = torch.as_tensor(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, num_items + 1); got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        scores = scores.double()
    return scores


def _as_ids(ids, device: torch.device, name: str) -> torch.Tensor:
    ids = torch.as_tensor(ids, device=device)
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name} must hold integer item ids; got dtype {ids.dtype}")
    return ids.long()


def _target_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(
            f"targets must be (B,) with B = {scores.shape[0]}; got shape {tuple(targets.shape)}")
    num_items = scores.shape[1] - 1
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) > num_items):
        raise ValueError(
            f"target ids must lie in 1..{num_items} (0 is padding); got range "
            f"{int(targets.min())}..{int(targets.max())}")
    return scores.gather(1, targets.view(-1, 1))  # (B, 1)


# ----------------------------------------------------------------------------- ranks
def sampled_ranks(scores, targets, negatives) -> torch.Tensor:
    """Rank of each target among itself and its sampled negatives (recbole100, unseen100).

    scores (B, num_items + 1), targets (B,), negatives (B, C) item ids (C = 100 in the
    paper's protocol; a negative drawn twice counts twice, as in RecBole). rank = 1 + #{negatives with score >= target score}; a NaN negative
    counts as beating the target, a NaN target gets the worst rank 1 + C.
    Returns a LongTensor (B,) on the scores' device.
    """
    scores = _as_scores(scores)
    targets = _as_ids(targets, scores.device, "targets")
    negatives = _as_ids(negatives, scores.device, "negatives")
    if negatives.dim() != 2 or negatives.shape[0] != scores.shape[0]:
        raise ValueError(
            f"negatives must be (B, C) with B = {scores.shape[0]}; got {tuple(negatives.shape)}")
    num_items = scores.shape[1] - 1
    if negatives.numel() and (int(negatives.min()) < 1 or int(negatives.max()) > num_items):
        raise ValueError(f"negative ids must lie in 1..{num_items} (0 is padding)")
    t = _target_scores(scores, targets)  # (B, 1)
    if bool((negatives == targets.view(-1, 1)).any()):
        raise ValueError("a sampled negative equals the user's target item")
    n = scores.gather(1, negatives)  # (B, C)
    beats = (n >= t) | torch.isnan(n) | torch.isnan(t)
    return 1 + beats.sum(dim=1)


def history_mask(items, batch_size: int, num_items: int,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Per-row item lists -> (B, num_items + 1) bool mask (True = excluded).

    ``items`` is either a sequence of B 1-D id arrays/lists, or a 2-D integer array
    (B, H) padded with 0. Id 0 is ignored (padding column).
    """
    mask = torch.zeros(batch_size, num_items + 1, dtype=torch.bool, device=device)
    if isinstance(items, (torch.Tensor, np.ndarray)) and np.ndim(items) == 2:
        ids = _as_ids(items, mask.device, "exclude")
        if ids.shape[0] != batch_size:
            raise ValueError(f"exclude has {ids.shape[0]} rows; expected {batch_size}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > num_items):
            raise ValueError(f"excluded ids must lie in 0..{num_items}")
        mask.scatter_(1, ids, True)
    else:
        if len(items) != batch_size:
            raise ValueError(f"exclude has {len(items)} rows; expected {batch_size}")
        rows = [np.asarray(r, dtype=np.int64).reshape(-1) for r in items]
        lens = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
        if lens.sum():
            cols = np.concatenate(rows)
            if cols.min() < 0 or cols.max() > num_items:
                raise ValueError(f"excluded ids must lie in 0..{num_items}")
            row_idx = np.repeat(np.arange(batch_size, dtype=np.int64), lens)
            mask[torch.from_numpy(row_idx).to(mask.device),
                 torch.from_numpy(cols).to(mask.device)] = True
    mask[:, 0] = False
    return mask


def full_ranks(scores, targets, exclude=None) -> torch.Tensor:
    """Rank of each target among all real items 1..num_items.

    rank = 1 + #{items i != target, not excluded, with score_i >= target score or NaN};
    a NaN target gets the worst rank 1 + (number of candidates). The padding column never
    counts. ``exclude`` (optional): a (B, num_items + 1) bool mask, or per-row item lists
    (see ``history_mask``) of items that do not count against the target (e.g. the user's
    history); the target itself is never excluded (it is never a competitor anyway).
    Work is (B, num_items) per call, so call it per batch. Returns a LongTensor (B,).
    """
    scores = _as_scores(scores)
    targets = _as_ids(targets, scores.device, "targets")
    batch, num_items = scores.shape[0], scores.shape[1] - 1
    t = _target_scores(scores, targets)  # (B, 1)
    items = scores[:, 1:]  # (B, V): real items only
    beats = (items >= t) | torch.isnan(items) | torch.isnan(t)
    # The target is not its own competitor.
    beats.scatter_(1, (targets - 1).view(-1, 1), False)
    if exclude is not None:
        if isinstance(exclude, torch.Tensor) and exclude.dtype == torch.bool:
            mask = exclude.to(scores.device)
        elif isinstance(exclude, np.ndarray) and exclude.dtype == np.bool_:
            mask = torch.from_numpy(exclude).to(scores.device)
        else:
            mask = history_mask(exclude, batch, num_items, scores.device)
        if tuple(mask.shape) != (batch, num_items + 1):
            raise ValueError(
                f"exclude mask must be (B, num_items + 1) = {(batch, num_items + 1)}; "
                f"got {tuple(mask.shape)}")
        beats &= ~mask[:, 1:]
    return 1 + beats.sum(dim=1)


# --------------------------------------------------------------------------- metrics
def metrics_from_ranks(ranks, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """Per-user HR@k, NDCG@k, MRR@k (float64 arrays, same length as ``ranks``)."""
    if isinstance(ranks, torch.Tensor):
        ranks = ranks.detach().cpu().numpy()
    r = np.asarray(ranks)
    if r.ndim != 1:
        raise ValueError(f"ranks must be 1-D; got shape {r.shape}")
    if r.size and (not np.all(np.isfinite(r)) or r.min() < 1):
        raise ValueError("ranks must be finite and >= 1")
    r = r.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    hit = {k: r <= k for k in ks}
    for k in ks:
        out[f"HR@{k}"] = hit[k].astype(np.float64)
    for k in ks:
        out[f"NDCG@{k}"] = np.where(hit[k], 1.0 / np.log2(r + 1.0), 0.0)
    for k in ks:
        out[f"MRR@{k}"] = np.where(hit[k], 1.0 / r, 0.0)
    return out


def mean_metrics(per_user: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Average per-user values over users: plain Python floats, fractions (not %)."""
    out: dict[str, float] = {}
    for name, values in per_user.items():
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            raise ValueError(f"no users to average for {name}")
        out[name] = float(v.mean())
    return out
