"""The sampled alternative to the full softmax (td3/candidates.py)."""
from __future__ import annotations

import math

import pytest
import torch

from td3.candidates import draw_candidates


def test_subset_holds_every_target_then_uniform_draws_with_their_weight():
    targets = torch.tensor([[3, 3, 7], [1, 0 + 9, 7]])  # ids 1..V, repeats allowed
    c = draw_candidates(targets, num_items=20, sampled=5, generator=torch.Generator().manual_seed(0))
    cols = c.items.tolist()
    assert cols[:4] == [0, 2, 6, 8]                      # the targets' columns (id - 1), once each
    assert len(cols) == 9 and len(set(cols)) == 9        # 5 draws, no repeats, none a target
    assert all(0 <= x < 20 for x in cols[4:])
    assert c.log_weight[:4].tolist() == [0.0] * 4
    torch.testing.assert_close(c.log_weight[4:], torch.full((5,), math.log(16 / 5)))
    assert c.local(torch.tensor([9, 1, 7, 3])).tolist() == [3, 0, 2, 1]
    missing = next(i for i in range(1, 21) if i - 1 not in cols)
    with pytest.raises(ValueError, match="not among"):
        c.local(torch.tensor([missing]))
    again = draw_candidates(targets, num_items=20, sampled=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.items, c.items)             # fixed by the generator
    other = draw_candidates(targets, num_items=20, sampled=5, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.items, c.items)


def test_asking_for_more_than_there_are_gives_every_item_at_weight_one():
    c = draw_candidates(torch.tensor([2, 5]), num_items=8, sampled=100, generator=torch.Generator().manual_seed(0))
    assert sorted(c.items.tolist()) == list(range(8))
    assert c.log_weight.abs().max().item() == 0.0


def test_corrected_partition_function_is_unbiased():
    """E[Σ_{c∈C} exp(z_c + log_weight_c)] = Σ_{all c} exp(z_c): the correction's purpose."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, generator=g) * 2
    exact = z.exp().sum().item()
    draws = [draw_candidates(torch.tensor([4, 11]), 50, 6, g) for _ in range(4000)]
    est = torch.tensor([(z[c.items] + c.log_weight).exp().sum().item() for c in draws])
    sem = est.std().item() / math.sqrt(len(est))
    assert abs(est.mean().item() - exact) < 4 * sem
    assert sem < 0.05 * exact  # the test has the power to see a biased estimator
