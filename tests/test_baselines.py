"""Random / Longest real-sequence subsets at the summary's budget of μ·ζ interactions."""
from __future__ import annotations

import numpy as np
import pytest

from td3.baselines import longest_sequences, random_sequences
from td3.data.formats import write_inter as export_inter
from td3.data.formats import read_interactions
from td3.errors import ConfigError


def users_with_lengths(lengths) -> list[np.ndarray]:
    """User u's items are 1000·(u+1) + 0, 1, ...: every item names its user."""
    return [1000 * (u + 1) + np.arange(n, dtype=np.int64) for u, n in enumerate(lengths)]


def owner(sequence: np.ndarray) -> int:
    return int(sequence[0]) // 1000 - 1


def assert_suffixes_of_distinct_users(chosen, train, zeta):
    owners = [owner(s) for s in chosen]
    assert len(set(owners)) == len(owners)
    for s, u in zip(chosen, owners):
        assert 2 <= len(s) <= zeta and s.dtype == np.int64
        assert np.array_equal(s, train[u][-len(s):])  # the user's most recent items


LENGTHS = [12, 3, 30, 7, 1, 25, 9, 30, 2, 15, 40, 5, 18, 11, 6, 22]  # 16 users


@pytest.mark.parametrize("mu,zeta", [(3, 10), (5, 8), (4, 4), (7, 6)])
def test_budget_is_never_exceeded_and_sequences_are_suffixes(mu, zeta):
    train = users_with_lengths(LENGTHS)
    for seed in range(20):
        for chosen in (random_sequences(train, mu, zeta, seed=seed), longest_sequences(train, mu, zeta)):
            total = sum(len(s) for s in chosen)
            # exact, except when the rule drops a one-item remainder
            assert total == mu * zeta or (total == mu * zeta - 1 and len(chosen[-1]) >= 2)
            assert_suffixes_of_distinct_users(chosen, train, zeta)


def test_budget_is_met_exactly_by_mu_sequences_of_zeta_when_users_are_long():
    train = users_with_lengths([10 + (u * 7) % 13 for u in range(30)])  # all >= 10 items
    for chosen in (random_sequences(train, 12, 10, seed=3), longest_sequences(train, 12, 10)):
        assert [len(s) for s in chosen] == [10] * 12
        assert_suffixes_of_distinct_users(chosen, train, 10)


def test_random_is_deterministic_by_seed_and_varies_with_it():
    train = users_with_lengths(LENGTHS)
    first = random_sequences(train, 5, 8, seed=7)
    again = random_sequences(train, 5, 8, seed=7)
    assert [s.tolist() for s in first] == [s.tolist() for s in again]
    picks = {tuple(owner(s) for s in random_sequences(train, 5, 8, seed=k)) for k in range(10)}
    assert len(picks) > 5


def test_random_covers_users_uniformly():
    train = users_with_lengths([20] * 10)
    counts = np.zeros(10)
    for seed in range(400):
        for s in random_sequences(train, 2, 10, seed=seed):
            counts[owner(s)] += 1
    assert counts.sum() == 800 and counts.min() > 50 and counts.max() < 110  # 80 expected each


def test_longest_picks_the_longest_users_ties_by_index():
    train = users_with_lengths(LENGTHS)
    chosen = longest_sequences(train, 4, 10)
    # lengths 40 (user 10), 30 (users 2 and 7: index order), 25 (user 5)
    assert [owner(s) for s in chosen] == [10, 2, 7, 5]
    assert all(len(s) == 10 for s in chosen)


def test_the_last_user_is_trimmed_to_its_most_recent_items():
    train = users_with_lengths([20, 20, 20])
    chosen = longest_sequences(train, 2, 8)  # budget 16: 8 + 8
    assert [len(s) for s in chosen] == [8, 8]
    train = users_with_lengths([20, 5, 20])
    chosen = longest_sequences(train, 2, 8)  # users 0 (8), 2 (8)
    assert [owner(s) for s in chosen] == [0, 2]
    train = users_with_lengths([20, 3, 3, 3])
    chosen = longest_sequences(train, 2, 6)  # budget 12: 6 + 3 + 3
    assert [len(s) for s in chosen] == [6, 3, 3]
    train = users_with_lengths([20, 4, 4, 4])
    chosen = longest_sequences(train, 2, 6)  # 6 + 4, then 2 left: the third is trimmed to 2
    assert [len(s) for s in chosen] == [6, 4, 2]
    assert np.array_equal(chosen[2], train[2][-2:])


def test_a_remainder_of_one_item_is_dropped_and_single_items_skipped():
    train = users_with_lengths([7, 3, 3])
    chosen = longest_sequences(train, 2, 4)  # budget 8: 4 + 3, then 1 left: dropped
    assert [len(s) for s in chosen] == [4, 3] and sum(map(len, chosen)) == 7
    train = users_with_lengths([1, 1, 5, 1])
    assert [owner(s) for s in random_sequences(train, 3, 4, seed=0)] == [2]  # all that is usable


def test_bad_budgets_raise_config_errors():
    train = users_with_lengths([5, 5])
    with pytest.raises(ConfigError, match="zeta=1 must be >= 2"):
        longest_sequences(train, 3, 1)
    with pytest.raises(ConfigError, match="mu must be a positive integer"):
        random_sequences(train, 0, 4, seed=0)


def test_export_inter_round_trip_with_item_tokens(tmp_path):
    sequences = [np.array([3, 1, 2]), np.array([2, 2])]
    item_ids = np.array(["[PAD]", "apple", "pear", "fig"], dtype=object)
    path = export_inter(sequences, tmp_path / "random.inter", item_ids)
    assert path.read_text().splitlines() == [
        "user_id:token\titem_id:token\ttimestamp:float",
        "s0\tfig\t0", "s0\tapple\t1", "s0\tpear\t2", "s1\tpear\t0", "s1\tpear\t1"]
    table = read_interactions(path, "atomic")
    assert table["user"].tolist() == ["s0"] * 3 + ["s1"] * 2
    assert table["item"].tolist() == ["fig", "apple", "pear", "pear", "pear"]
    with pytest.raises(ValueError, match="padding"):
        export_inter([np.array([0, 1])], tmp_path / "bad.inter")
    assert not (tmp_path / "bad.inter").exists()
