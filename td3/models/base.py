"""The one interface every learner implements (SASRec, GRU4Rec, NARM, BERT4Rec).

Conventions (shared with ``td3.data``):
- item ids run 1..num_items; id 0 is padding. Sequences are left-aligned and padded on
  the right with 0 (RecBole's layout), so a sequence of length n occupies positions 0..n-1.
- an input ``x`` is either item ids, a LongTensor (B, L), or item distributions, a float
  tensor (B, L, num_items) over the real items 1..num_items (no padding column) or
  (B, L, num_items + 1) with column 0 for padding. A distribution enters the model as
  ``P @ E`` with E the model's own item embedding table, so a one-hot distribution gives
  exactly the embedding of that id. An all-zero row embeds to zero, like padding.
- an input may also be ``Embedded(e)``: item embeddings (B, L, d) computed by the caller.
  The distillation engine uses it when the learner's item table is frozen: P·E is then
  the same for every inner step and is computed once per outer step.
- ``mask`` (B, L) bool marks real positions. For ids it defaults to ``x != 0``; for
  distributions it defaults to all-True (pass it when a distribution batch has padding).
- ``forward(x, mask) -> (B, L, d)`` sequence features. For causal models (SASRec,
  GRU4Rec, NARM) the feature at position t depends only on positions <= t, so one pass
  over a sequence yields the next-item features of all its prefixes.
- ``logits(h) -> (..., num_items + 1)``: h · Eᵀ, with the padding column set to -inf so
  that padding is never predicted nor ranked above a target.
- ``next_features(x, lengths) -> (B, d)``: the features that score the item following
  each sequence (causal models: the feature at position lengths-1; BERT4Rec: the feature
  of a [MASK] token placed after the sequence).

Models import nothing from ``td3.data`` or the distillation code.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear_ce import linear_cross_entropy


class Embedded:
    """Item embeddings (B, L, d) handed to a model in place of ids or distributions."""

    __slots__ = ("value",)

    def __init__(self, value: torch.Tensor):
        self.value = value

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def device(self):
        return self.value.device


class Dropout(nn.Module):
    """``nn.Dropout``'s function (zero with probability p, scale the rest by 1/(1-p)) with
    its mask drawn by ``torch.rand``: on CPU ``nn.Dropout`` draws through ``bernoulli_``,
    element by element, a large share of an inner step (docs/performance.md, §2)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability {p} must be in [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SequentialRecommender(nn.Module):
    """Base class holding the item embedding table and the shared plumbing."""

    #: True when the feature at position t only sees positions <= t.
    causal: bool = True

    def __init__(self, num_items: int, hidden_size: int):
        super().__init__()
        self.num_items = num_items
        self.hidden_size = hidden_size
        # Row 0 is padding and stays zero (padding_idx keeps its gradient at zero).
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)

    # ----------------------------------------------------------------- inputs
    def embed_items(self, x: torch.Tensor) -> torch.Tensor:
        """Ids (B, L) or distributions (B, L, V|V+1) -> item embeddings (B, L, d)."""
        if isinstance(x, Embedded):
            return x.value
        table = self.item_embedding.weight
        if x.dtype in (torch.int64, torch.int32):
            return F.embedding(x, table, padding_idx=0)
        if x.shape[-1] == self.num_items:
            return x @ table[1:]
        if x.shape[-1] == self.num_items + 1:
            return x @ table
        raise ValueError(
            f"distribution input has {x.shape[-1]} columns; expected {self.num_items} "
            f"(real items) or {self.num_items + 1} (with padding column)")

    @staticmethod
    def default_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None:
            return mask.bool()
        if isinstance(x, Embedded):
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if x.dtype in (torch.int64, torch.int32):
            return x != 0
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)

    # ---------------------------------------------------------------- outputs
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Features (..., d) -> scores over ids 0..num_items, padding column = -inf."""
        scores = h @ self.item_embedding.weight.T  # (..., num_items + 1)
        # the padding column masked in place: a new (pad, scores[..., 1:]) tensor cost a copy
        # of every score in each inner and outer step (the matmul's backward needs h and the
        # table, not its output, so the in-place fill is safe under autograd)
        scores[..., 0] = float("-inf")
        return scores

    def cross_entropy(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-item cross-entropy of features h (n, d) against item ids (n,) in 1..num_items:
        ``F.cross_entropy(self.logits(h), targets)`` without the (n, |V|+1) scores (first order only)."""
        return linear_cross_entropy(h, self.item_embedding.weight[1:], targets - 1)

    def next_features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Features scoring the item after each sequence: (B, d)."""
        return self.at_last(self.forward(x), lengths)

    @staticmethod
    def at_last(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """h (B, L, d) at each sequence's last real position lengths - 1: (B, d)."""
        index = (lengths - 1).clamp(min=0).to(h.device).view(-1, 1, 1).expand(-1, 1, h.shape[-1])
        return h.gather(1, index).squeeze(1)

    def score_next(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, num_items + 1) scores for the next item."""
        return self.logits(self.next_features(x, lengths))

    # --------------------------------------------------------------- training
    def train_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Next-item cross-entropy over all items, mean over positions with a target.

        inputs (B, L) ids; targets (B, L) ids, targets[b, t] is the item following
        inputs[b, :t+1], 0 where no loss is taken. Logits are computed only at positions
        that carry a loss (they are the expensive part: positions × |V|).
        """
        h = self.forward(inputs)  # (B, L, d)
        keep = targets != 0
        return self.cross_entropy(h[keep], targets[keep])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
