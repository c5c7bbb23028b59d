"""td3.metrics: ranks under ties/NaN, hand-computed metrics, agreement with RecBole."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from td3.metrics import (KS, full_ranks, history_mask, mean_metrics, metric_names,
                         metrics_from_ranks, sampled_ranks)

NEG_INF = float("-inf")


def _scores(rows, num_items):
    """Rows of {item: score}; every other real item scores -1, padding -inf."""
    s = torch.full((len(rows), num_items + 1), -1.0, dtype=torch.float64)
    s[:, 0] = NEG_INF
    for b, row in enumerate(rows):
        for item, value in row.items():
            s[b, item] = value
    return s


# ------------------------------------------------------------------ hand-computed cases
def test_metrics_from_ranks_hand_computed():
    per_user = metrics_from_ranks(np.array([1, 3, 7, 15, 25]))
    assert list(per_user) == metric_names() == [
        "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@5", "MRR@10", "MRR@20"]
    expected = {
        "HR@5": [1, 1, 0, 0, 0],
        "HR@10": [1, 1, 1, 0, 0],
        "HR@20": [1, 1, 1, 1, 0],
        # 1/log2(2) = 1, 1/log2(4) = 0.5, 1/log2(8) = 1/3, 1/log2(16) = 0.25
        "NDCG@5": [1, 0.5, 0, 0, 0],
        "NDCG@10": [1, 0.5, 1 / 3, 0, 0],
        "NDCG@20": [1, 0.5, 1 / 3, 0.25, 0],
        "MRR@5": [1, 1 / 3, 0, 0, 0],
        "MRR@10": [1, 1 / 3, 1 / 7, 0, 0],
        "MRR@20": [1, 1 / 3, 1 / 7, 1 / 15, 0],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(per_user[name], values, rtol=0, atol=1e-15, err_msg=name)
        assert per_user[name].dtype == np.float64

    means = mean_metrics(per_user)
    assert all(type(v) is float for v in means.values())
    assert means["HR@5"] == pytest.approx(0.4)
    assert means["HR@20"] == pytest.approx(0.8)
    assert means["NDCG@10"] == pytest.approx((1 + 0.5 + 1 / 3) / 5)
    assert means["NDCG@20"] == pytest.approx((1 + 0.5 + 1 / 3 + 0.25) / 5)
    assert means["MRR@20"] == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 15) / 5)


def test_rank_boundaries_at_k():
    per_user = metrics_from_ranks(torch.tensor([5, 6, 10, 11, 20, 21]))
    np.testing.assert_array_equal(per_user["HR@5"], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(per_user["HR@10"], [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(per_user["HR@20"], [1, 1, 1, 1, 1, 0])
    assert per_user["NDCG@5"][0] == pytest.approx(1 / math.log2(6))
    assert per_user["MRR@20"][4] == pytest.approx(1 / 20)
    assert per_user["MRR@20"][5] == 0.0


def test_metrics_from_ranks_custom_ks_and_bad_ranks():
    assert list(metrics_from_ranks([2], ks=(1, 3))) == [
        "HR@1", "HR@3", "NDCG@1", "NDCG@3", "MRR@1", "MRR@3"]
    with pytest.raises(ValueError):
        metrics_from_ranks([0, 1])
    with pytest.raises(ValueError):
        mean_metrics({"HR@5": np.zeros(0)})


def test_hand_computed_full_and_sampled_ranks():
    num_items = 30
    scores = _scores([
        # target 3 (0.5): items 1 and 2 above it -> full rank 3
        {1: 0.9, 2: 0.8, 3: 0.5},
        # target 4 highest -> rank 1
        {4: 2.0, 5: 1.0},
        # target 10 (0.0): items 11..16 above -> full rank 7
        {10: 0.0, **{i: 1.0 for i in range(11, 17)}},
        # target 1 (-1, like every other item): all 29 others tie -> rank 30
        {},
    ], num_items)
    targets = torch.tensor([3, 4, 10, 1])
    ranks = full_ranks(scores, targets)
    assert ranks.dtype == torch.int64
    assert ranks.tolist() == [3, 1, 7, 30]

    # sampled: 4 negatives per user
    negatives = torch.tensor([
        [2, 20, 21, 22],     # only item 2 above -> rank 2
        [5, 6, 7, 8],        # none above -> rank 1
        [11, 12, 13, 20],    # three above -> rank 4
        [2, 3, 4, 5],        # all tie -> rank 5 (pessimistic)
    ])
    assert sampled_ranks(scores, targets, negatives).tolist() == [2, 1, 4, 5]

    m = metrics_from_ranks(ranks)
    np.testing.assert_allclose(m["NDCG@5"], [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(m["MRR@5"], [1 / 3, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(m["NDCG@10"], [0.5, 1.0, 1 / 3, 0.0])
    np.testing.assert_allclose(m["MRR@10"], [1 / 3, 1.0, 1 / 7, 0.0])
    np.testing.assert_allclose(m["HR@20"], [1, 1, 1, 0])


# ------------------------------------------------------------------------ ties and NaN
def test_ties_are_pessimistic():
    num_items = 10
    # target 1 scores 0.5; negatives 2, 3 tie with it, 4 is above, 5 below.
    scores = _scores([{1: 0.5, 2: 0.5, 3: 0.5, 4: 0.7, 5: 0.1}], num_items)
    assert sampled_ranks(scores, torch.tensor([1]), torch.tensor([[2, 3, 4, 5]])).item() == 4
    assert full_ranks(scores, torch.tensor([1])).item() == 4


def test_all_equal_scores_give_worst_rank():
    num_items = 150
    scores = torch.zeros(3, num_items + 1)
    scores[:, 0] = NEG_INF
    targets = torch.tensor([1, 75, 150])
    gen = torch.Generator().manual_seed(0)
    negatives = torch.stack([
        torch.tensor([i for i in torch.randperm(num_items, generator=gen).add(1).tolist()
                      if i != t][:100]) for t in targets.tolist()])
    assert sampled_ranks(scores, targets, negatives).tolist() == [101, 101, 101]
    assert full_ranks(scores, targets).tolist() == [150, 150, 150]
    assert metrics_from_ranks(sampled_ranks(scores, targets, negatives))["HR@20"].sum() == 0


def test_nan_target_gets_worst_rank():
    num_items = 120
    scores = torch.randn(2, num_items + 1, generator=torch.Generator().manual_seed(1))
    scores[:, 0] = NEG_INF
    scores[0, 7] = float("nan")           # user 0's target is NaN
    scores[1, 9] = 1e9                    # user 1's target is the best item
    targets = torch.tensor([7, 9])
    negatives = torch.arange(11, 111).repeat(2, 1)
    assert sampled_ranks(scores, targets, negatives).tolist() == [101, 1]
    assert full_ranks(scores, targets).tolist() == [120, 1]
    # with 5 items excluded there are 114 candidates left -> worst rank 115
    assert full_ranks(scores, targets, exclude=[[1, 2, 3, 4, 5], []]).tolist() == [115, 1]


def test_all_nan_scores_never_rank_first():
    scores = torch.full((1, 201), float("nan"))
    assert sampled_ranks(scores, torch.tensor([3]), torch.arange(101, 201).view(1, -1)).item() == 101
    assert full_ranks(scores, torch.tensor([3])).item() == 200


def test_nan_negative_counts_as_beating_target():
    scores = _scores([{1: 5.0, 2: float("nan"), 3: float("nan")}], 10)
    assert sampled_ranks(scores, torch.tensor([1]), torch.tensor([[2, 3, 4]])).item() == 3
    assert full_ranks(scores, torch.tensor([1])).item() == 3
    # an excluded NaN item no longer counts
    assert full_ranks(scores, torch.tensor([1]), exclude=[[2]]).item() == 2


def test_padding_column_never_counts():
    scores = _scores([{1: 0.0}], 10)
    scores[0, 0] = float("inf")   # even a finite/infinite padding score is ignored
    assert full_ranks(scores, torch.tensor([1])).item() == 1
    scores[0, 0] = float("nan")
    assert full_ranks(scores, torch.tensor([1])).item() == 1


def test_invalid_ids_are_refused():
    scores = _scores([{}], 10)
    with pytest.raises(ValueError):
        full_ranks(scores, torch.tensor([0]))        # padding is never a target
    with pytest.raises(ValueError):
        full_ranks(scores, torch.tensor([11]))
    with pytest.raises(ValueError):
        sampled_ranks(scores, torch.tensor([1]), torch.tensor([[1, 2]]))  # target as negative
    with pytest.raises(ValueError):
        sampled_ranks(scores, torch.tensor([1]), torch.tensor([[0, 2]]))  # padding as negative


# ---------------------------------------------------------------------- exclude history
def test_exclude_history_item_above_target_stops_counting():
    num_items = 20
    # target 5 (0.0); items 1, 2 (history) and 9 (not history) score above it.
    scores = _scores([{5: 0.0, 1: 3.0, 2: 2.0, 9: 1.0}, {6: 0.0, 3: 1.0}], num_items)
    targets = torch.tensor([5, 6])
    assert full_ranks(scores, targets).tolist() == [4, 2]
    history = [np.array([1, 2, 3]), np.array([], dtype=np.int64)]
    assert full_ranks(scores, targets, exclude=history).tolist() == [2, 2]

    # the three accepted forms agree: per-row lists, padded 2-D ids, bool mask
    padded = torch.tensor([[1, 2, 3], [0, 0, 0]])
    mask = torch.zeros(2, num_items + 1, dtype=torch.bool)
    mask[0, [1, 2, 3]] = True
    assert full_ranks(scores, targets, exclude=padded).tolist() == [2, 2]
    assert full_ranks(scores, targets, exclude=mask).tolist() == [2, 2]
    assert full_ranks(scores, targets, exclude=mask.numpy()).tolist() == [2, 2]
    assert torch.equal(history_mask(history, 2, num_items), mask)


def test_target_in_history_is_never_excluded():
    # repeat consumption: the target also appears in the user's history
    scores = _scores([{5: 0.0, 1: 3.0, 9: 1.0}], 20)
    assert full_ranks(scores, torch.tensor([5]), exclude=[[1, 5]]).item() == 2
    mask = torch.zeros(1, 21, dtype=torch.bool)
    mask[0, 5] = True
    assert full_ranks(scores, torch.tensor([5]), exclude=mask).item() == 3
    # a NaN target stays worst even when its own id is in the excluded list
    scores[0, 5] = float("nan")
    assert full_ranks(scores, torch.tensor([5]), exclude=[[1, 5]]).item() == 19


# ------------------------------------------------------------- brute force / consistency
def _brute_full_rank(row: np.ndarray, target: int, excluded=()) -> int:
    t = row[target]
    if np.isnan(t):
        return 1 + sum(1 for i in range(1, len(row)) if i != target and i not in excluded)
    rank = 1
    for i in range(1, len(row)):
        if i == target or i in excluded:
            continue
        if np.isnan(row[i]) or row[i] >= t:
            rank += 1
    return rank


def _random_case(seed, batch=64, num_items=300, ties=True, nan_rate=0.0):
    rng = np.random.default_rng(seed)
    if ties:
        scores = rng.integers(0, 8, size=(batch, num_items + 1)).astype(np.float64)
    else:
        scores = rng.standard_normal((batch, num_items + 1))
    if nan_rate:
        scores[rng.random(scores.shape) < nan_rate] = np.nan
    scores[:, 0] = -np.inf
    targets = rng.integers(1, num_items + 1, size=batch)
    negatives = np.stack([
        rng.choice(np.setdiff1d(np.arange(1, num_items + 1), [t]), size=min(100, num_items - 1),
                   replace=False)
        for t in targets])
    history = [rng.choice(np.arange(1, num_items + 1), size=rng.integers(0, 30), replace=False)
               for _ in range(batch)]
    return scores, targets, negatives, history


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_ranks_match_brute_force(seed):
    scores, targets, _, history = _random_case(seed, batch=20, num_items=60, nan_rate=0.05)
    got = full_ranks(torch.from_numpy(scores), torch.from_numpy(targets)).tolist()
    want = [_brute_full_rank(scores[b], targets[b]) for b in range(len(targets))]
    assert got == want
    got = full_ranks(torch.from_numpy(scores), torch.from_numpy(targets), exclude=history).tolist()
    want = [_brute_full_rank(scores[b], targets[b], set(history[b].tolist()))
            for b in range(len(targets))]
    assert got == want


@pytest.mark.parametrize("seed,ties,nan_rate", [(0, True, 0.0), (1, False, 0.0), (2, True, 0.02)])
def test_full_rank_is_never_better_than_sampled_rank(seed, ties, nan_rate):
    scores, targets, negatives, _ = _random_case(seed, ties=ties, nan_rate=nan_rate)
    s = torch.from_numpy(scores)
    sampled = sampled_ranks(s, torch.from_numpy(targets), torch.from_numpy(negatives))
    full = full_ranks(s, torch.from_numpy(targets))
    assert (full >= sampled).all()
    assert (sampled <= 101).all() and (sampled >= 1).all()
    assert (full > sampled).any()  # the sampled set really is a strict subset here


# ---------------------------------------------------------------- agreement with RecBole
# RecBole (recbole/evaluator/collector.py + metrics.py) computes top-k metrics from a
# positional hit matrix: topk over the candidate scores, gather a 0/1 positive matrix at
# those positions (pos_index, n_users x max_k), count positives (pos_len), then:
#   Hit:  cumsum(pos_index) > 0
#   MRR:  1/(first hit position + 1) from that position on
#   NDCG: cumsum(where(pos_index, 1/log2(pos + 1), 0)) / idcg, with idcg the cumulative
#         ideal gain truncated at min(pos_len, position)
# Reimplemented here (recbole itself is not a dependency) and read at column k - 1.
def _recbole_pos_index(scores: torch.Tensor, pos_u, pos_i, max_k: int):
    _, topk_idx = torch.topk(scores, max_k, dim=-1)
    pos_matrix = torch.zeros_like(scores, dtype=torch.int)
    pos_matrix[pos_u, pos_i] = 1
    pos_len = pos_matrix.sum(dim=1).numpy()
    pos_index = torch.gather(pos_matrix, dim=1, index=topk_idx).numpy().astype(bool)
    return pos_index, pos_len


def _recbole_hit(pos_index):
    return (np.cumsum(pos_index, axis=1) > 0).astype(int)


def _recbole_mrr(pos_index):
    idxs = pos_index.argmax(axis=1)
    result = np.zeros_like(pos_index, dtype=np.float64)
    for row, idx in enumerate(idxs):
        if pos_index[row, idx] > 0:
            result[row, idx:] = 1 / (idx + 1)
        else:
            result[row, idx:] = 0
    return result


def _recbole_ndcg(pos_index, pos_len):
    len_rank = np.full_like(pos_len, pos_index.shape[1])
    idcg_len = np.where(pos_len > len_rank, len_rank, pos_len)
    iranks = np.zeros_like(pos_index, dtype=np.float64)
    iranks[:, :] = np.arange(1, pos_index.shape[1] + 1)
    idcg = np.cumsum(1.0 / np.log2(iranks + 1), axis=1)
    for row, idx in enumerate(idcg_len):
        idcg[row, idx:] = idcg[row, idx - 1]
    ranks = np.zeros_like(pos_index, dtype=np.float64)
    ranks[:, :] = np.arange(1, pos_index.shape[1] + 1)
    dcg = 1.0 / np.log2(ranks + 1)
    dcg = np.cumsum(np.where(pos_index, dcg, 0), axis=1)
    return dcg / idcg


def _recbole_metrics(scores: torch.Tensor, pos_u, pos_i, ks=KS):
    pos_index, pos_len = _recbole_pos_index(scores, pos_u, pos_i, max(ks))
    assert (pos_len == 1).all()
    hit, mrr, ndcg = _recbole_hit(pos_index), _recbole_mrr(pos_index), _recbole_ndcg(pos_index, pos_len)
    out = {}
    for k in ks:
        out[f"HR@{k}"] = hit[:, k - 1].astype(np.float64)
    for k in ks:
        out[f"NDCG@{k}"] = ndcg[:, k - 1]
    for k in ks:
        out[f"MRR@{k}"] = mrr[:, k - 1]
    return out


def _assert_same(ours, theirs):
    assert list(ours) == list(theirs)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-12, err_msg=name)


def _strong_model_scores(seed, batch, num_items):
    """Continuous random scores where the target is often near the top (so every k is
    exercised), target ids and 100 negatives per user."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((batch, num_items + 1))
    targets = rng.integers(1, num_items + 1, size=batch)
    scores[np.arange(batch), targets] += rng.uniform(0, 4, size=batch)
    scores[:, 0] = -np.inf
    negatives = np.stack([
        rng.choice(np.setdiff1d(np.arange(1, num_items + 1), [t]), size=100, replace=False)
        for t in targets])
    return torch.from_numpy(scores), torch.from_numpy(targets), torch.from_numpy(negatives)


