"""Behaviour of the four learners behind the shared interface (td3/models/base.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from td3.errors import ConfigError
from td3.models import MODELS, BERT4Rec, build_model

NAMES = ["sasrec", "gru4rec", "narm", "bert4rec"]
CAUSAL = ["sasrec", "gru4rec", "narm"]
V = 30  # items 1..V

# Small sizes so the whole file runs in seconds; every architecture keeps its layout.
SMALL = {
    "sasrec": dict(hidden_size=16, inner_size=32),
    "gru4rec": dict(hidden_size=16),
    "narm": dict(hidden_size=16),
    "bert4rec": dict(hidden_size=16, inner_size=32),
}
NO_DROPOUT = {
    "sasrec": dict(hidden_dropout=0.0, attn_dropout=0.0),
    "gru4rec": dict(dropout=0.0),
    "narm": dict(emb_dropout=0.0, ct_dropout=0.0),
    "bert4rec": dict(hidden_dropout=0.0, attn_dropout=0.0),
}


def make(name, num_items=V, seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_model(name, num_items, **{"max_len": 12, **SMALL[name], **kwargs})


def id_batch(B=6, L=12, num_items=V, seed=1, min_len=1):
    """Left-aligned ids padded on the right; returns (ids (B, L), lengths (B,))."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, L + 1, (B,), generator=g)
    lengths[0] = L  # one full sequence
    ids = torch.randint(1, num_items + 1, (B, L), generator=g)
    ids[torch.arange(L) >= lengths.unsqueeze(1)] = 0
    return ids, lengths


def one_hot(ids, num_items=V, padding_column=True):
    P = F.one_hot(ids, num_items + 1).float()  # padding -> column 0
    return P if padding_column else P[..., 1:]  # padding -> all-zero row


def feature_size(model):
    return model.item_embedding.embedding_dim


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", NAMES)
def test_shapes_for_ids_and_both_distribution_layouts(name):
    model = make(name).eval()
    ids, lengths = id_batch()
    B, L = ids.shape
    d = feature_size(model)
    inputs = [ids, torch.softmax(torch.randn(B, L, V), -1), torch.softmax(torch.randn(B, L, V + 1), -1)]
    for x in inputs:
        h = model(x)
        assert h.shape == (B, L, d)
        assert model.logits(h).shape == (B, L, V + 1)
        assert model.next_features(x, lengths).shape == (B, d)
        assert model.score_next(x, lengths).shape == (B, V + 1)
    with pytest.raises(ValueError):
        model(torch.rand(B, L, V + 2))


