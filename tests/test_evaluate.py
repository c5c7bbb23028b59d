"""td3.evaluate on a fake dataset and fake models whose scores are set by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from td3.errors import ConfigError, DataError
from td3.evaluate import EvalResult, evaluate
from td3.metrics import metric_names

NUM_ITEMS = 130
# Each user's items in time order: training..., validation target, test target.
# First items are unique per user so the fake model can tell users apart.
HISTORIES = [
    [1, 2, 3, 4, 5],
    [10, 11, 12, 13],
    [20, 21, 22, 23, 24, 25],
    [26, 27, 28],
]
NEGATIVES = np.tile(np.arange(31, 131, dtype=np.int64), (len(HISTORIES), 1))  # never interacted


def _recbole_rows(*rows):
    """recbole100 negatives: the listed items (history items and repeats among them), then
    item 130 (scoring -1 for every user) up to 100 per row."""
    return np.array([list(r) + [130] * (100 - len(r)) for r in rows], dtype=np.int64)


# RecBole's negatives may hold the user's own items and repeats; never the split's target.
RECBOLE = {
    "valid": _recbole_rows([1, 1, 2, 3, 31], [10, 11, 13, 13], [20, 20, 20, 25, 31], []),
    "test": _recbole_rows([1, 1, 2, 3, 31], [10, 11, 12, 12], [20, 20, 20, 24, 31], []),
}


class FakeData:
    """Exactly the API td3.evaluate relies on."""

    def __init__(self, histories=HISTORIES, negatives=NEGATIVES, num_items=NUM_ITEMS, recbole=RECBOLE):
        self.histories = [np.asarray(h, dtype=np.int64) for h in histories]
        self.num_items = num_items
        self.num_users = len(histories)
        self.negatives = negatives
        self.recbole = recbole

    def negatives_for(self, protocol, split):
        return {"unseen100": self.negatives, "recbole100": self.recbole[split]}[protocol]

    def eval_inputs(self, split, max_len):
        cut = {"valid": -2, "test": -1}[split]
        inputs = np.zeros((self.num_users, max_len), dtype=np.int64)
        lengths = np.zeros(self.num_users, dtype=np.int64)
        targets = np.zeros(self.num_users, dtype=np.int64)
        for u, h in enumerate(self.histories):
            seq = h[:cut][-max_len:]
            inputs[u, :len(seq)] = seq
            lengths[u] = len(seq)
            targets[u] = h[cut]
        return inputs, lengths, targets

    def history(self, u):
        return self.histories[u].copy()


class TableModel(nn.Module):
    """Scores looked up by the first item of each sequence: {first item: {item: score}};
    unlisted items score -1, padding -inf. Records the mode and grad state it saw."""

    def __init__(self, rows, num_items=NUM_ITEMS):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.table = {}
        for first, row in rows.items():
            s = torch.full((num_items + 1,), -1.0)
            s[0] = float("-inf")
            for item, value in row.items():
                s[item] = value
            self.table[first] = s
        self.calls = []

    def score_next(self, x, lengths):
        assert x.dtype == torch.int64 and lengths.dtype == torch.int64
        assert x.shape[0] == lengths.shape[0]
        self.calls.append((self.training, torch.is_grad_enabled(), x.shape[0]))
        return torch.stack([self.table[int(f)] for f in x[:, 0]]) + 0 * self.dummy


def _test_split_model():
    return TableModel({
        # target 5 at 0: negatives 31, 32, history 1, 2, 4 and unseen 29 above it
        1: {5: 0.0, 31: 1.0, 32: 1.0, 1: 2.0, 2: 2.0, 4: 2.0, 29: 1.0},
        # target 13 is the single best item
        10: {13: 5.0},
        # target 25 ties with negatives 31..40; history item 20 above
        20: {25: 0.0, **{i: 0.0 for i in range(31, 41)}, 20: 5.0},
        # everything ties: target 28 gets the worst rank
        26: {i: 0.0 for i in range(1, NUM_ITEMS + 1)},
    })


# expected ranks for the test split (worked out from the table above)
UNI100 = [3, 1, 11, 101]
# recbole100: user 0's history items 1 (twice), 2 and unseen 31 beat the target; user 2's
# history item 20 three times and 31 (24 scores below)
RECBOLE100 = [5, 1, 5, 101]
FULL = [7, 1, 12, 130]
FULL_EXCL = [4, 1, 11, 128]   # test split excludes training + validation items


def _expected(ranks):
    out = {}
    for k in (5, 10, 20):
        out[f"HR@{k}"] = np.mean([r <= k for r in ranks])
    for k in (5, 10, 20):
        out[f"NDCG@{k}"] = np.mean([1 / math.log2(r + 1) if r <= k else 0.0 for r in ranks])
    for k in (5, 10, 20):
        out[f"MRR@{k}"] = np.mean([1 / r if r <= k else 0.0 for r in ranks])
    return out


def test_evaluate_exact_metrics_on_test_split():
    res = evaluate(_test_split_model(), FakeData(), "test", batch_size=3)
    assert isinstance(res, EvalResult)
    np.testing.assert_array_equal(res.users, [0, 1, 2, 3])
    np.testing.assert_array_equal(res.ranks["unseen100"], UNI100)
    np.testing.assert_array_equal(res.ranks["full"], FULL)
    # literal values, worked out by hand
    uni = res.metrics["unseen100"]
    assert uni["HR@5"] == pytest.approx(0.5)
    assert uni["HR@10"] == pytest.approx(0.5)
    assert uni["HR@20"] == pytest.approx(0.75)
    assert uni["NDCG@5"] == pytest.approx((0.5 + 1) / 4)
    assert uni["NDCG@20"] == pytest.approx((0.5 + 1 + 1 / math.log2(12)) / 4)
    assert uni["MRR@5"] == pytest.approx((1 / 3 + 1) / 4)
    assert uni["MRR@20"] == pytest.approx((1 / 3 + 1 + 1 / 11) / 4)
    full = res.metrics["full"]
    assert full["HR@5"] == pytest.approx(0.25)
    assert full["HR@10"] == pytest.approx(0.5)
    assert full["NDCG@10"] == pytest.approx((1 / 3 + 1) / 4)
    assert full["MRR@10"] == pytest.approx((1 / 7 + 1) / 4)
    for protocol, ranks in (("unseen100", UNI100), ("full", FULL)):
        assert list(res.metrics[protocol]) == metric_names()
        for name, value in _expected(ranks).items():
            assert type(res.metrics[protocol][name]) is float
            assert res.metrics[protocol][name] == pytest.approx(value, abs=1e-12), (protocol, name)
            assert res.per_user[protocol][name].shape == (4,)
    np.testing.assert_allclose(res.per_user["full"]["MRR@10"], [1 / 7, 1, 0, 0])


def test_recbole100_counts_history_items_and_repeats():
    res = evaluate(_test_split_model(), FakeData(), "test", protocols=("recbole100", "unseen100"))
    np.testing.assert_array_equal(res.ranks["recbole100"], RECBOLE100)
    np.testing.assert_array_equal(res.ranks["unseen100"], UNI100)
    for name, value in _expected(RECBOLE100).items():
        assert res.metrics["recbole100"][name] == pytest.approx(value, abs=1e-12)
    # each split ranks against its own negatives: the valid rows hold the test targets
    valid = evaluate(_test_split_model(), FakeData(), "valid", protocols="recbole100")
    assert valid.ranks["recbole100"].shape == (4,)
    # a negative equal to the split's target is refused, never silently ranked
    bad = {**RECBOLE, "test": RECBOLE["valid"]}  # user 1's row holds 13, its test target
    with pytest.raises(ValueError, match="equals the user's target"):
        evaluate(_test_split_model(), FakeData(recbole=bad), "test", protocols="recbole100")


def test_evaluate_exclude_history_test_split():
    res = evaluate(_test_split_model(), FakeData(), "test", exclude_history=True)
    np.testing.assert_array_equal(res.ranks["full"], FULL_EXCL)
    np.testing.assert_array_equal(res.ranks["unseen100"], UNI100)  # unseen100 is unaffected
    assert res.metrics["full"]["HR@5"] == pytest.approx(0.5)
    assert res.metrics["full"]["MRR@5"] == pytest.approx((1 / 4 + 1) / 4)


def test_evaluate_exclude_history_valid_split_keeps_future_items():
    # valid split, user 0: target 4 at 0; training item 1, test item 5 (the future)
    # and negative 31 above it.  Excluding history drops item 1 only.
    model = TableModel({
        1: {4: 0.0, 1: 1.0, 5: 1.0, 31: 1.0},
        10: {12: 5.0},
        20: {24: 5.0},
        26: {27: 5.0},
    })
    plain = evaluate(model, FakeData(), "valid", batch_size=2)
    excl = evaluate(model, FakeData(), "valid", batch_size=2, exclude_history=True)
    np.testing.assert_array_equal(plain.ranks["unseen100"], [2, 1, 1, 1])
    np.testing.assert_array_equal(plain.ranks["full"], [4, 1, 1, 1])
    np.testing.assert_array_equal(excl.ranks["full"], [3, 1, 1, 1])
    assert excl.metrics["full"]["MRR@5"] == pytest.approx((1 / 3 + 3) / 4)


def test_evaluate_restores_mode_and_disables_grad():
    data = FakeData()
    model = _test_split_model()
    model.train()
    evaluate(model, data, "test", batch_size=3)
    assert model.training is True
    assert model.calls == [(False, False, 3), (False, False, 1)]
    model.eval()
    evaluate(model, data, "test")
    assert model.training is False

    class Boom(TableModel):
        def score_next(self, x, lengths):
            raise RuntimeError("boom")

    boom = Boom({})
    boom.train()
    with pytest.raises(RuntimeError):
        evaluate(boom, data, "test")
    assert boom.training is True


def test_to_frame_is_long_per_user():
    res = evaluate(_test_split_model(), FakeData(), "test")
    frame = res.to_frame()
    assert list(frame.columns) == ["user", "protocol", "metric", "value"]
    assert frame.shape == (4 * 3 * 9, 4)
    assert set(frame["protocol"]) == {"recbole100", "unseen100", "full"}
    assert frame.groupby(["protocol", "metric"]).size().eq(4).all()
    value = frame.query("user == 0 and protocol == 'full' and metric == 'MRR@10'")["value"]
    assert value.tolist() == [pytest.approx(1 / 7)]
    means = frame.groupby(["protocol", "metric"])["value"].mean()
    assert means[("unseen100", "NDCG@5")] == pytest.approx(res.metrics["unseen100"]["NDCG@5"])


def test_single_protocol_and_errors():
    res = evaluate(_test_split_model(), FakeData(), "test", protocols="full")
    assert list(res.metrics) == ["full"]
    assert res.to_frame().shape == (4 * 9, 4)
    with pytest.raises(ConfigError):
        evaluate(_test_split_model(), FakeData(), "test", protocols=("uni1000",))
    with pytest.raises(ConfigError, match="ambiguous"):   # the old name of unseen100
        evaluate(_test_split_model(), FakeData(), "test", protocols=("uni100",))
    with pytest.raises(ConfigError):
        evaluate(_test_split_model(), FakeData(), "train")
    # history() out of time order: the test target is not last
    class Reversed(FakeData):
        def history(self, u):
            return super().history(u)[::-1]

    with pytest.raises(DataError):
        evaluate(_test_split_model(), Reversed(), "test", exclude_history=True)
    # ... which only matters when history is used
    assert evaluate(_test_split_model(), Reversed(), "test").ranks["full"].tolist() == FULL


def test_wrong_score_shape_is_refused():
    class Narrow(TableModel):
        def score_next(self, x, lengths):
            return super().score_next(x, lengths)[:, 1:]   # forgot the padding column

    with pytest.raises(ValueError):
        evaluate(Narrow({1: {}, 10: {}, 20: {}, 26: {}}), FakeData(), "test")
