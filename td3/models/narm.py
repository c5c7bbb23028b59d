"""NARM (Li et al., CIKM'17), laid out as RecBole's implementation.

item embedding -> dropout -> GRU (no bias) = hidden states h_1..h_L. For a prefix ending at
t, the global encoder is c_global = h_t and the local encoder attends over the prefix:

    alpha[t, j] = vᵀ sigmoid(A1 h_j + A2 h_t)       for j <= t (unnormalised, as in RecBole)
    c_local[t]  = Σ_j alpha[t, j] h_j
    feature[t]  = B · dropout([c_local[t]; c_global[t]])   (B: 2H -> E, no bias)

RecBole computes this once, for the last position. Here every position t is a query over the
keys j <= t (padding keys weigh nothing), so the feature at t is exactly RecBole's feature
for the prefix ending at t and one pass serves every prefix. Cost: the sigmoid of the
L(L+1)/2 causal (query, key) pairs, (B, L(L+1)/2, H), about half of all L² pairs: building
all of them and masking half was slower and took more memory (docs/performance.md,
"Several learners"). Scoring the next item (``next_features``, what
evaluation calls for every user) needs one query per sequence, so it builds only the
(B, 1, L, H) slice of that query's keys.

Defaults: RecBole's NARM.yaml has embedding 64, hidden 128, 1 layer, dropouts [0.25, 0.5]
(embedding, concatenation). Here ``hidden_size`` defaults to 64 and ``embedding_size`` to
``hidden_size``; pass ``embedding_size=64, hidden_size=128`` for RecBole's sizes.
``self.hidden_size`` is the GRU state width; the feature width is ``self.embedding_size``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Dropout, SequentialRecommender
from .gru4rec import native_gru


class NARM(SequentialRecommender):
    causal = True

    def __init__(self, num_items: int, max_len: int = 50, hidden_size: int = 64,
                 embedding_size: int | None = None, num_layers: int = 1,
                 emb_dropout: float = 0.25, ct_dropout: float = 0.5):
        embedding_size = embedding_size or hidden_size
        super().__init__(num_items, embedding_size)
        self.hidden_size = hidden_size  # GRU state width
        self.embedding_size = embedding_size  # item table and feature width
        self.max_len = max_len  # unused by the architecture; kept for a uniform interface
        self.emb_dropout = Dropout(emb_dropout)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers, bias=False, batch_first=True)
        self.a_1 = nn.Linear(hidden_size, hidden_size, bias=False)  # keys h_j
        self.a_2 = nn.Linear(hidden_size, hidden_size, bias=False)  # query h_t
        self.v_t = nn.Linear(hidden_size, 1, bias=False)
        self.ct_dropout = Dropout(ct_dropout)
        self.b = nn.Linear(2 * hidden_size, embedding_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # RecBole: Xavier-normal item table and linear layers, PyTorch's default for the GRU.
        for module in (self.item_embedding, self.a_1, self.a_2, self.v_t, self.b):
            nn.init.xavier_normal_(module.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()  # padding row stays zero

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.default_mask(x, mask)  # (B, L)
        h = self._states(x)  # (B, L, H)
        B, L, H = h.shape
        t, j = torch.tril_indices(L, L, device=h.device)  # (P,) pairs: query t sees key j <= t
        keys, queries = self.a_1(h), self.a_2(h)  # (B, L, H) each
        # index_select, not keys[:, j]: the same values, and on CPU several times faster than
        # advanced indexing forward and backward (docs/performance.md, "Several learners")
        pairs = keys.index_select(1, j) + queries.index_select(1, t)  # (B, P, H)
        score = self.v_t(torch.sigmoid(pairs)).squeeze(-1)  # (B, P): the causal pairs only
        score = score * mask[:, j].to(score.dtype)  # padding keys weigh nothing
        alpha = score.new_zeros(B, L * L).index_add(1, t * L + j, score).view(B, L, L)  # (B, L, L)
        return self._feature(alpha @ h, h)  # (B, L, E)

    def next_features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """forward's feature at each sequence's last position, computed for that query alone: (B, E)."""
        mask = self.default_mask(x, None)  # (B, L)
        h = self._states(x)  # (B, L, H)
        last = (lengths - 1).clamp(min=0).to(h.device)  # (B,)
        keys = torch.arange(h.shape[1], device=h.device) <= last.unsqueeze(1)  # (B, L): the prefix
        query = self.at_last(h, lengths).unsqueeze(1)  # (B, 1, H)
        return self._read(h, query, (keys & mask).unsqueeze(1)).squeeze(1)  # (B, E)

    def _states(self, x: torch.Tensor) -> torch.Tensor:
        """GRU hidden states of the (dropped-out) item embeddings: (B, L, H); never cuDNN's
        GRU, whose backward cannot be differentiated again (``gru4rec.native_gru``)."""
        return native_gru(self.gru, self.emb_dropout(self.embed_items(x)))

    def _read(self, h: torch.Tensor, query: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Local + global encoder for Q query states (B, Q, H) over keys h (B, L, H) -> (B, Q, E),
        ``allowed`` (B, Q, L) saying which keys each query sees."""
        keys = self.a_1(h).unsqueeze(1)  # (B, 1, L, H)
        queries = self.a_2(query).unsqueeze(2)  # (B, Q, 1, H)
        alpha = self.v_t(torch.sigmoid(keys + queries)).squeeze(-1)  # (B, Q, L)
        alpha = alpha.masked_fill(~allowed, 0.0)
        return self._feature(alpha @ h, query)  # (B, Q, E)

    def _feature(self, c_local: torch.Tensor, c_global: torch.Tensor) -> torch.Tensor:
        """B · dropout([c_local; c_global]): (B, Q, H) twice -> (B, Q, E)."""
        return self.b(self.ct_dropout(torch.cat([c_local, c_global], dim=-1)))