@pytest.mark.parametrize("name", NAMES)
def test_one_hot_distribution_gives_the_id_features(name):
    model = make(name).eval()
    ids, lengths = id_batch()
    mask = ids != 0
    with torch.no_grad():
        h_ids = model(ids)
        for padding_column in (True, False):
            h_dist = model(one_hot(ids, padding_column=padding_column), mask=mask)
            torch.testing.assert_close(h_dist, h_ids, atol=1e-6, rtol=0)
            s_dist = model.score_next(one_hot(ids, padding_column=padding_column), lengths)
            torch.testing.assert_close(s_dist, model.score_next(ids, lengths), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_padding_is_never_predicted_nor_ranked(name):
    model = make(name).eval()
    ids, lengths = id_batch()
    with torch.no_grad():
        model.item_embedding.weight.mul_(1e3)  # extreme scores must not change the rule
        logits = model.logits(model(ids))
        scores = model.score_next(ids, lengths)
    assert torch.isneginf(logits[..., 0]).all() and torch.isfinite(logits[..., 1:]).all()
    assert torch.isneginf(scores[:, 0]).all()
    assert (scores[:, 1:] > scores[:, :1]).all()
    assert (scores.argmax(-1) != 0).all()
    assert (scores.argsort(-1, descending=True)[:, -1] == 0).all()  # padding ranked last


# --------------------------------------------------------------- causality
@pytest.mark.parametrize("name", NAMES)
def test_causality(name):
    model = make(name).eval()
    ids = torch.randint(1, V + 1, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = model(ids)
        for t in (0, 4, 10):
            changed = ids.clone()
            changed[:, t + 1] = changed[:, t + 1] % V + 1
            h2 = model(changed)
            if model.causal:
                torch.testing.assert_close(h2[:, : t + 1], h[:, : t + 1], atol=1e-6, rtol=0)
            else:  # bidirectional: earlier positions see the change
                assert (h2[:, : t + 1] - h[:, : t + 1]).abs().max() > 1e-4
            assert (h2[:, t + 1] - h[:, t + 1]).abs().max() > 1e-4
    assert model.causal == (name in CAUSAL)


@pytest.mark.parametrize("name", NAMES)
def test_right_padding_does_not_change_real_positions(name):
    model = make(name, max_len=50).eval()
    ids, lengths = id_batch(B=5, L=30, seed=3)
    long = torch.cat([ids, torch.zeros(5, 20, dtype=ids.dtype)], dim=1)  # padded to 50
    real = ids != 0
    with torch.no_grad():
        h30, h50 = model(ids), model(long)
        torch.testing.assert_close(h50[:, :30][real], h30[real], atol=1e-6, rtol=0)
        torch.testing.assert_close(model.next_features(long, lengths),
                                   model.next_features(ids, lengths), atol=1e-6, rtol=0)


def test_narm_next_features_is_forwards_feature_at_the_last_position():
    """NARM builds the last query alone (the other causal models gather forward's output)."""
    model = make("narm").eval()
    ids, lengths = id_batch(B=6, L=12, seed=5)
    with torch.no_grad():
        h = model(ids)  # (B, L, d)
        want = h[torch.arange(6), lengths - 1]
        torch.testing.assert_close(model.next_features(ids, lengths), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.next_features(one_hot(ids), lengths), want, atol=1e-6, rtol=0)
        garbage = ids.clone()  # ids after a sequence's end cannot leak into its prediction
        garbage[ids == 0] = 7
        torch.testing.assert_close(model.next_features(garbage, lengths), want, atol=1e-6, rtol=0)


# --------------------------------------------------------- double backward
def distribution_loss(model, P):
    """A loss on item distributions, as the distillation inner loop uses them."""
    if isinstance(model, BERT4Rec):
        return model.soft_cloze_loss(P)
    log_q = model.logits(model(P[:, :-1]))[..., 1:].log_softmax(-1)  # (B, L-1, V)
    return F.kl_div(log_q, P[:, 1:], reduction="batchmean")


@pytest.mark.parametrize("name", NAMES)
def test_double_backward_reaches_input_distributions(name):
    model = make(name).train()  # dropout on, as in the inner loop
    params = [p for p in model.parameters() if p.requires_grad]
    ids, _ = id_batch(seed=4, min_len=3)
    targets = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], dim=1)
    inputs = ids.masked_fill(targets == 0, 0)
    P = torch.softmax(torch.randn(4, 12, V), dim=-1).requires_grad_()

    real_grads = torch.autograd.grad(model.train_loss(inputs, targets), params, allow_unused=True)
    syn_grads = torch.autograd.grad(distribution_loss(model, P), params, create_graph=True, allow_unused=True)
    # First-order change of the real loss after one inner SGD step on P: a second-order quantity in P.
    match = sum((g * r).sum() for g, r in zip(syn_grads, real_grads) if g is not None and r is not None)
    (grad_P,) = torch.autograd.grad(match, P)
    assert torch.isfinite(grad_P).all()
    assert grad_P.abs().max() > 0


class NextFeatures(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, lengths):
        return self.model.next_features(x, lengths)


