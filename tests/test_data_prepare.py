"""The processed dataset: real-data statistics, leave-one-out, negatives, cache, errors."""
from __future__ import annotations

import csv
import gzip
import zipfile
from collections import defaultdict

import numpy as np
import pytest

from td3.data import SequenceDataset, load_dataset
from td3.data.prepare import sample_recbole_negatives
from td3.errors import ConfigError, DataError

ATOMIC_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_atomic(path, rows):
    path.write_text(ATOMIC_HEADER + "".join(f"{u}\t{i}\t1\t{t}\n" for u, i, t in rows))
    return path


def assert_same_dataset(a: SequenceDataset, b: SequenceDataset):
    assert (a.name, a.num_users, a.num_items, a.sha256) == (b.name, b.num_users, b.num_items, b.sha256)
    assert len(a.train) == len(b.train)
    for x, y in zip(a.train, b.train):
        np.testing.assert_array_equal(x, y)
    for field in ("valid", "test", "negatives", "recbole_negatives", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.stats == b.stats


def reference_sequences(path, user_col, item_col, time_col, skip_header):
    """Raw-id sequences built the plain way: csv rows, stable sort by timestamp."""
    rows = defaultdict(list)
    with open(path, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        if skip_header:
            next(reader)
        for row in reader:
            rows[row[user_col]].append((float(row[time_col]), row[item_col]))
    return {u: [item for _, item in sorted(events, key=lambda e: e[0])]
            for u, events in rows.items()}


# ----------------------------------------------------------------------- real datasets
@pytest.fixture
def ml100k(mirror_data_dir):
    return load_dataset("ml-100k")


def test_ml100k_statistics(ml100k):
    assert (ml100k.num_users, ml100k.num_items) == (943, 1682)
    assert ml100k.stats["interactions"] == 100_000 == ml100k.num_interactions
    assert ml100k.stats["avg_len"] == pytest.approx(106.04, abs=0.01)
    assert ml100k.stats["dropped_short_users"] == 0
    assert ml100k.sha256 == "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
    assert ml100k.item_ids[0] == "[PAD]" and len(ml100k.item_ids) == 1683
    assert len(ml100k.user_ids) == 943


def test_ml100k_leave_one_out_against_a_hand_built_reference(ml100k, shared_datasets):
    reference = reference_sequences(shared_datasets / "ml-100k" / "ml-100k.inter",
                                    0, 1, 3, skip_header=True)
    user_index = {raw: u for u, raw in enumerate(ml100k.user_ids)}
    for raw_user in ("196", "1", "943", "405", "13"):
        u = user_index[raw_user]
        expected = reference[raw_user]
        assert ml100k.item_ids[ml100k.test[u]] == expected[-1]
        assert ml100k.item_ids[ml100k.valid[u]] == expected[-2]
        assert list(ml100k.item_ids[ml100k.train[u]]) == expected[:-2]
        assert list(ml100k.item_ids[ml100k.history(u)]) == expected


def test_ml100k_item_ids_follow_first_appearance_in_the_file(ml100k):
    # u.data starts "196 242", "186 302", "22 377": first three items get ids 1, 2, 3.
    assert list(ml100k.item_ids[1:4]) == ["242", "302", "377"]
    assert list(ml100k.user_ids[:3]) == ["196", "186", "22"]


def test_ml100k_negatives(ml100k):
    negatives = ml100k.negatives
    assert negatives.shape == (943, 100) and negatives.dtype == np.int64
    assert negatives.min() >= 1 and negatives.max() <= ml100k.num_items   # no padding id
    assert np.all(np.diff(negatives, axis=1) > 0)                         # sorted, distinct
    for u in range(ml100k.num_users):
        assert not np.isin(negatives[u], ml100k.history(u)).any()


def test_negatives_are_identical_across_loads_and_cache_rebuilds(mirror_data_dir, ml100k):
    again = load_dataset("ml-100k", cache=False)
    assert_same_dataset(ml100k, again)
    for cached in (mirror_data_dir / "processed").glob("*.npz"):
        cached.unlink()
    rebuilt = load_dataset("ml-100k")
    assert_same_dataset(ml100k, rebuilt)
    other_seed = load_dataset("ml-100k", negatives_seed=1, cache=False)
    assert not np.array_equal(other_seed.negatives, ml100k.negatives)
    assert not np.array_equal(other_seed.recbole_negatives, ml100k.recbole_negatives)
    np.testing.assert_array_equal(other_seed.test, ml100k.test)


def test_recbole_sampler_on_a_hand_made_case():
    # 5 items; targets 1, 3, 5, 3. Each row draws 100 from the 4 items but its target.
    targets = np.array([1, 3, 5, 3])
    rows = sample_recbole_negatives(targets, num_items=5, num_negatives=100, seed=7)
    assert rows.shape == (4, 100) and rows.dtype == np.int64
    for row, target in zip(rows, targets):
        assert target not in row                                    # never the target
        assert set(row.tolist()) == set(range(1, 6)) - {target}     # every other item, padding never
        assert len(np.unique(row)) < len(row)                       # with replacement
        assert np.all(np.diff(row) >= 0)                            # sorted
    np.testing.assert_array_equal(rows, sample_recbole_negatives(targets, 5, 100, seed=7))
    assert not np.array_equal(rows, sample_recbole_negatives(targets, 5, 100, seed=8))
    # two users with the same target draw independently
    assert not np.array_equal(rows[1], rows[3])
    # 2 items: the only allowed negative, 100 times
    np.testing.assert_array_equal(sample_recbole_negatives(np.array([2]), 2, 100, seed=0), np.ones((1, 100)))
    with pytest.raises(DataError, match="at least 2 items"):
        sample_recbole_negatives(np.array([1]), 1, 100, seed=0)


def test_recbole_sampler_is_uniform_over_all_items_but_the_target():
    targets = np.full(20_000, 4)
    counts = np.bincount(sample_recbole_negatives(targets, 9, 100, seed=0).ravel(), minlength=10)
    assert counts[0] == 0 and counts[4] == 0
    expected = 20_000 * 100 / 8
    chi2 = (((counts[np.r_[1:4, 5:10]] - expected) ** 2) / expected).sum()
    assert chi2 < 24.3                       # df = 7, p = 0.001; a biased shift is far off


def test_ml100k_recbole_negatives(ml100k):
    rec = ml100k.recbole_negatives
    assert rec.shape == (2, 943, 100) and rec.dtype == np.int64
    assert rec.min() >= 1 and rec.max() <= ml100k.num_items
    np.testing.assert_array_equal(ml100k.negatives_for("recbole100", "valid"), rec[0])
    np.testing.assert_array_equal(ml100k.negatives_for("recbole100", "test"), rec[1])
    np.testing.assert_array_equal(ml100k.negatives_for("unseen100", "test"), ml100k.negatives)
    in_history = []
    for u in range(ml100k.num_users):
        assert ml100k.valid[u] not in rec[0, u] and ml100k.test[u] not in rec[1, u]
        in_history.append(np.isin(rec[1, u], ml100k.history(u)).sum())
    # the user's own items are drawn in proportion to the history's share of the catalogue:
    # on ML-100K about 6 of the 100 (issue 13's figure)
    assert 5 < np.mean(in_history) < 7.5
    assert not np.array_equal(rec[0], rec[1])


def test_negatives_look_uniform_over_unseen_items(ml100k):
    # Each item's expected count: sum over users of 100 / |unseen items of that user|.
    expected = np.zeros(ml100k.num_items + 1)
    for u in range(ml100k.num_users):
        unseen = np.setdiff1d(np.arange(1, ml100k.num_items + 1), ml100k.history(u))
        expected[unseen] += 100 / len(unseen)
    observed = np.bincount(ml100k.negatives.ravel(), minlength=ml100k.num_items + 1)
    chi2 = (((observed - expected)[1:] ** 2) / expected[1:]).sum()
    assert chi2 < 1682 * 1.25                    # df = 1681; a biased sampler is far off


def test_magazine_2018_with_the_paper_filter(mirror_data_dir):
    data = load_dataset("magazine-2018")
    assert (data.num_users, data.num_items, data.num_interactions) == (658, 894, 4720)
    assert data.stats["filter"] == {"item_min": 3, "user_min": 5, "one_pass": True,
                                    "applied": True}
    assert data.stats["raw"] == {"interactions": 89689, "users": 72098, "items": 2428}
    assert min(len(data.history(u)) for u in range(data.num_users)) >= 5


def test_magazine_2018_filter_can_be_overridden(mirror_data_dir):
    data = load_dataset("magazine-2018", item_min=0, user_min=10, cache=False)
    assert all(len(data.history(u)) >= 10 for u in range(data.num_users))
    assert data.num_users < 658


def test_ml1m_slice_statistics(mirror_data_dir):
    data = load_dataset("ml-1m-slice")
    assert (data.num_users, data.num_items, data.num_interactions) == (2999, 3615, 487_650)
    assert data.negatives.shape == (2999, 100)
    assert data.stats["avg_len"] == pytest.approx(162.6, abs=0.05)


def test_official_zip_layout_prepares_to_the_same_sequences(mirror_data_dir, ml100k,
                                                             shared_datasets, tmp_path):
    # Rebuild GroupLens' layout (ml-100k/u.data in a zip) from the atomic file's rows.
    rows = (shared_datasets / "ml-100k" / "ml-100k.inter").read_text().split("\n", 1)[1]
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("ml-100k/u.data", rows)
    from_zip = load_dataset("ml-100k", path=archive, format="ml-100k")
    assert from_zip.sha256 != ml100k.sha256
    for field in ("valid", "test", "negatives", "item_ids", "user_ids"):
        np.testing.assert_array_equal(getattr(from_zip, field), getattr(ml100k, field))


# --------------------------------------------------------------------- protocol details
def test_timestamp_ties_keep_file_order(data_dir, tmp_path):
    rng = np.random.default_rng(3)
    # One long user whose timestamps take only 3 values (an unstable sort would shuffle
    # the ties), plus another user so that negatives can be drawn.
    rows = [("heavy", f"h{k}", int(rng.integers(3))) for k in range(300)]
    rows += [("light", f"l{k}", k) for k in range(10)]
    path = write_atomic(tmp_path / "ties.inter", rows)
    data = load_dataset("ties", path=path, format="atomic", num_negatives=5, cache=False)
    expected = [item for item, _ in sorted(((i, t) for _, i, t in rows[:300]),
                                           key=lambda e: e[1])]     # sorted() is stable
    u = list(data.user_ids).index("heavy")
    assert list(data.item_ids[data.history(u)]) == expected
    assert data.item_ids[data.test[u]] == expected[-1]


def test_one_pass_filter_is_not_an_iterative_k_core(data_dir, tmp_path):
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "e", 4),
            ("u2", "a", 1), ("u2", "b", 2), ("u2", "e", 3),
            ("u3", "c", 1), ("u3", "d", 2), ("u3", "f", 3),       # d, f once -> u3 drops
            ("u4", "g", 1), ("u4", "h", 2), ("u4", "i", 3), ("u4", "j", 4),
            ("u5", "g", 1), ("u5", "h", 2), ("u5", "i", 3), ("u5", "j", 4)]
    path = write_atomic(tmp_path / "f.inter", rows)
    data = load_dataset("f", path=path, format="atomic", item_min=2, user_min=3,
                        num_negatives=2, cache=False)
    # One pass keeps item c (its second rater u3 left afterwards); a k-core would drop it.
    assert sorted(data.item_ids[1:]) == ["a", "b", "c", "e", "g", "h", "i", "j"]
    assert data.num_interactions == 15 and data.num_users == 4


