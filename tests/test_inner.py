"""The differentiable inner loop (td3.inner) and the inner loss (td3.losses).

- the two backends (``func`` and ``higher``) compute the same meta-gradient (float64);
- RaT-BPTT: the first M − W steps carry no graph, the last W do;
- the functional Adam is torch's Adam up to the placement of ε; ``_safe_sqrt``;
- ``summary_loss``: last-position soft cross-entropy, ALT's second term equals a separate
  pass over the prefix (causal learners), BERT4Rec gets its soft cloze loss;
- impossible inner-loop settings are ConfigErrors.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from td3.errors import ConfigError
from td3.config import Inner
from td3.inner import EMBEDDING, FunctionalOptimizer, InnerLoop, _safe_sqrt, step_rows
from td3.losses import summary_loss
from td3.models import BERT4Rec, GRU4Rec, SASRec
from td3.models.base import Embedded

NUM_ITEMS, MAX_LEN, HIDDEN = 40, 8, 8
MU, ZETA = 6, 8          # the learner reads ζ-1 = 7 positions <= max_len
REAL_B = 5               # real sequences in the outer batch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add contention on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def inner_settings(frozen_embedding: bool = False, **kw) -> Inner:
    """``distill.inner`` at conf/distill/default.yaml's values, with ``kw`` changed."""
    values = dict(lr=0.005, weight_decay=5e-5, optimizer="adam", batch_size=15, alt=True, alt_low=5,
                  embedding="frozen" if frozen_embedding else "trainable", dropout=True, backend="func")
    return Inner(**{**values, **kw})


def make_model(kind: str = "sasrec", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "sasrec":
        model = SASRec(NUM_ITEMS, max_len=MAX_LEN, hidden_size=HIDDEN, num_layers=1, num_heads=2,
                       inner_size=16, hidden_dropout=0.0, attn_dropout=0.0, init_std=0.3)
    elif kind == "gru4rec":
        model = GRU4Rec(NUM_ITEMS, max_len=MAX_LEN, hidden_size=HIDDEN, dropout=0.0)
    elif kind == "bert4rec":
        model = BERT4Rec(NUM_ITEMS, max_len=MAX_LEN, hidden_size=HIDDEN, num_layers=1, num_heads=2,
                         inner_size=16, hidden_dropout=0.0, attn_dropout=0.0, init_std=0.3)
    else:
        raise ValueError(kind)
    return model


def make_problem(seed: int = 0):
    """Summary logits (μ, ζ, |V|) requiring grad, and a fixed real batch (ids, next ids)."""
    g = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(MU, ZETA, NUM_ITEMS, generator=g)).requires_grad_(True)
    x = torch.randint(1, NUM_ITEMS + 1, (REAL_B, MAX_LEN), generator=g)
    y = torch.randint(1, NUM_ITEMS + 1, (REAL_B, MAX_LEN), generator=g)
    x[0, 5:] = 0  # one padded sequence: no targets there
    y[0, 4:] = 0
    return logits, x, y


def init_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A pool-checkpoint-like init: detached copies, slightly perturbed from the model's own."""
    g = torch.Generator().manual_seed(123)
    return {n: (p.detach() + 0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype)).clone()
            for n, p in model.named_parameters()}