@pytest.mark.parametrize("name", NAMES)
def test_unrolled_step_with_higher_matches_functional_call(name):
    """One differentiable SGD step on P, then the real loss: both inner-loop backends agree."""
    higher = pytest.importorskip("higher")
    model = make(name, **NO_DROPOUT[name]).eval()  # no dropout: both runs see the same function
    ids, lengths = id_batch(seed=8, min_len=2)
    truth = ids.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
    P = torch.softmax(torch.randn(4, 12, V, generator=torch.Generator().manual_seed(9)), -1)

    def real_loss(h_next, table):  # next-item CE from features, logits written out
        return F.cross_entropy(h_next @ table[1:].T, truth - 1)

    meta_grads = []
    for backend in ("func", "higher"):
        P_leaf = P.clone().requires_grad_()
        torch.manual_seed(0)  # same BERT4Rec cloze draw in both runs
        if backend == "func":
            names = [n for n, _ in model.named_parameters()]
            params = list(model.parameters())
            grads = torch.autograd.grad(distribution_loss(model, P_leaf), params, create_graph=True)
            stepped = {n: p - 0.5 * g for n, p, g in zip(names, params, grads)}
            wrapper = NextFeatures(model)  # functional_call runs forward: route it to next_features
            h_next = torch.func.functional_call(
                wrapper, {f"model.{n}": p for n, p in stepped.items()}, (ids, lengths))
            loss = real_loss(h_next, stepped["item_embedding.weight"])
        else:
            optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
            with higher.innerloop_ctx(model, optimiser, copy_initial_weights=False) as (fmodel, diffopt):
                diffopt.step(distribution_loss(fmodel, P_leaf))
                loss = real_loss(fmodel.next_features(ids, lengths), fmodel.item_embedding.weight)
        (g,) = torch.autograd.grad(loss, P_leaf)
        meta_grads.append(g)
    assert meta_grads[0].abs().max() > 0
    torch.testing.assert_close(meta_grads[0], meta_grads[1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_and_gradgradcheck_float64(name):
    tiny = dict(max_len=5, hidden_size=8, **NO_DROPOUT[name])
    if name in ("sasrec", "bert4rec"):
        tiny.update(inner_size=16)
    if name == "bert4rec":
        tiny.update(num_heads=2)
    torch.manual_seed(0)
    model = build_model(name, 6, **tiny).double().eval()
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    P = torch.softmax(torch.randn(2, 5, 6, dtype=torch.float64), -1).requires_grad_()

    def scores(P, *params):
        h = torch.func.functional_call(model, dict(zip(names, params)), (P,))  # (2, 5, 8)
        table = params[names.index("item_embedding.weight")]
        return h @ table[1:].T  # (2, 5, 6), logits without the -inf padding column

    assert gradcheck(scores, (P,) + params, fast_mode=True)
    assert gradgradcheck(scores, (P,) + params, fast_mode=True)
    def scores_of_P(P):
        return scores(P, *params)

    assert gradcheck(scores_of_P, (P,), eps=1e-6, atol=1e-5)  # exact mode w.r.t. the distribution
    assert gradgradcheck(scores_of_P, (P,), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------- overfitting
def cyclic_dataset(num_items=12, n=20, L=8, seed=5):
    """Item i is always followed by i % num_items + 1; sequences of length 3..L."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(1, num_items + 1, (n, 1), generator=g)
    seqs = (starts - 1 + torch.arange(L)) % num_items + 1  # (n, L)
    lengths = torch.randint(3, L + 1, (n,), generator=g)
    seqs[torch.arange(L) >= lengths.unsqueeze(1)] = 0
    inputs = seqs[:, :-1].clone()
    targets = seqs[:, 1:].clone()
    inputs[targets == 0] = 0
    return inputs, targets, lengths - 1  # lengths of the inputs


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_tiny_dataset(name):
    num_items = 12
    inputs, targets, lengths = cyclic_dataset(num_items)
    truth = targets.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # the item after each sequence
    model = make(name, num_items=num_items, max_len=8, **NO_DROPOUT[name])
    with torch.no_grad():
        next_ce_before = F.cross_entropy(model.eval().score_next(inputs, lengths), truth).item()
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    losses = []
    for _ in range(200):
        loss = model.train_loss(inputs, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        scores = model.score_next(inputs, lengths)
    next_ce_after = F.cross_entropy(scores, truth).item()
    # Causal models' next-item loss collapses (observed factor > 800). BERT4Rec's cloze loss is
    # drawn afresh each step and interior masked items are harder to fit: after 200 steps it
    # is down by a factor of ~6-7, while its next-item loss is down by 20-80.
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / (4 if name == "bert4rec" else 100), (first, last)
    assert next_ce_after < next_ce_before / 10, (next_ce_before, next_ce_after)
    assert (scores.argmax(-1) == truth).float().mean() >= 0.95


# ---------------------------------------------------------------- BERT4Rec
def test_bert4rec_next_features_places_mask_after_the_sequence():
    model = make("bert4rec", max_len=8).eval()
    M = model.mask_id
    x = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12],  # full: drops its first item
                      [3, 4, 0, 0, 0, 0, 0, 0]])
    lengths = torch.tensor([8, 2])
    with torch.no_grad():
        got = model.next_features(x, lengths)
        full = model(torch.tensor([[6, 7, 8, 9, 10, 11, 12, M]]))[0, 7]
        short = model(torch.tensor([[3, 4, M, 0, 0, 0, 0, 0]]))[0, 2]
        torch.testing.assert_close(got, torch.stack([full, short]), atol=1e-6, rtol=0)
        # whatever sits at or after `lengths` cannot leak into the prediction
        garbage = x.clone()
        garbage[1, 2:] = torch.arange(20, 26)
        torch.testing.assert_close(model.next_features(garbage, lengths), got, atol=1e-6, rtol=0)
        # shorter tensors (room for the mask without dropping anything) agree
        torch.testing.assert_close(model.next_features(x[1:, :2], lengths[1:]), got[1:], atol=1e-6, rtol=0)
        # distributions take the same route
        torch.testing.assert_close(model.next_features(one_hot(x), lengths), got, atol=1e-6, rtol=0)


def test_bert4rec_cloze_mask_draw():
    model = make("bert4rec", mask_ratio=0.2, ft_ratio=0.0)
    real = torch.arange(10) < torch.randint(0, 11, (500, 1))
    torch.manual_seed(0)
    masked = model.draw_cloze_mask(real)
    assert not (masked & ~real).any()
    assert (masked.any(1) == real.any(1)).all()  # at least one per non-empty sequence
    rate = masked.sum() / real.sum()
    assert 0.15 < rate < 0.3
    model.ft_ratio = 1.0
    masked = model.draw_cloze_mask(real)
    last = torch.arange(10) == (real.sum(1, keepdim=True) - 1)
    assert torch.equal(masked, last & real)


def test_bert4rec_soft_cloze_on_one_hot_equals_cloze_cross_entropy():
    model = make("bert4rec").eval()
    ids, _ = id_batch(seed=6)
    torch.manual_seed(0)
    masked = model.draw_cloze_mask(ids != 0)
    with torch.no_grad():
        h = model(ids, masked=masked)
        ce = F.cross_entropy(model.logits(h[masked]), ids[masked])
        for padding_column in (True, False):
            kl = model.soft_cloze_loss(one_hot(ids, padding_column=padding_column), mask=ids != 0, masked=masked)
            torch.testing.assert_close(kl, ce, atol=1e-5, rtol=0)
    # masked inputs are hidden: changing them does not change the loss
    P = torch.softmax(torch.randn(*ids.shape, V), -1)
    Q = P.clone()
    Q[masked] = torch.softmax(torch.randn(int(masked.sum()), V), -1)
    with torch.no_grad():
        h_P = model(P, mask=ids != 0, masked=masked)
        h_Q = model(Q, mask=ids != 0, masked=masked)
    torch.testing.assert_close(h_P, h_Q)


def test_bert4rec_train_loss_predicts_the_appended_target():
    # ft_ratio=1: only the last item of inputs+target is masked, i.e. the next-item target.
    model = make("bert4rec", ft_ratio=1.0, **NO_DROPOUT["bert4rec"]).eval()
    ids, lengths = id_batch(seed=7, L=11)
    target = torch.randint(1, V + 1, (ids.shape[0],))
    targets = torch.zeros_like(ids)
    targets[torch.arange(len(ids)), lengths - 1] = target
    with torch.no_grad():
        expected = F.cross_entropy(model.score_next(ids, lengths), target)
        torch.testing.assert_close(model.train_loss(ids, targets), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------- build_model
def test_registry_builds_every_model():
    assert set(MODELS) == set(NAMES)
    for name in NAMES:
        model = build_model(name, 10)
        assert isinstance(model, MODELS[name])
        assert model.item_embedding.num_embeddings == 11
    assert build_model("GRU4Rec", 10, hidden_size=32, embedding_size=8).item_embedding.embedding_dim == 8


@pytest.mark.parametrize("name, kwargs, message", [
    ("transformer", {}, "known models: bert4rec, gru4rec, narm, sasrec"),
    ("bert4rec", dict(hidden_size=30, num_heads=4), "not divisible"),
    ("sasrec", dict(hidden_size=10, num_heads=3), "not divisible"),
    ("gru4rec", dict(hidden_size=0), "hidden_size must be a positive integer"),
    ("narm", dict(num_layers=-1), "num_layers must be a positive integer"),
    ("sasrec", dict(max_len=2.5), "max_len must be a positive integer"),
    ("narm", dict(ct_dropout=1.5), "ct_dropout must lie in"),
    ("bert4rec", dict(mask_ratio=0.0), "mask_ratio must lie in"),
    ("gru4rec", dict(num_heads=2), "unknown option"),
])
def test_build_model_refuses_impossible_configs(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, 10, **kwargs)
    with pytest.raises(ConfigError, match="num_items"):
        build_model("sasrec", 0)


# ------------------------------------------------ chunked linear cross-entropy
@pytest.mark.parametrize("chunk_scores", [1, 7 * 30, 10**9])  # a row per chunk, a ragged last chunk, one chunk
def test_linear_cross_entropy_equals_cross_entropy_of_the_scores(chunk_scores):
    from td3.models.linear_ce import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    h = torch.randn(23, 8, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(30, 8, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 30, (23,), generator=g)
    ref = F.cross_entropy(h @ table.T, target)
    ref_h, ref_t = torch.autograd.grad(3.0 * ref, (h, table))
    out = linear_cross_entropy(h, table, target, chunk_scores=chunk_scores)
    got_h, got_t = torch.autograd.grad(3.0 * out, (h, table))  # the incoming gradient scales both
    assert out.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(got_h, ref_h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_t, ref_t, rtol=1e-10, atol=1e-12)


def test_linear_cross_entropy_without_grad_and_first_order_only():
    from td3.models.linear_ce import linear_cross_entropy

    h = torch.randn(5, 4, requires_grad=True)
    table = torch.randn(9, 4)  # a frozen table: no gradient computed for it
    target = torch.tensor([0, 8, 3, 3, 1])
    with torch.no_grad():
        assert linear_cross_entropy(h, table, target).item() == pytest.approx(
            F.cross_entropy(h @ table.T, target).item(), rel=1e-6)
    loss = linear_cross_entropy(h, table, target)
    (grad,) = torch.autograd.grad(loss, h, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(grad.sum(), h)
    with pytest.raises(ValueError, match="no rows"):
        linear_cross_entropy(h[:0], table, target[:0])


@pytest.mark.parametrize("name", CAUSAL)
def test_train_loss_equals_cross_entropy_of_logits(name):
    """train_loss uses the chunked form; its value and gradients are the plain form's."""
    model = make(name, **NO_DROPOUT[name])
    x, _ = id_batch()
    y = torch.where(x != 0, (x % V) + 1, torch.zeros_like(x))
    params = list(model.parameters())
    loss = model.train_loss(x, y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    keep = y != 0
    ref = F.cross_entropy(model.logits(model(x)[keep]), y[keep])
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(grads, ref_grads):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
