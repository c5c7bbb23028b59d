"""Losses of a learner on a synthetic summary (SPEC §4, inner loss) and on real data.

Summary loss: S is a batch of item distributions (B, ζ, |V|) over the real items. The
learner reads S[:, :ζ-1] and is asked for S[:, ζ-1] at position ζ-2: soft cross-entropy
−Σ_c S[:, ζ-1, c] · log softmax(logits)_c. This equals KL(S[:, ζ-1] ‖ prediction) up to
the entropy of the target, which does not depend on the learner, so both give the same
gradients w.r.t. the learner and therefore the same meta-gradient.

Augmented learner training (ALT): each sequence also draws p ~ U[low, ζ-1) and the learner
predicts S[:, p] from the prefix before p. For a causal learner the feature at position
p-1 already depends only on positions < p, so the same forward pass serves both terms:
ALT costs one extra gather and one more row of logits per sequence, not a second pass.
A bidirectional learner (BERT4Rec) cannot do this: it is trained with its soft cloze
objective instead (``BERT4Rec.soft_cloze_loss``).

Logits are computed only at the positions that carry a loss (B or 2B rows × |V|).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits (N, V+1) with column 0 = padding (-inf); target (N, V) over real items. Mean over N."""
    return -(target * F.log_softmax(logits[:, 1:], dim=-1)).sum(-1).mean()


def summary_loss(model, S: torch.Tensor, alt: bool = True, alt_low: int = 5,
                 generator: torch.Generator | None = None, inputs=None,
                 alt_weight: float = 1.0) -> torch.Tensor:
    """Inner loss of ``model`` on a summary batch S (B, ζ, |V|).

    inputs: what the learner reads for S[:, :ζ-1] when the caller has it already, e.g.
        ``Embedded(S[:, :-1] @ E)`` precomputed once per outer step when E is frozen;
        defaults to the distributions themselves.
    generator: draws ALT's positions (on the CPU, so runs are reproducible across devices).
    alt_weight: w in (last + w·alt) / (1 + w); w = 1 is SPEC's "mean of the two".
    """
    if not getattr(model, "causal", True):
        return model.soft_cloze_loss(S)
    B, zeta, _ = S.shape
    h = model(S[:, :-1] if inputs is None else inputs)  # (B, ζ-1, d)
    rows = torch.arange(B, device=S.device)
    if alt:
        p = torch.randint(alt_low, zeta - 1, (B,), generator=generator, device="cpu").to(S.device)
        positions = torch.cat([torch.full((B,), zeta - 2, device=S.device), p - 1])  # feature positions
        targets = torch.cat([S[:, zeta - 1], S[rows, p]])  # (2B, V)
        features = h[torch.cat([rows, rows]), positions]  # (2B, d)
        if alt_weight != 1.0:
            ce = -(targets * F.log_softmax(model.logits(features)[:, 1:], dim=-1)).sum(-1)  # (2B,)
            return (ce[:B].mean() + alt_weight * ce[B:].mean()) / (1.0 + alt_weight)
    else:
        targets, features = S[:, zeta - 1], h[:, zeta - 2]
    return soft_cross_entropy(model.logits(features), targets)
