"""Losses of a learner on a synthetic summary (docs/method.md, "The inner loss and ALT").

Summary loss: S is a batch of item distributions (B, ζ, |V|) over the real items. The
learner reads S[:, :ζ-1] and is asked for S[:, ζ-1] at position ζ-2: soft cross-entropy
−Σ_c S[:, ζ-1, c] · log softmax(logits)_c. This equals KL(S[:, ζ-1] ‖ prediction) up to
the entropy of the target, which does not depend on the learner, so both give the same
gradients w.r.t. the learner and therefore the same meta-gradient.

Augmented learner training (ALT): each sequence also draws p ~ U[low, ζ-1) and the learner
predicts S[:, p] from the prefix before p. For a causal learner the feature at position
p-1 already depends only on positions < p, so the same forward pass serves both terms:
ALT costs one extra gather and one more row of logits per sequence, not a second pass.
A bidirectional learner (BERT4Rec) cannot do this: its feature at p-1 reads the positions
after it. It is trained either with its soft cloze objective (``BERT4Rec.soft_cloze_loss``,
``bidirectional_loss="cloze"``) or on the same targets as a causal learner
(``bidirectional_loss="prefix"``): each target is predicted from a [MASK] placed right after
its prefix, every later position hidden (``BERT4Rec.next_features``), one pass over the
B (or 2B, with ALT) prefixes (docs/method.md, "The inner loss and ALT").

A step's data is a ``SummaryBatch``: the learner's inputs and only the target rows that
carry a loss (B or 2B rows × |V|), gathered from S in one indexing operation. The
distillation engine gathers the targets of all W differentiable steps at once, and their
inputs by one ``td3.inner.StepRows``, so that the backward pass does not fill and add a
(μ, ζ, |V|) gradient per inner step (docs/performance.md, "The inner loop's bookkeeping").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models.base import Embedded


@dataclass
class SummaryBatch:
    """One inner step's data for a learner trained on prefixes (every causal learner, and a
    bidirectional one with ``bidirectional_loss="prefix"``), or the raw rows for the cloze.

    inputs: (B, ζ-1, |V|) distributions, or ``Embedded`` (B, ζ-1, d) when the caller has
        the item embeddings already (frozen item table).
    targets: (n, |V|) target distributions, n = B (last position) or 2B (with ALT).
    positions: (n,) for each target, the feature position that predicts it.
    rows: (B, ζ, |V|) the summary rows themselves (a bidirectional learner's cloze only).
    candidates: the outer step's sampled items (``td3.candidates``) when S covers only
        them: |V| above is then their number k, and the learner scores only them.
    """

    inputs: object = None
    targets: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    candidates: object = None


def loss_positions(rows: torch.Tensor, zeta: int, alt: bool, alt_low: int,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence index, position) of every target of a batch of summary ``rows``: the last
    position of each, then (ALT) one p ~ U[alt_low, ζ-1) per sequence, drawn from
    ``generator`` on the CPU so that runs are reproducible across devices."""
    B = len(rows)
    last = torch.full((B,), zeta - 1, dtype=torch.long)
    if not alt:
        return rows.cpu(), last
    p = torch.randint(alt_low, zeta - 1, (B,), generator=generator, device="cpu")
    return torch.cat([rows.cpu(), rows.cpu()]), torch.cat([last, p])


def make_batch(S: torch.Tensor, rows: torch.Tensor, alt: bool, alt_low: int,
               generator: torch.Generator | None, embedded=None, prefixes: bool = True,
               targets: torch.Tensor | None = None, plan=None, inputs: torch.Tensor | None = None) -> SummaryBatch:
    """The batch of summary ``rows`` (indices into S's first axis).

    embedded: ``Embedded`` inputs of every row of S, (μ, ζ-1, d), to select from.
    prefixes: False for a bidirectional learner's cloze, which takes the rows whole.
    targets/plan: targets gathered by the caller and the (sequence, position) plan they
        follow; by default the plan is drawn here and the targets gathered from S.
    inputs: the rows' distributions ``S[rows, :-1]`` gathered by the caller.
    """
    if not prefixes:
        return SummaryBatch(rows=S[rows])
    if plan is None:
        plan = loss_positions(rows, S.shape[1], alt, alt_low, generator)
    seq, pos = (t.to(S.device) for t in plan)
    if targets is None:
        targets = S[seq, pos]  # (n, |V|)
    if embedded is not None:
        inputs = type(embedded)(embedded.value[rows])
    elif inputs is None:
        inputs = S[rows, :-1]
    return SummaryBatch(inputs=inputs, targets=targets, positions=pos - 1)


def batch_loss(model, batch: SummaryBatch, alt_weight: float = 1.0) -> torch.Tensor:
    """The inner loss of ``model`` on one ``SummaryBatch``.

    alt_weight: w in (last + w·ALT) / (1 + w); w = 1 is the method's mean of the two
        (docs/method.md, "The inner loss and ALT").
    """
    if batch.rows is not None:
        return model.soft_cloze_loss(batch.rows)
    inputs, sampled = batch.inputs, batch.candidates
    if sampled is not None:  # the candidates' rows of the learner's own item table (trained or frozen)
        table = model.item_embedding.weight[1:][sampled.items]  # (k, d)
        if isinstance(inputs, torch.Tensor):  # distributions over the candidates
            inputs = Embedded(inputs @ table)
    B = len(inputs.value if isinstance(inputs, Embedded) else inputs)
    if getattr(model, "causal", True):
        h = model(inputs)  # (B, ζ-1, d)
        features = h[:, -1]  # (B, d): the last position predicts S[:, ζ-1]
        if len(batch.targets) > B:  # ALT: the feature before each drawn position (a gather: its backward is cheap)
            index = batch.positions[B:].view(B, 1, 1).expand(B, 1, h.shape[-1])
            features = torch.cat([features, h.gather(1, index).squeeze(1)])  # (2B, d)
    else:  # a [MASK] right after each target's prefix, every later position hidden
        e = model.embed_items(inputs)  # (B, ζ-1, d): embedded once, not once per ALT copy of (B, ζ-1, |V|)
        prefixes = Embedded(e if len(batch.targets) == B else torch.cat([e, e]))  # (n, ζ-1, d)
        features = model.next_features(prefixes, batch.positions + 1)  # (n, d)
    if sampled is None:
        log_p = F.log_softmax(model.logits(features)[:, 1:], dim=-1)  # (n, |V|): padding has no mass
    else:  # over the candidates, each raised by the log of how many items it stands for
        log_p = F.log_softmax(features @ table.T + sampled.log_weight, dim=-1)  # (n, k)
    ce = -(batch.targets * log_p).sum(-1)  # (n,)
    if alt_weight == 1.0 or len(batch.targets) == B:
        return ce.mean()
    return (ce[:B].mean() + alt_weight * ce[B:].mean()) / (1.0 + alt_weight)


def trains_on_prefixes(model, bidirectional_loss: str = "cloze") -> bool:
    """Whether ``model`` is trained on a summary's prefixes (``make_batch``'s ``prefixes``)."""
    return getattr(model, "causal", True) or bidirectional_loss == "prefix"


def summary_loss(model, S: torch.Tensor, alt: bool = True, alt_low: int = 5,
                 generator: torch.Generator | None = None, inputs=None,
                 alt_weight: float = 1.0, bidirectional_loss: str = "cloze") -> torch.Tensor:
    """Inner loss of ``model`` on a summary batch S (B, ζ, |V|): every row of S, once.

    inputs: what the learner reads for S[:, :ζ-1] when the caller has it already, e.g.
        ``Embedded(S[:, :-1] @ E)`` precomputed once per outer step when E is frozen;
        defaults to the distributions themselves.
    bidirectional_loss: "cloze" or "prefix", for a bidirectional learner (module docstring).
    """
    rows = torch.arange(S.shape[0], device=S.device)
    batch = make_batch(S, rows, alt, alt_low, generator, prefixes=trains_on_prefixes(model, bidirectional_loss))
    if batch.rows is None and inputs is not None:  # the cloze reads the rows themselves
        batch.inputs = inputs
    return batch_loss(model, batch, alt_weight)