class OuterCE(nn.Module):
    """Next-item cross-entropy of the learner on a real batch (the outer loss's CE part)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        h = self.model(x)
        keep = y != 0
        return F.cross_entropy(self.model.logits(h[keep]), y[keep])


def outer_loss(model, params, x, y):
    return functional_call(OuterCE(model), {f"model.{k}": v for k, v in params.items()}, (x, y))


def meta_gradient(model, cfg: Inner, logits, x, y, *, steps=12, window=5, seed=7):
    init = init_of(model)
    S = logits.softmax(-1)
    params = InnerLoop(model, cfg).run(S, init, steps=steps, window=window,
                                       generator=torch.Generator().manual_seed(seed))
    loss = outer_loss(model, params, x, y)
    (grad,) = torch.autograd.grad(loss, logits)
    return grad, loss.detach(), {k: v.detach() for k, v in params.items()}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --------------------------------------------------- 1. backends agree (float64)
CASES = [(opt, emb, alt) for opt in ("adam", "sgd") for emb in ("trainable", "frozen") for alt in (True, False)]


@pytest.mark.parametrize("kind, optimizer, embedding, alt",
                         [("sasrec", *c) for c in CASES] + [("gru4rec", "adam", "trainable", True)])
def test_func_and_higher_meta_gradients_agree(float64, kind, optimizer, embedding, alt):
    pytest.importorskip("higher")
    logits, x, y = make_problem()
    grads, losses, finals = {}, {}, {}
    for backend in ("func", "higher"):
        model = make_model(kind)
        assert next(model.parameters()).dtype == torch.float64
        cfg = inner_settings(lr=0.05, weight_decay=1e-3, optimizer=optimizer,
                          momentum=0.9 if optimizer == "sgd" else 0.0, batch_size=4, alt=alt, alt_low=2,
                          frozen_embedding=embedding == "frozen", backend=backend)
        grads[backend], losses[backend], finals[backend] = meta_gradient(model, cfg, logits, x, y)

    g_func, g_higher = grads["func"], grads["higher"]
    assert g_func.dtype == torch.float64
    assert g_func.norm() > 1e-6, "the meta-gradient should not vanish"
    assert torch.isfinite(g_func).all()
    assert rel(g_higher, g_func) <= 1e-8, rel(g_higher, g_func)
    assert abs(float(losses["higher"] - losses["func"])) <= 1e-10 * abs(float(losses["func"]))
    assert set(finals["func"]) == set(finals["higher"]) == {n for n, _ in make_model(kind).named_parameters()}
    for name, value in finals["func"].items():
        assert torch.allclose(finals["higher"][name], value, rtol=1e-10, atol=1e-12), name
    init = init_of(make_model(kind))
    if embedding == "frozen":  # the item table never moves inside the loop
        assert torch.equal(finals["func"][EMBEDDING], init[EMBEDDING])
        assert torch.equal(finals["higher"][EMBEDDING], init[EMBEDDING])
    else:
        assert not torch.allclose(finals["func"][EMBEDDING], init[EMBEDDING])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_backends_agree_when_the_window_holds_the_first_inner_step(float64, optimizer):
    """M = W: every step is differentiated, Adam's first (sqrt of a fresh second moment) too."""
    pytest.importorskip("higher")
    logits, x, y = make_problem()
    grads = {}
    for backend in ("func", "higher"):
        cfg = inner_settings(lr=0.05, weight_decay=1e-3, optimizer=optimizer, batch_size=4, alt=True, alt_low=2,
                          frozen_embedding=True, backend=backend)
        grads[backend] = meta_gradient(make_model("sasrec"), cfg, logits, x, y, steps=5, window=5)[0]
    assert grads["func"].norm() > 1e-6 and rel(grads["higher"], grads["func"]) <= 1e-8


# --------------------------------------------------------- 2. RaT-BPTT truncation
def base_cfg(**kw) -> Inner:
    return inner_settings(**{**dict(lr=0.05, weight_decay=1e-3, batch_size=4, alt=True, alt_low=2), **kw})


@pytest.mark.parametrize("backend", ["func", "higher"])
def test_window_zero_gives_no_path_to_the_summary(float64, backend):
    if backend == "higher":
        pytest.importorskip("higher")
    model = make_model()
    logits, x, y = make_problem()
    params = InnerLoop(model, base_cfg(backend=backend)).run(
        logits.softmax(-1), init_of(model), steps=6, window=0, generator=torch.Generator().manual_seed(0))
    loss = outer_loss(model, params, x, y)
    if loss.requires_grad:  # higher hands back leaf copies: no path to S in any case
        (grad,) = torch.autograd.grad(loss, logits, allow_unused=True)
        assert grad is None
    else:
        assert all(p.grad_fn is None for p in params.values())
        with pytest.raises(RuntimeError):
            torch.autograd.grad(loss, logits)
    # ...and the parameters did move: M = 6 steps were taken without a graph.
    moved = InnerLoop(model, base_cfg()).run(logits.softmax(-1), init_of(model), steps=0, window=0,
                                             generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(params[EMBEDDING], moved[EMBEDDING])


def test_window_gives_a_gradient(float64):
    model = make_model()
    logits, x, y = make_problem()
    for window in (1, 3):
        grad, _, _ = meta_gradient(model, base_cfg(), logits, x, y, steps=6, window=window)
        assert grad.norm() > 1e-6 and torch.isfinite(grad).all()


class SummaryObjective(nn.Module):
    """Independent of td3.inner: the inner loss as a module, for functional_call."""

    def __init__(self, model, cfg):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, S, generator):
        return summary_loss(self.model, S, self.cfg.alt, self.cfg.alt_low, generator)


