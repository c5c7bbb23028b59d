"""GRU4Rec (Hidasi et al., ICLR'16; Tan et al., DLRS'16), laid out as RecBole's implementation.

item embedding -> dropout -> GRU (no bias) -> dense back to the embedding size, at every
position. The GRU is causal, so one pass gives the next-item features of every prefix, and
the dense layer makes the features as wide as the item table so that logits = features · Eᵀ.

``nn.GRU`` runs torch's native kernels, which support double backward,
``torch.func.functional_call`` and ``higher`` (tests/test_models.py checks it with
gradgradcheck). On CUDA torch would pick cuDNN's RNN instead, whose backward can be neither
differentiated again (the distillation's inner loop needs that) nor run in eval mode (the
outer loss scores the unrolled learner without dropout): ``native_gru`` keeps cuDNN out.

Defaults: RecBole's GRU4Rec.yaml has embedding 64, hidden 128, 1 layer, dropout 0.3. Here
``hidden_size`` defaults to 64 and ``embedding_size`` to ``hidden_size``; pass
``embedding_size=64, hidden_size=128`` for RecBole's sizes. Note ``self.hidden_size`` is the
GRU state width; the feature width is ``self.embedding_size`` (= the item table's width).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Dropout, SequentialRecommender


def native_gru(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """``gru(x)``'s outputs (B, L, H) through torch's own kernels, never cuDNN's (see above).
    The switch is process-wide while the GRU runs, and restored after it."""
    if not x.is_cuda:
        return gru(x)[0]
    enabled = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        return gru(x)[0]
    finally:
        torch.backends.cudnn.enabled = enabled


class GRU4Rec(SequentialRecommender):
    causal = True

    def __init__(self, num_items: int, max_len: int = 50, hidden_size: int = 64,
                 embedding_size: int | None = None, num_layers: int = 1, dropout: float = 0.3):
        embedding_size = embedding_size or hidden_size
        super().__init__(num_items, embedding_size)
        self.hidden_size = hidden_size  # GRU state width
        self.embedding_size = embedding_size  # item table and feature width
        self.max_len = max_len  # unused by the architecture; kept for a uniform interface
        self.emb_dropout = Dropout(dropout)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(hidden_size, embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # RecBole: Xavier-normal item table, Xavier-uniform GRU weights (RecBole only touches
        # layer 0; every layer here), default init for the dense layer.
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()  # padding row stays zero
        for name, weight in self.gru.named_parameters():
            if name.startswith("weight_"):
                nn.init.xavier_uniform_(weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # ``mask`` is not needed: padding sits on the right and the GRU only looks left.
        e = self.emb_dropout(self.embed_items(x))  # (B, L, E)
        h = native_gru(self.gru, e)  # (B, L, H)
        return self.dense(h)  # (B, L, E)