@pytest.mark.parametrize("seed", [0, 1])
def test_full_sort_matches_recbole(seed):
    batch, num_items = 400, 500
    scores, targets, _ = _strong_model_scores(seed, batch, num_items)
    ours = metrics_from_ranks(full_ranks(scores, targets))
    # RecBole full sort: the score row over ids 0..n with padding at -inf
    theirs = _recbole_metrics(scores, torch.arange(batch), targets)
    _assert_same(ours, theirs)
    assert 0 < ours["HR@5"].mean() < ours["HR@20"].mean() < 1  # the case is not degenerate


@pytest.mark.parametrize("seed", [0, 1])
def test_full_sort_with_history_matches_recbole(seed):
    batch, num_items = 300, 400
    scores, targets, _ = _strong_model_scores(seed, batch, num_items)
    rng = np.random.default_rng(100 + seed)
    history = [np.setdiff1d(rng.choice(np.arange(1, num_items + 1), size=40, replace=False),
                            [t]) for t in targets.tolist()]
    ours = metrics_from_ranks(full_ranks(scores, targets, exclude=history))
    # RecBole masks the user's history by setting those scores to -inf before topk
    masked = scores.clone()
    for b, h in enumerate(history):
        masked[b, torch.from_numpy(h)] = NEG_INF
    theirs = _recbole_metrics(masked, torch.arange(batch), targets)
    _assert_same(ours, theirs)
    assert not np.array_equal(ours["MRR@20"], metrics_from_ranks(full_ranks(scores, targets))["MRR@20"])