def reference_truncated(model, cfg, S, init, steps, window, seed):
    """M − W steps on S.detach() without a graph, then W steps with one (hand-written)."""
    g = torch.Generator().manual_seed(seed)
    rows = InnerLoop.batches(S.shape[0], cfg.batch_size, steps, g)
    objective = SummaryObjective(model, cfg)
    params = {n: t.detach().clone() for n, t in init.items()}
    opt = FunctionalOptimizer(cfg, params)

    def loss_at(p, S_, r):
        return functional_call(objective, {f"model.{k}": v for k, v in p.items()}, (S_[r], g))

    for i in range(steps - window):
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        grads = torch.autograd.grad(loss_at(p, S.detach(), rows[i]), list(p.values()))
        with torch.no_grad():
            params = opt.step(p, dict(zip(p, grads)))
    opt.detach_()
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    for i in range(steps - window, steps):
        grads = torch.autograd.grad(loss_at(params, S, rows[i]), list(params.values()), create_graph=True)
        params = opt.step(params, dict(zip(params, grads)))
    return params


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_first_steps_are_graph_free(float64, optimizer):
    model = make_model()
    logits, x, y = make_problem()
    cfg = base_cfg(optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0)
    M, W, seed = 10, 4, 3

    grad, loss, _ = meta_gradient(model, cfg, logits, x, y, steps=M, window=W, seed=seed)
    ref_params = reference_truncated(model, cfg, logits.softmax(-1), init_of(model), M, W, seed)
    ref_loss = outer_loss(model, ref_params, x, y)
    (ref_grad,) = torch.autograd.grad(ref_loss, logits)
    assert float(loss) == pytest.approx(float(ref_loss.detach()), rel=1e-13)
    assert rel(grad, ref_grad) <= 1e-12, rel(grad, ref_grad)

    # Truncation matters: differentiating all M steps gives another gradient (same loss).
    full, full_loss, _ = meta_gradient(model, cfg, logits, x, y, steps=M, window=M, seed=seed)
    assert float(full_loss) == pytest.approx(float(loss), rel=1e-12)
    assert rel(full, grad) > 1e-3


def test_batches_are_seeded_permutation_chunks():
    rows = InnerLoop.batches(7, 3, 6, torch.Generator().manual_seed(0))
    assert [len(r) for r in rows] == [3] * 6
    flat = torch.cat(rows)
    assert sorted(flat[:7].tolist()) == list(range(7))    # first 7 draws: one permutation
    assert sorted(flat[7:14].tolist()) == list(range(7))  # next 7: another one
    again = InnerLoop.batches(7, 3, 6, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(rows, again))


# ------------------------------------------------------- 3. the functional optimiser
def quadratic(p, a, c):
    return 0.5 * (a * (p - c) ** 2).sum()


def side_by_side(opt, torch_optimizer, a, c, start, steps):
    """Our FunctionalOptimizer ``opt`` and ``torch_optimizer(param)`` minimising the same
    quadratic from ``start``: yields (ours, torch's) parameters after each step."""
    p_ref = start.clone().requires_grad_(True)
    torch_opt = torch_optimizer(p_ref)
    params = {"p": start.clone()}
    for _ in range(steps):
        torch_opt.zero_grad()
        quadratic(p_ref, a, c).backward()
        torch_opt.step()
        q = params["p"].requires_grad_(True)
        (grad,) = torch.autograd.grad(quadratic(q, a, c), q)
        with torch.no_grad():
            params = opt.step({"p": q}, {"p": grad})
        yield params["p"], p_ref.detach()


