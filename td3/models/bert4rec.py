"""BERT4Rec (Sun et al., CIKM'19), laid out as RecBole's implementation.

The same post-LayerNorm transformer blocks as SASRec (imported from ``sasrec.py``) but with
bidirectional attention: every real position sees every other real position, padding keys
are masked. Training is the cloze task: some items are replaced by a [MASK] token and
predicted from both sides. Inference appends [MASK] after the sequence and scores its
feature (``next_features``).

[MASK] is a separate learned vector ``mask_embedding`` (not a row of ``item_embedding``),
so ``logits`` stays over ids 0..num_items as the base class requires. In id inputs the id
``mask_id = num_items + 1`` stands for [MASK]; any input (ids or distributions) can also
mark [MASK] positions with the ``masked`` argument of ``forward``.

Training on item distributions (the distilled summary S, (B, ζ, |V|)): a bidirectional
model cannot take "features at every position = next-item prediction from the prefix"
from one pass, because the feature at t attends to the inputs at t+1, ... — among them
the very distribution it would be asked to predict. ``soft_cloze_loss(P)`` is the
distributional cloze objective instead: positions are drawn as in ``train_loss``, their
inputs are replaced by [MASK], and the model's softmax at each masked position is matched
to the original distribution P[:, t] by KL(P[:, t] ‖ q_t). A masked position cannot see its
own target, and every position can serve as a target in one pass. The last-position
next-item KL of the other learners is also leak-free here when computed through
``next_features(S[:, :ζ-1], lengths)``, which places [MASK] after the prefix and masks all
later keys.

Defaults: RecBole's BERT4Rec.yaml (2 layers, 2 heads, hidden 64, inner 256, dropouts
0.2/0.2, GELU, LayerNorm eps 1e-12, init std 0.02, mask_ratio 0.2, ft_ratio 0.5).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Dropout, Embedded, SequentialRecommender
from .sasrec import MASKED, SASRec, Block


class BERT4Rec(SequentialRecommender):
    causal = False

    def __init__(self, num_items: int, max_len: int = 50, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, inner_size: int = 256, hidden_dropout: float = 0.2,
                 attn_dropout: float = 0.2, mask_ratio: float = 0.2, ft_ratio: float = 0.5,
                 layer_norm_eps: float = 1e-12, init_std: float = 0.02):
        super().__init__(num_items, hidden_size)
        self.max_len = max_len
        self.mask_ratio = mask_ratio  # probability that a real item is masked (cloze samples)
        self.ft_ratio = ft_ratio  # fraction of sequences that mask only their last item
        self.init_std = init_std
        self.mask_id = num_items + 1  # id of [MASK] in id inputs; never a logit column
        self.mask_embedding = nn.Parameter(torch.zeros(hidden_size))
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout)
        self.blocks = nn.ModuleList(
            Block(hidden_size, num_heads, inner_size, attn_dropout, hidden_dropout, layer_norm_eps)
            for _ in range(num_layers))
        self.apply(self._init_weights)
        nn.init.normal_(self.mask_embedding, std=init_std)

    _init_weights = SASRec._init_weights  # N(0, init_std) weights, zero biases, unit LayerNorms

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                masked: torch.Tensor | None = None) -> torch.Tensor:
        """x ids or distributions; ``masked`` (B, L) bool: positions whose input is [MASK]."""
        mask = self.default_mask(x, mask)  # (B, L); the id mask_id counts as a real position
        if x.dtype in (torch.int64, torch.int32):
            is_mask = x == self.mask_id
            masked = is_mask if masked is None else masked | is_mask
            x = x.masked_fill(is_mask, 0)
        L = mask.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds BERT4Rec max_len {self.max_len}")
        e = self.embed_items(x)  # (B, L, d)
        if masked is not None:
            mask = mask | masked
            e = torch.where(masked.unsqueeze(-1), self.mask_embedding, e)
        h = self.dropout(self.norm(e + self.position_embedding.weight[:L]))  # (B, L, d)
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(~mask, MASKED)
        bias = bias[:, None, None, :]  # (B, 1, 1, L): every query sees every real key
        for block in self.blocks:
            h = block(h, bias)
        return h  # (B, L, d)

    # -------------------------------------------------------------- inference
    def _make_room(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add an empty slot after each sequence: (B, L, ...) -> (B, min(L+1, max_len), ...), slot (B,).

        A sequence that would not fit in max_len loses its first item (RecBole does the same).
        """
        B, L = x.shape[:2]
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds BERT4Rec max_len {self.max_len}")
        x = torch.cat([x, x.new_zeros((B, 1) + x.shape[2:])], dim=1)  # (B, L+1, ...)
        if L + 1 <= self.max_len:
            return x, lengths
        full = lengths >= L  # (B,) no room left
        shape = (B, 1) + (1,) * (x.dim() - 2)
        x = torch.where(full.view(shape), x[:, 1:], x[:, :-1])  # (B, L, ...)
        return x, torch.where(full, lengths - 1, lengths)

    def next_features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Feature of a [MASK] placed right after each sequence: (B, d).

        Positions at or after ``lengths`` are ignored (keys masked), so whatever x holds there
        cannot leak into the prediction.
        """
        if isinstance(x, Embedded):  # item embeddings (B, L, d): room made in embedding space
            value, slot = self._make_room(x.value, lengths)  # an empty slot embeds to zeros too
            x = Embedded(value)
        else:
            x, slot = self._make_room(x, lengths)  # (B, L', ...), (B,)
        positions = torch.arange(x.shape[1], device=x.device)
        masked = positions == slot.unsqueeze(1)  # (B, L')
        h = self.forward(x, mask=positions <= slot.unsqueeze(1), masked=masked)  # (B, L', d)
        return h[masked]  # (B, d): one slot per row

    # --------------------------------------------------------------- training
    def draw_cloze_mask(self, real: torch.Tensor) -> torch.Tensor:
        """(B, L) real positions (left-aligned) -> (B, L) positions to mask.

        A fraction ``ft_ratio`` of sequences mask only their last item (the inference
        situation: [MASK] after an intact prefix); the others mask each real item with
        probability ``mask_ratio``, at least one per non-empty sequence.
        """
        B, L = real.shape
        u = torch.rand(B, L, device=real.device)
        masked = (u < self.mask_ratio) & real
        one = u.masked_fill(~real, 2.0).argmin(dim=1, keepdim=True)  # (B, 1) fallback position
        positions = torch.arange(L, device=real.device)
        masked |= ~masked.any(dim=1, keepdim=True) & (positions == one)
        last = (real.sum(dim=1, keepdim=True) - 1)  # (B, 1)
        fine_tune = torch.rand(B, 1, device=real.device) < self.ft_ratio
        masked = torch.where(fine_tune, positions == last, masked)
        return masked & real

    def train_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cloze cross-entropy on ids, at masked positions only.

        The full sequence is inputs[:n] followed by targets[n-1] (n = number of real inputs;
        the other targets are the shifted inputs and add nothing). A sequence that then
        exceeds max_len loses its first item.
        """
        n = (inputs != 0).sum(dim=1)  # (B,)
        last = targets.gather(1, (n - 1).clamp(min=0).unsqueeze(1)) * (n > 0).unsqueeze(1)  # (B, 1)
        seq, slot = self._make_room(inputs, n)  # (B, L')
        seq = seq.scatter(1, slot.unsqueeze(1), last)  # full sequences
        masked = self.draw_cloze_mask(seq != 0)  # (B, L')
        h = self.forward(seq, masked=masked)  # (B, L', d)
        if not masked.any():
            return h.sum() * 0.0
        return self.cross_entropy(h[masked], seq[masked])

    def soft_cloze_loss(self, P: torch.Tensor, mask: torch.Tensor | None = None,
                        masked: torch.Tensor | None = None) -> torch.Tensor:
        """Distributional cloze: mean over masked positions of KL(P[b, t] ‖ softmax(logits[b, t])).

        P (B, L, |V|) or (B, L, |V|+1) item distributions (column 0, padding, must carry no
        mass); ``mask`` (B, L) real positions (default all); ``masked`` the positions to
        replace by [MASK] and predict (default: drawn as in ``train_loss``).
        """
        mask = self.default_mask(P, mask)  # (B, L)
        if P.shape[-1] == self.num_items + 1:
            P = P[..., 1:]  # (B, L, V)
        if masked is None:
            masked = self.draw_cloze_mask(mask)
        masked = masked & mask
        h = self.forward(P, mask=mask, masked=masked)  # (B, L, d)
        if not masked.any():
            return h.sum() * 0.0
        log_q = self.logits(h[masked])[:, 1:].log_softmax(dim=-1)  # (M, V): padding has no mass
        target = P[masked]  # (M, V)
        return (torch.xlogy(target, target) - target * log_q).sum(dim=-1).mean()