def test_users_with_fewer_than_three_interactions_are_dropped_and_counted(data_dir, tmp_path):
    rows = [("short", "x1", 1), ("short", "x2", 2)]
    rows += [(f"u{k}", f"i{j}", j) for k in range(3) for j in range(k, k + 10)]
    path = write_atomic(tmp_path / "s.inter", rows)
    data = load_dataset("s", path=path, format="atomic", num_negatives=2, cache=False)
    assert "short" not in set(data.user_ids) and data.num_users == 3
    assert data.stats["dropped_short_users"] == 1
    assert "x1" not in set(data.item_ids) and data.num_items == 12


def test_eval_inputs_by_hand(data_dir, tmp_path):
    rows = [("a", f"i{k}", k) for k in range(6)] + [("b", f"j{k}", k) for k in range(3)]
    path = write_atomic(tmp_path / "e.inter", rows)
    data = load_dataset("e", path=path, format="atomic", num_negatives=3, cache=False)
    # items by first appearance: i0..i5 -> 1..6, j0..j2 -> 7..9
    np.testing.assert_array_equal(data.train[0], [1, 2, 3, 4])
    inputs, lengths, targets = data.eval_inputs("valid", max_len=3)
    np.testing.assert_array_equal(inputs, [[2, 3, 4], [7, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1])
    np.testing.assert_array_equal(targets, [5, 8])
    inputs, lengths, targets = data.eval_inputs("test", max_len=3)
    np.testing.assert_array_equal(inputs, [[3, 4, 5], [7, 8, 0]])
    np.testing.assert_array_equal(lengths, [3, 2])
    np.testing.assert_array_equal(targets, [6, 9])
    with pytest.raises(ValueError):
        data.eval_inputs("train", 3)


def test_custom_file_through_a_config_mapping(data_dir, tmp_path):
    rows = [(f"u{k}", f"i{(k * 7 + j) % 40}", j) for k in range(20) for j in range(8)]
    path = write_atomic(tmp_path / "mine.inter", rows)
    cfg = {"name": "custom", "path": str(path), "format": "atomic", "num_negatives": 20}
    data = load_dataset(cfg)
    assert data.name == "custom" and data.num_users == 20 and data.negatives.shape == (20, 20)
    assert list((data_dir / "processed").glob("custom-*.npz"))
    assert_same_dataset(data, load_dataset(cfg))                    # from the cache
    pinned = load_dataset({**cfg, "sha256": data.sha256.upper()})
    assert pinned.sha256 == data.sha256
    with pytest.raises(DataError, match=r"sha256 mismatch for .*mine\.inter: expected 0{64}, got"):
        load_dataset({**cfg, "sha256": "0" * 64})


# --------------------------------------------------------------------------------- cache
@pytest.mark.parametrize("damage", ["truncate", "flip-byte", "garbage", "tampered"])
def test_corrupt_cache_is_rebuilt(data_dir, damage):
    options = dict(num_users=200, num_items=200, num_clusters=5, seed=4)
    original = load_dataset("synthetic", **options)
    [cached] = (data_dir / "processed").glob("synthetic-*.npz")
    data = cached.read_bytes()
    if damage == "truncate":
        cached.write_bytes(data[: len(data) // 2])
    elif damage == "flip-byte":
        broken = bytearray(data)
        broken[len(broken) // 3] ^= 0xFF
        cached.write_bytes(bytes(broken))
    elif damage == "garbage":
        cached.write_bytes(b"not a zip at all")
    else:  # a well-formed archive whose arrays no longer match its recorded digest
        with np.load(cached) as archive:
            arrays = {key: archive[key] for key in archive.files}
        arrays["negatives"] = arrays["negatives"][::-1].copy()
        with open(cached, "wb") as handle:
            np.savez(handle, **arrays)
    with pytest.warns(RuntimeWarning, match="corrupt.*rebuilding"):
        rebuilt = load_dataset("synthetic", **options)
    assert_same_dataset(original, rebuilt)
    assert cached.read_bytes() == data                              # rewritten, same bytes
    load_dataset("synthetic", **options)                            # and now loads cleanly


def test_cache_key_separates_options(data_dir):
    small = dict(num_users=100, num_items=200, num_clusters=5)
    load_dataset("synthetic", **small)
    load_dataset("synthetic", **small, negatives_seed=1)
    load_dataset("synthetic", **small, seed=1)
    assert len(list((data_dir / "processed").glob("synthetic-*.npz"))) == 3
    assert not list((data_dir / "processed").glob(".*"))            # no temp files left


def test_cache_false_writes_nothing(data_dir):
    load_dataset("synthetic", num_users=50, num_items=200, num_clusters=5, cache=False)
    assert not (data_dir / "processed").exists()


# -------------------------------------------------------------------------------- errors
def test_dataset_with_too_few_items_for_the_negatives(data_dir):
    with pytest.raises(DataError, match=r"too small: 100 items.*100 negatives needs at least 101"):
        load_dataset("synthetic", num_users=50, num_items=100, num_clusters=5, max_len=40)


def test_user_with_too_few_unseen_items(data_dir, tmp_path):
    # 110 items (enough for 100 negatives + target) but "greedy" has seen 30 of them.
    rows = [("greedy", f"i{k}", k) for k in range(30)] + [("x", f"i{k}", k) for k in range(30, 110)]
    path = write_atomic(tmp_path / "g.inter", rows)
    with pytest.raises(DataError, match=r"'g' too small: user greedy interacted with 30 of "
                                        r"110 items, leaving 80 < 100 candidate negatives"):
        load_dataset("g", path=path, format="atomic")
    assert not (data_dir / "processed").exists()


def test_no_user_left_after_filtering(data_dir, tmp_path):
    path = write_atomic(tmp_path / "n.inter", [("a", "x", 1), ("a", "y", 2), ("b", "x", 1)])
    with pytest.raises(DataError, match=r"no user has >= 3 interactions after filtering"):
        load_dataset("n", path=path, format="atomic")


def test_bad_options(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option\(s\) seed.*negatives_seed"):
        load_dataset("ml-100k", seed=3)
    with pytest.raises(ConfigError, match=r"item_min must be an integer >= 0"):
        load_dataset("ml-100k", item_min=-1)
    with pytest.raises(ConfigError, match=r"path= needs format="):
        load_dataset("custom", path=str(tmp_path / "x.inter"))
    with pytest.raises(DataError, match=r"file not found"):
        load_dataset("custom", path=str(tmp_path / "x.inter"), format="atomic")
    with pytest.raises(ConfigError, match=r"synthetic dataset: max_len=60 > num_items=50"):
        load_dataset("synthetic", num_items=50, num_clusters=2)
    # each integer option's own least value, said once (not ">= 0" and then "< 1")
    for key, value, minimum in (("num_users", 0, 1), ("num_items", 2, 3), ("min_len", 2, 3), ("seed", -1, 0)):
        with pytest.raises(ConfigError, match=rf"'synthetic': {key} must be an integer >= {minimum}, got {value}$"):
            load_dataset("synthetic", **{key: value})


def test_malformed_custom_file_reports_file_and_line(data_dir, tmp_path):
    path = tmp_path / "broken.inter"
    path.write_text(ATOMIC_HEADER + "a\tb\t1\t1\n" * 5 + "a\tb\t1\n")
    with pytest.raises(DataError, match=r"broken\.inter:7: expected 4 TAB-separated fields, got 3"):
        load_dataset("broken", path=path, format="atomic")
    assert not (data_dir / "processed").exists()


def test_gzip_custom_ml1m_file(data_dir, tmp_path):
    rows = "".join(f"{u}::{u * 10 + i}::4::{978300000 + i}\n" for u in range(1, 4) for i in range(8))
    path = tmp_path / "ratings.dat.gz"
    path.write_bytes(gzip.compress(rows.encode()))
    data = load_dataset("mine", path=path, format="ml-1m", num_negatives=10, cache=False)
    assert (data.num_users, data.num_items, data.num_interactions) == (3, 24, 24)
    assert list(data.item_ids[data.history(1)]) == [str(20 + i) for i in range(8)]