@pytest.mark.parametrize("seed", [0, 1])
def test_recbole100_negatives_match_recbole(seed):
    """RecBole's own sampled negatives (any item but the target, with replacement): a
    negative drawn twice is two candidates in RecBole's row, and counts twice here."""
    from td3.data.prepare import sample_recbole_negatives

    batch, num_items = 400, 150    # a small catalogue: every row repeats some negative
    scores, targets, _ = _strong_model_scores(seed, batch, num_items)
    negatives = torch.from_numpy(sample_recbole_negatives(targets.numpy(), num_items, 100, seed))
    assert any(len(set(row)) < 100 for row in negatives.tolist())
    ours = metrics_from_ranks(sampled_ranks(scores, targets, negatives))
    candidates = torch.cat([targets.view(-1, 1), negatives], dim=1)
    theirs = _recbole_metrics(scores.gather(1, candidates), torch.arange(batch),
                              torch.zeros(batch, dtype=torch.long))
    _assert_same(ours, theirs)
    means = mean_metrics(ours)
    assert 0 < means["HR@5"] < means["HR@10"] < means["HR@20"] < 1


@pytest.mark.parametrize("seed", [0, 1])
def test_unseen100_matches_recbole(seed):
    batch, num_items = 400, 500
    scores, targets, negatives = _strong_model_scores(seed, batch, num_items)
    ours = metrics_from_ranks(sampled_ranks(scores, targets, negatives))
    # RecBole's negative-sample evaluation scores the positive and its sampled
    # negatives as one candidate row (the positive first), then the same topk routine.
    candidates = torch.cat([targets.view(-1, 1), negatives], dim=1)
    cand_scores = scores.gather(1, candidates)
    theirs = _recbole_metrics(cand_scores, torch.arange(batch), torch.zeros(batch, dtype=torch.long))
    _assert_same(ours, theirs)
    # the positive's place in the candidate row is irrelevant
    perm = torch.from_numpy(np.random.default_rng(seed).permuted(
        np.tile(np.arange(101), (batch, 1)), axis=1))
    shuffled = cand_scores.gather(1, perm)
    pos = (perm == 0).int().argmax(dim=1)
    _assert_same(ours, _recbole_metrics(shuffled, torch.arange(batch), pos))
    means = mean_metrics(ours)
    assert 0 < means["HR@5"] < means["HR@10"] < means["HR@20"] < 1


def test_float32_scores_and_numpy_inputs():
    scores, targets, negatives = _strong_model_scores(3, 50, 200)
    a = full_ranks(scores.float(), targets)
    b = full_ranks(scores.float().numpy(), targets.numpy())
    assert torch.equal(a, b)
    c = sampled_ranks(scores.float().numpy(), targets.numpy(), negatives.numpy())
    assert torch.equal(c, sampled_ranks(scores.float(), targets, negatives))