@pytest.mark.parametrize("width", [ZETA - 1, ZETA])
def test_step_rows_backward_is_w_separate_gathers_to_the_bit(width):
    """``step_rows`` (the window's inputs, gathered at once) gives S the gradient that W
    separate gathers ``S[r, :width]`` give it, bit for bit in float32 (where a sum taken in
    another order differs), rows drawn twice in a step and across steps included, and
    with the targets' gather, made before, reaching S after them as in the inner loop."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(MU, ZETA, NUM_ITEMS, generator=g)
    rows = InnerLoop.batches(MU, 4, 9, g)  # chunks of permutations of 6 rows: repeats in a step
    assert any(len(set(r.tolist())) < len(r) for r in rows)
    upstream = [torch.randn(len(r), width, NUM_ITEMS, generator=g) for r in rows]
    seq, pos = torch.randint(MU, (20,), generator=g), torch.randint(ZETA, (20,), generator=g)
    weights = torch.randn(20, NUM_ITEMS, generator=g)

    def gradient(gather):
        S = base.clone().requires_grad_(True)
        targets = S[seq, pos]
        inputs = gather(S)
        loss = (targets * weights).sum() + sum((x * u).sum() for x, u in zip(inputs, upstream))
        (grad,) = torch.autograd.grad(loss, S)
        return inputs, grad

    separate, expected = gradient(lambda S: [S[r, :width] for r in rows])
    together, grad = gradient(lambda S: step_rows(S, rows, width))
    assert all(torch.equal(a, b) for a, b in zip(together, separate))
    assert torch.equal(grad, expected)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("eps, close", [(1e-12, True), (1e-1, False)])
def test_functional_adam_follows_torch_adam(float64, eps, close):
    g = torch.Generator().manual_seed(0)
    a, c = torch.rand(20, generator=g) * 5 + 0.1, torch.randn(20, generator=g)
    start = torch.randn(20, generator=g)
    cfg = inner_settings(lr=0.05, weight_decay=0.01, eps=eps, betas=(0.9, 0.99))

    def adam(p):
        return torch.optim.Adam([p], lr=cfg.lr, betas=cfg.betas, eps=eps, weight_decay=cfg.weight_decay)
    opt = FunctionalOptimizer(cfg, {"p": start.clone()})
    worst = 0.0
    for ours, theirs in side_by_side(opt, adam, a, c, start, steps=100):
        worst = max(worst, float((ours - theirs).abs().max()))
        params = {"p": ours}
    assert opt.t == 100
    if close:
        assert worst < 1e-9, worst
    else:  # ε inside vs outside the bias correction: visibly different trajectories
        assert worst > 1e-4, worst
    # Both converge towards the minimiser of the decayed quadratic.
    target = a * c / (a + cfg.weight_decay)
    assert (params["p"] - target).abs().max() < (start - target).abs().max()


def test_functional_sgd_with_momentum_is_torch_sgd(float64):
    g = torch.Generator().manual_seed(1)
    a, c, start = torch.rand(10, generator=g) + 0.5, torch.randn(10, generator=g), torch.randn(10, generator=g)
    cfg = inner_settings(lr=0.1, weight_decay=0.01, optimizer="sgd", momentum=0.9)
    def sgd(p):
        return torch.optim.SGD([p], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt = FunctionalOptimizer(cfg, {"p": start.clone()})
    steps = 0
    for ours, theirs in side_by_side(opt, sgd, a, c, start, steps=30):
        assert torch.allclose(ours, theirs, rtol=1e-13, atol=1e-14)
        steps += 1
    assert steps == 30


def test_safe_sqrt_values_and_gradient(float64):
    v = torch.tensor([0.0, 4.0, 0.25, 0.0, 1e-6], requires_grad=True)
    out = _safe_sqrt(v)
    assert torch.equal(out.detach(), torch.tensor([0.0, 2.0, 0.5, 0.0, 1e-3]))
    (grad,) = torch.autograd.grad(out.sum(), v)
    assert torch.isfinite(grad).all()
    expected = torch.tensor([0.0, 0.25, 1.0, 0.0, 0.5 / 1e-3])  # 1/(2√v), 0 at v = 0
    assert torch.allclose(grad, expected, rtol=1e-12, atol=0)
    # plain sqrt has an infinite derivative at 0: the reason for the helper
    (naive,) = torch.autograd.grad(v.sqrt().sum(), v)
    assert torch.isinf(naive[0])


def test_adam_step_with_a_zero_gradient_coordinate_has_a_finite_meta_gradient(float64):
    """A coordinate whose gradient is exactly 0 (v = 0) must not poison the meta-gradient."""
    cfg = inner_settings(lr=0.1, weight_decay=0.0)
    s = torch.tensor([1.5], requires_grad=True)
    p = torch.tensor([0.3, -0.2], requires_grad=True)
    opt = FunctionalOptimizer(cfg, {"p": p})
    loss = (s * p[0]) ** 2  # p[1] gets a zero gradient
    (g,) = torch.autograd.grad(loss, p, create_graph=True)
    assert g[1] == 0
    new = opt.step({"p": p}, {"p": g})["p"]
    (meta,) = torch.autograd.grad(new.sum(), s)
    assert torch.isfinite(meta).all()


# ------------------------------------------------------------- 4. summary_loss
def soft_ce(model, features, target):
    """Hand-written: −Σ_c target_c log softmax(h·E_realᵀ)_c, mean over rows."""
    scores = features @ model.item_embedding.weight[1:].T  # (n, V): real items only
    return -(target * scores.log_softmax(-1)).sum(-1).mean()


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_summary_loss_with_alt_is_the_mean_of_two_soft_cross_entropies(float64, kind):
    model = make_model(kind).eval().requires_grad_(False)
    logits, _, _ = make_problem(seed=4)
    S = logits.detach().softmax(-1)
    B, alt_low = S.shape[0], 2

    loss = summary_loss(model, S, alt=True, alt_low=alt_low, generator=torch.Generator().manual_seed(11))
    p = torch.randint(alt_low, ZETA - 1, (B,), generator=torch.Generator().manual_seed(11))
    assert len(set(p.tolist())) > 1, "pick a seed drawing several positions"

    last = soft_ce(model, model(S[:, :-1])[:, ZETA - 2], S[:, ZETA - 1])
    # ALT's target S[b, p] predicted from the prefix before p, by a separate forward pass.
    prefix_features = torch.stack([model(S[b:b + 1, :p[b]])[0, -1] for b in range(B)])
    alt_term = soft_ce(model, prefix_features, S[torch.arange(B), p])
    assert float(loss) == pytest.approx(float((last + alt_term) / 2), rel=1e-12)
    assert float(last) != pytest.approx(float(alt_term), rel=1e-3)  # the two terms differ

    # Without ALT: the last-position term alone, and no draw from the generator.
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    plain = summary_loss(model, S, alt=False, generator=g)
    assert float(plain) == pytest.approx(float(last), rel=1e-12)
    assert torch.equal(g.get_state(), state)

    # Precomputed inputs (frozen item table) give the same loss.
    E = model.item_embedding.weight
    pre = summary_loss(model, S, alt=True, alt_low=alt_low, generator=torch.Generator().manual_seed(11),
                       inputs=Embedded(S[:, :-1] @ E[1:]))
    assert float(pre) == pytest.approx(float(loss), rel=1e-12)


def test_summary_loss_dispatches_bert4rec_to_soft_cloze(float64):
    torch.manual_seed(0)
    model = BERT4Rec(NUM_ITEMS, max_len=ZETA, hidden_size=HIDDEN, num_layers=1, num_heads=2, inner_size=16,
                     hidden_dropout=0.0, attn_dropout=0.0).eval().requires_grad_(False)
    S = make_problem(seed=5)[0].detach().softmax(-1)
    torch.manual_seed(42)  # the cloze mask comes from the global RNG
    loss = summary_loss(model, S, alt=True, alt_low=2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(42)
    expected = model.soft_cloze_loss(S)
    assert float(loss) == float(expected)
    # Not the causal last-position loss:
    last = soft_ce(model, model(S[:, :-1])[:, ZETA - 2], S[:, ZETA - 1])
    assert float(loss) != pytest.approx(float(last), rel=1e-3)


def test_bert4rec_prefix_loss_predicts_each_target_from_a_mask_after_its_prefix(float64):
    """bidirectional_loss="prefix": the last position and ALT's, each from a [MASK] placed
    right after its prefix (a separate, hand-built pass per target here), and nothing at or
    after a target reaches its prediction."""
    torch.manual_seed(0)
    model = BERT4Rec(NUM_ITEMS, max_len=ZETA, hidden_size=HIDDEN, num_layers=1, num_heads=2, inner_size=16,
                     hidden_dropout=0.0, attn_dropout=0.0).eval().requires_grad_(False)
    S = make_problem(seed=5)[0].detach().softmax(-1)
    B, alt_low = S.shape[0], 2
    loss = summary_loss(model, S, alt=True, alt_low=alt_low, generator=torch.Generator().manual_seed(11),
                        bidirectional_loss="prefix")
    p = torch.randint(alt_low, ZETA - 1, (B,), generator=torch.Generator().manual_seed(11))
    assert len(set(p.tolist())) > 1, "pick a seed drawing several positions"

    def after_prefix(b: int, t: int) -> torch.Tensor:  # [MASK] at t after S[b, :t], nothing else
        x = torch.cat([S[b:b + 1, :t], torch.zeros(1, 1, NUM_ITEMS, dtype=S.dtype)], dim=1)
        masked = torch.zeros(1, t + 1, dtype=torch.bool)
        masked[0, t] = True
        return model(x, mask=torch.ones(1, t + 1, dtype=torch.bool), masked=masked)[0, t]

    last = soft_ce(model, torch.stack([after_prefix(b, ZETA - 1) for b in range(B)]), S[:, ZETA - 1])
    alt_term = soft_ce(model, torch.stack([after_prefix(b, int(p[b])) for b in range(B)]),
                       S[torch.arange(B), p])
    assert float(loss) == pytest.approx(float((last + alt_term) / 2), rel=1e-10)
    torch.manual_seed(42)  # the cloze mask comes from the global RNG
    cloze = summary_loss(model, S, alt=True, alt_low=alt_low, generator=torch.Generator().manual_seed(11))
    assert float(cloze) != pytest.approx(float(loss), rel=1e-3)  # "cloze" stays the cloze
    # Precomputed inputs (frozen item table) give the same loss, and the cloze ignores them.
    pre = Embedded(S[:, :-1] @ model.item_embedding.weight[1:])
    assert float(summary_loss(model, S, alt=True, alt_low=alt_low, generator=torch.Generator().manual_seed(11),
                              inputs=pre, bidirectional_loss="prefix")) == pytest.approx(float(loss), rel=1e-12)
    torch.manual_seed(42)
    assert float(summary_loss(model, S, alt=True, alt_low=alt_low, generator=torch.Generator().manual_seed(11),
                              inputs=pre)) == float(cloze)

    # No leak: S[:, ζ-1] enters the loss without ALT as the target only (its gradient is
    # −log q / B), and a prefix of 3 reads nothing from position 3 on.
    x = S.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(summary_loss(model, x, alt=False, bidirectional_loss="prefix"), x)
    log_q = model.logits(model.next_features(S[:, :-1], torch.full((B,), ZETA - 1)))[:, 1:].log_softmax(-1)
    assert torch.allclose(grad[:, ZETA - 1], -log_q / B, rtol=1e-10, atol=1e-12)
    assert grad[:, : ZETA - 1].abs().sum() > 0  # the prefix is read
    (prefix_grad,) = torch.autograd.grad(model.next_features(x[:, : ZETA - 1], torch.full((B,), 3)).sum(), x)
    assert prefix_grad[:, :3].abs().sum() > 0 and prefix_grad[:, 3:].abs().sum() == 0


@pytest.mark.parametrize("bidirectional_loss, frozen", [("cloze", False), ("prefix", False), ("prefix", True)])
def test_func_and_higher_agree_on_bert4rec(float64, bidirectional_loss, frozen):
    """Also with the frozen item table, where the prefix loss reads the summary's embedding
    computed once per outer step (``InnerLoop.inputs``), as the causal learners do."""
    pytest.importorskip("higher")
    logits, x, y = make_problem()
    grads = {}
    for backend in ("func", "higher"):
        model = make_model("bert4rec")
        cfg = inner_settings(frozen, lr=0.05, batch_size=4, alt_low=2, backend=backend,
                             bidirectional_loss=bidirectional_loss)
        if frozen:
            assert isinstance(InnerLoop(model, cfg).inputs(logits.softmax(-1), model.item_embedding.weight), Embedded)
        torch.manual_seed(3)  # the cloze's masks come from the global RNG
        grads[backend] = meta_gradient(model, cfg, logits, x, y)[0]
    assert grads["func"].norm() > 1e-6 and torch.isfinite(grads["func"]).all()
    assert rel(grads["higher"], grads["func"]) <= 1e-8


# ------------------------------------------------------------ 5. config errors
def test_window_outside_zero_to_steps_is_a_config_error():
    model = make_model()
    loop = InnerLoop(model, base_cfg())
    S = torch.full((MU, ZETA, NUM_ITEMS), 1.0 / NUM_ITEMS)
    init = {n: p.detach() for n, p in model.named_parameters()}
    for steps, window in ((5, 6), (5, -1)):
        with pytest.raises(ConfigError, match="window"):
            loop.run(S, init, steps=steps, window=window, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(backend="jax"), "backend"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(lr=0.0), "lr"),
    (dict(batch_size=0), "batch_size"),
    (dict(learn_lr=True, backend="higher"), "learn_lr"),
    (dict(learn_lr=True, lr_lr=0.0), "lr_lr"),
    (dict(bidirectional_loss="mlm"), "bidirectional_loss"),
])
def test_bad_inner_config_is_a_config_error(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        InnerLoop(make_model(), inner_settings(**kwargs))


@pytest.mark.parametrize("embedding", ["trainable", "frozen"])
def test_backends_agree_on_a_sampled_item_subset(float64, embedding):
    """distill.sampled_items: S and the learner's scores cover only the step's candidates
    (td3/candidates.py). Both backends compute the same meta-gradient there, and it reaches
    exactly the candidates' columns of the summary."""
    pytest.importorskip("higher")
    from td3.candidates import draw_candidates

    logits, x, y = make_problem()
    x, y = x[:2], y[:2]  # a small real batch, so that the targets leave items to sample
    sampled = draw_candidates(y[y != 0], NUM_ITEMS, 6, torch.Generator().manual_seed(0))
    assert len(sampled.items) < NUM_ITEMS - 10 and sampled.log_weight.max() > 0
    grads = {}
    for backend in ("func", "higher"):
        model = make_model()
        cfg = inner_settings(lr=0.05, weight_decay=1e-3, batch_size=4, alt=True, alt_low=2,
                          frozen_embedding=embedding == "frozen", backend=backend)
        S = (logits[..., sampled.items] + sampled.log_weight).softmax(-1)  # (μ, ζ, k)
        params = InnerLoop(model, cfg).run(S, init_of(model), steps=12, window=5,
                                           generator=torch.Generator().manual_seed(7), candidates=sampled)
        table = params[EMBEDDING][1:][sampled.items]
        h = functional_call(model, params, (x,))
        keep = y != 0
        loss = F.cross_entropy(h[keep] @ table.T + sampled.log_weight, sampled.local(y[keep]))
        (grads[backend],) = torch.autograd.grad(loss, logits)
    g = grads["func"]
    assert rel(grads["higher"], g) <= 1e-8, rel(grads["higher"], g)
    touched = g.abs().sum(dim=(0, 1)) > 0  # (|V|,) columns that receive a meta-gradient
    expected = torch.zeros(NUM_ITEMS, dtype=torch.bool)
    expected[sampled.items] = True
    assert torch.equal(touched, expected)


