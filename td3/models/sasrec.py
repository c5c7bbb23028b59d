"""SASRec (Kang & McAuley, ICDM'18), laid out as RecBole's implementation.

Post-LayerNorm transformer blocks with causal self-attention over the item sequence.
Attention is written out as softmax(QKᵀ/√d)V instead of calling
``scaled_dot_product_attention``: the fused CPU kernels do not support double backward,
and the distillation engine differentiates through the learner's training steps.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Dropout, SequentialRecommender

# Additive mask value: large enough that exp() underflows to 0, finite so that a row
# with every key masked (an all-padding sequence) gives a uniform softmax, not NaN.
MASKED = -1e4


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, attn_dropout: float, hidden_dropout: float, eps: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.attn_dropout = Dropout(attn_dropout)
        self.dropout = Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3×(B,H,L,Dh)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // self.heads) + bias  # (B,H,L,L)
        att = self.attn_dropout(scores.softmax(dim=-1))
        ctx = (att @ v).transpose(1, 2).reshape(B, L, D)  # (B,L,D)
        return self.norm(x + self.dropout(self.out(ctx)))


class FeedForward(nn.Module):
    def __init__(self, hidden: int, inner: int, dropout: float, eps: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.fc2 = nn.Linear(inner, hidden)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.fc2(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, hidden, heads, inner, attn_dropout, hidden_dropout, eps):
        super().__init__()
        self.attention = SelfAttention(hidden, heads, attn_dropout, hidden_dropout, eps)
        self.feed_forward = FeedForward(hidden, inner, hidden_dropout, eps)

    def forward(self, x, bias):
        return self.feed_forward(self.attention(x, bias))


class SASRec(SequentialRecommender):
    causal = True

    def __init__(self, num_items: int, max_len: int = 50, hidden_size: int = 32, num_layers: int = 1,
                 num_heads: int = 1, inner_size: int = 64, hidden_dropout: float = 0.2,
                 attn_dropout: float = 0.5, layer_norm_eps: float = 1e-12, init_std: float = 0.02):
        super().__init__(num_items, hidden_size)
        self.max_len = max_len
        self.init_std = init_std
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout)
        self.blocks = nn.ModuleList(
            Block(hidden_size, num_heads, inner_size, attn_dropout, hidden_dropout, layer_norm_eps)
            for _ in range(num_layers))
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def attention_bias(self, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, L) real positions -> (B, 1, L, L) additive bias: causal and key padding."""
        L = mask.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()
        allowed = causal.unsqueeze(0) & mask.unsqueeze(1)  # (B, L, L): query i may see key j
        bias = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
        return bias.masked_fill(~allowed, MASKED).unsqueeze(1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.default_mask(x, mask)  # (B, L)
        L = mask.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds SASRec max_len {self.max_len}")
        h = self.embed_items(x) + self.position_embedding.weight[:L]  # (B, L, d)
        h = self.dropout(self.norm(h))
        bias = self.attention_bias(mask, h.dtype)
        for block in self.blocks:
            h = block(h, bias)
        return h  # (B, L, d)
