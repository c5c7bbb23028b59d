"""A sampled subset of the items for one outer step: the alternative to the full softmax.

Every loss of an outer step (the summary's distributions, the learner's inner soft
cross-entropy, the outer next-item loss) takes a softmax over all |V| items, so its cost
grows linearly with the catalog. With ``distill.sampled_items = k > 0`` an outer step
works on a subset C instead (docs/performance.md, "Sampled items"):

- every item that is a target of the step's real batch (the outer loss needs its exact
  logit), plus
- k items drawn uniformly without replacement from the others, each standing for
  (|V| − |T|) / k of them: its logit is raised by log((|V| − |T|) / k) wherever a softmax
  is taken over C. Σ_{c∈C} exp(logit_c + log_weight_c) is then an unbiased estimate of the
  full partition function Σ_{c∈V} exp(logit_c) (the usual sampled-softmax correction for a
  uniform proposal), and the summary's distribution over C puts on each sampled item the
  mass its group would have.

When k ≥ |V| − |T| every item is in C with weight 1 and the losses are the exact ones.
Draws come from the step's CPU generator, so a step's subset is reproducible on any device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Candidates:
    items: torch.Tensor       # (k,) 0-based item columns (item id − 1): the targets, then the draws
    log_weight: torch.Tensor  # (k,) log of how many items each column stands for (0 for targets)
    num_items: int            # |V|

    def to(self, device) -> "Candidates":
        return Candidates(self.items.to(device), self.log_weight.to(device), self.num_items)

    def local(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Positions in ``items`` of 1-based item ids that are in the subset (the targets)."""
        where = torch.full((self.num_items + 1,), -1, dtype=torch.long, device=self.items.device)
        where[self.items + 1] = torch.arange(len(self.items), device=self.items.device)
        out = where[item_ids]
        if (out < 0).any():
            raise ValueError("an item id is not among the candidates")
        return out


def draw_candidates(target_ids: torch.Tensor, num_items: int, sampled: int,
                    generator: torch.Generator) -> Candidates:
    """The subset for a real batch whose targets are ``target_ids`` (1-based, any shape)."""
    targets = torch.unique(target_ids.reshape(-1).cpu()) - 1           # (t,) sorted columns
    is_target = torch.zeros(num_items, dtype=torch.bool)
    is_target[targets] = True
    others = (~is_target).nonzero().squeeze(1)                          # (|V| − t,)
    k = min(sampled, len(others))
    drawn = others[torch.randperm(len(others), generator=generator)[:k]] if k else others[:0]
    log_weight = torch.zeros(len(targets) + k)
    if k:
        log_weight[len(targets):] = math.log(len(others) / k)
    return Candidates(torch.cat([targets, drawn]), log_weight, num_items)