# ------------------------------------------- a learned inner learning rate (float64)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_learned_inner_lr_gets_the_derivative_of_the_outer_loss(float64, optimizer):
    """distill.inner.learn_lr: η passed as a tensor computes what cfg.lr computes, and the
    meta-gradient w.r.t. η is the outer loss's derivative (central differences), when the
    window holds every step (the first M − W steps use η's value, not its graph)."""
    model = make_model()
    logits, x, y = make_problem()
    cfg = inner_settings(optimizer=optimizer, lr=0.01, dropout=False)
    S = logits.detach().softmax(-1)

    def final(lr, steps=6, window=6):
        return InnerLoop(model, cfg).run(S, init_of(model), steps=steps, window=window,
                                         generator=torch.Generator().manual_seed(3), lr=lr)

    as_config = InnerLoop(model, cfg).run(S, init_of(model), steps=6, window=6, generator=torch.Generator().manual_seed(3))
    as_tensor = final(torch.tensor(0.01))
    assert all(torch.equal(as_config[k].detach(), as_tensor[k].detach()) for k in as_config)

    lr = torch.tensor(0.01, requires_grad=True)
    (grad,) = torch.autograd.grad(outer_loss(model, final(lr), x, y), lr)
    h = 1e-6
    numeric = (outer_loss(model, final(torch.tensor(0.01 + h)), x, y).detach()
               - outer_loss(model, final(torch.tensor(0.01 - h)), x, y).detach()) / (2 * h)
    assert abs(grad.item()) > 1e-3
    assert grad.item() == pytest.approx(numeric.item(), rel=1e-5)

    # a window shorter than M: only its steps carry η's graph, and the others used its value
    lr = torch.tensor(0.01, requires_grad=True)
    partial = final(lr, steps=6, window=2)
    (short,) = torch.autograd.grad(outer_loss(model, partial, x, y), lr)
    assert torch.isfinite(short) and short.item() != pytest.approx(grad.item(), rel=1e-3)
    assert all(torch.equal(partial[k].detach(), final(torch.tensor(0.01), steps=6, window=2)[k].detach())
               for k in partial)
