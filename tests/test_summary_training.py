"""Training fresh learners on a summary or on real subsets, on a small synthetic dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from td3.baselines import longest_sequences
from td3.data import load_dataset
from td3.errors import ConfigError, TrainingError
from td3.evaluate import evaluate
from td3.models import build_model
from td3.models.popularity import Popularity
from td3.summary_training import build_learner, train_on_sequences, train_on_summary

MAX_LEN, ZETA = 20, 20
TINY_BERT = {"hidden_size": 32, "num_layers": 1, "num_heads": 1, "inner_size": 64}
TINY_GRU = {"embedding_size": 32, "hidden_size": 32}


@pytest.fixture(scope="module", autouse=True)
def few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other jobs share the machine; also faster for these sizes
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_dataset("synthetic", num_users=200, num_items=300,
                        data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def one_hot_summary(data) -> torch.Tensor:
    """The last ζ training items of every long-enough user, as one-hot distributions."""
    sequences = [s[-ZETA:] for s in data.train if len(s) >= ZETA]
    S = torch.zeros(len(sequences), ZETA, data.num_items)  # (μ, ζ, |V|)
    for a, sequence in enumerate(sequences):
        S[a, torch.arange(ZETA), torch.as_tensor(sequence) - 1] = 1.0
    return S


@pytest.fixture(scope="module")
def popularity_ndcg(data) -> float:
    result = evaluate(Popularity.fit(data.train, data.num_items), data, "test",
                      protocols=("recbole100",), max_len=MAX_LEN)
    return result.metrics["recbole100"]["NDCG@10"]


def run(S, data, model="sasrec", options=None, **kwargs):
    settings = dict(epochs=3, batch_size=32, lr=0.005, weight_decay=0.0, alt=True, alt_low=5,
                    seed=0, max_len=MAX_LEN, eval_protocols=("recbole100",))
    settings.update(kwargs)
    return train_on_summary(S, data, model, options or {}, **settings)


def test_a_summary_of_real_sequences_beats_popularity(data, one_hot_summary, popularity_ndcg):
    result = run(one_hot_summary, data, epochs=20, select="last", eval_protocols=("recbole100", "full"))
    ndcg = result.test.metrics["recbole100"]["NDCG@10"]
    assert popularity_ndcg > 0.05  # the floor is not trivially zero
    assert ndcg > 2 * popularity_ndcg and ndcg > popularity_ndcg + 0.15, (ndcg, popularity_ndcg)
    assert set(result.test.metrics) == {"recbole100", "full"} and set(result.valid.metrics) == {"recbole100", "full"}
    assert result.best_epoch == result.epochs == 20 and len(result.history) == 20
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert all("valid_MRR@10" not in h for h in result.history)  # "last" never validates


def test_same_seed_gives_bitwise_identical_results(data, one_hot_summary):
    S = one_hot_summary[:64]
    first, again, other = (run(S, data, seed=s, epochs=2) for s in (5, 5, 6))
    assert [h["loss"] for h in first.history] == [h["loss"] for h in again.history]
    assert first.test.metrics == again.test.metrics and first.valid.metrics == again.valid.metrics
    for (name, p), q in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert [h["loss"] for h in first.history] != [h["loss"] for h in other.history]


def test_the_callers_random_streams_are_left_alone(data, one_hot_summary):
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    run(one_hot_summary[:16], data, epochs=1, select="last")
    train_on_sequences(data.train[:8], data, "sasrec", {}, epochs=1, batch_size=8, lr=0.01,
                       weight_decay=0.0, seed=0, max_len=MAX_LEN, select="last", eval_protocols=("recbole100",))
    assert torch.equal(torch.rand(3), expected_torch)
    assert np.array_equal(np.random.rand(3), expected_numpy)


def test_best_valid_keeps_the_best_validated_state(data, one_hot_summary):
    result = run(one_hot_summary[:96], data, epochs=5, eval_every=2, select="best_valid")
    validated = [(h["epoch"], h["valid_MRR@10"]) for h in result.history if "valid_MRR@10" in h]
    assert [e for e, _ in validated] == [2, 4, 5]  # every eval_every epochs, and the last
    best_epoch, best_score = max(validated, key=lambda x: (x[1], -x[0]))  # ties: earlier
    assert result.best_epoch == best_epoch
    # the evaluated model is the kept state, not the last one
    assert result.valid.metrics["recbole100"]["MRR@10"] == best_score


def test_paper_protocol_starts_from_the_teacher_table(data, one_hot_summary):
    teacher = build_model("sasrec", data.num_items, max_len=MAX_LEN)
    with torch.no_grad():
        teacher.item_embedding.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        teacher.item_embedding.weight[0].zero_()
    table = teacher.item_embedding.weight.detach().clone()  # (|V|+1, d)
    learner = build_learner("sasrec", data.num_items, {}, max_len=MAX_LEN, seed=0,
                            protocol="paper", teacher_item_embedding=table)
    assert torch.equal(learner.item_embedding.weight, table)
    scratch = build_learner("sasrec", data.num_items, {}, max_len=MAX_LEN, seed=0)
    assert not torch.equal(scratch.item_embedding.weight, table)

    S = one_hot_summary[:32]
    trainable = run(S, data, epochs=1, select="last", protocol="paper", teacher_item_embedding=table)
    assert not torch.equal(trainable.model.item_embedding.weight, table)  # the authors' no-op freeze
    frozen = run(S, data, epochs=1, select="last", protocol="paper", teacher_item_embedding=table,
                 freeze_item_embedding=True)
    assert torch.equal(frozen.model.item_embedding.weight, table)


def test_protocol_errors(data, one_hot_summary):
    S = one_hot_summary[:8]
    with pytest.raises(ConfigError, match=r"\(301, 16\).*\(301, 32\)"):
        run(S, data, protocol="paper", teacher_item_embedding=torch.zeros(301, 16))
    with pytest.raises(ConfigError, match="needs teacher_item_embedding"):
        run(S, data, protocol="paper")
    with pytest.raises(ConfigError, match="unknown evaluation protocol 'pretrained'"):
        run(S, data, protocol="pretrained")
    with pytest.raises(ConfigError, match="only applies with protocol='paper'"):
        run(S, data, freeze_item_embedding=True)
    with pytest.raises(ConfigError, match="max_len is 10"):
        run(S, data, max_len=10)
    with pytest.raises(ConfigError, match="alt_low=19"):
        run(S, data, alt_low=19)
    with pytest.raises(ConfigError, match="299 item columns"):
        run(S[..., :299], data)
    with pytest.raises(ConfigError, match="select="):
        run(S, data, select="best")


@pytest.mark.parametrize("model,options", [("bert4rec", TINY_BERT), ("gru4rec", TINY_GRU)])
def test_other_learners_train_on_a_summary(data, one_hot_summary, model, options):
    result = run(one_hot_summary[:64], data, model, options, epochs=2, select="last")
    assert all(np.isfinite(h["loss"]) for h in result.history)
    assert type(result.model).__name__.lower() == model
    for split in (result.valid, result.test):
        assert all(0.0 <= v <= 1.0 for v in split.metrics["recbole100"].values())


def test_a_soft_summary_trains_too(data):
    generator = torch.Generator().manual_seed(0)
    S = torch.randn(16, 8, data.num_items, generator=generator).softmax(-1)
    result = run(S, data, epochs=2, select="last")
    assert len(result.history) == 2 and all(np.isfinite(h["loss"]) for h in result.history)


def test_a_non_finite_loss_is_a_training_error(data, one_hot_summary):
    S = one_hot_summary[:16].clone()
    S[3, -1, 0] = float("nan")
    with pytest.raises(TrainingError, match="epoch 1"):
        run(S, data, epochs=2)


def test_real_subsets_train_through_the_full_data_loop(data, popularity_ndcg):
    subset = longest_sequences(data.train, 100, ZETA)  # 2000 interactions
    assert sum(map(len, subset)) == 100 * ZETA
    settings = dict(epochs=12, batch_size=32, lr=0.005, weight_decay=0.0, seed=0, max_len=MAX_LEN,
                    select="last", eval_protocols=("recbole100",))
    result = train_on_sequences(subset, data, "sasrec", {}, **settings)
    assert result.test.metrics["recbole100"]["NDCG@10"] > 2 * popularity_ndcg
    again = train_on_sequences(subset, data, "sasrec", {}, **settings)
    assert [h["loss"] for h in again.history] == [h["loss"] for h in result.history]
    assert again.test.metrics == result.test.metrics
    with pytest.raises(ConfigError, match="no next-item example"):
        train_on_sequences([np.array([1])], data, "sasrec", {}, **settings)
    with pytest.raises(ConfigError, match="outside 1..300"):
        train_on_sequences([np.array([1, 301])], data, "sasrec", {}, **settings)


def test_non_finite_loss_on_sequences_is_a_training_error(data, monkeypatch):
    model_cls = type(build_model("sasrec", data.num_items, max_len=MAX_LEN))
    monkeypatch.setattr(model_cls, "train_loss", lambda self, x, y: self.forward(x).sum() * float("nan"))
    with pytest.raises(TrainingError, match="epoch 1"):
        train_on_sequences(data.train[:10], data, "sasrec", {}, epochs=1, batch_size=8, lr=0.01,
                           weight_decay=0.0, seed=0, max_len=MAX_LEN)
