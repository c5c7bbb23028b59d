"""The learner's training on the summary, differentiable w.r.t. the summary
(docs/method.md, "The inner loop" and "RaT-BPTT").

RaT-BPTT: an outer step runs M ~ U(W, N) inner steps. The first M − W run without a graph
(the summary and the parameters are constants there); the last W are unrolled with
``create_graph=True``, so the outer loss can be backpropagated through them into the
summary. Memory and time scale with W, not M.

Two backends compute the W differentiable steps:
- ``func`` (default): explicit parameter tensors through ``torch.func.functional_call``
  and a functional Adam/SGD written here;
- ``higher``: the ``higher`` package's monkey-patched module and differentiable
  optimisers, which the TD3 authors used.
The functional Adam uses ``higher``'s formula (denominator √v + ε, step
lr·√(1−β₂ᵗ)/(1−β₁ᵗ), no gradient through √v where v = 0), so both backends compute the
same function and their meta-gradients agree to rounding (tests/test_inner.py).

What stays fixed during an inner loop is computed once per outer step by the caller: the
summary S itself, and, when the learner's item table is frozen, its embedding P·E.
"""
from __future__ import annotations

import math
import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call

from .config import Inner
from .errors import ConfigError
from .losses import SummaryBatch, batch_loss, loss_positions, make_batch, trains_on_prefixes
from .models.base import Embedded

EMBEDDING = "item_embedding.weight"


class _Objective(nn.Module):
    """Wraps the learner so that one functional call computes the whole inner loss
    (forward and logits both read the swapped-in parameters)."""

    def __init__(self, model: nn.Module, cfg: Inner):
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, batch: SummaryBatch):
        return batch_loss(self.model, batch, alt_weight=self.cfg.alt_weight)


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """√v with a zero gradient where v == 0 (where √ has an infinite derivative)."""
    zero = v == 0
    return torch.where(zero, torch.zeros_like(v), torch.where(zero, torch.ones_like(v), v).sqrt())


class FunctionalOptimizer:
    """Adam (``higher``'s formula, L2 weight decay) or SGD on a dict of tensors.

    ``step`` is differentiable when the gradients carry a graph. ``step_`` is the same
    arithmetic in place, without a graph, for the first M − W steps of RaT-BPTT. The inner
    loop hands it one flat tensor holding every trained parameter, so a step is a dozen
    tensor operations rather than a dozen per parameter tensor.
    """

    def __init__(self, cfg: Inner, params: dict[str, torch.Tensor], lr: float | torch.Tensor | None = None):
        """lr: η, if not ``cfg.lr``; a tensor that needs grad (a learned η) makes the
        differentiable steps differentiable w.r.t. it too (``step_`` uses its value, read
        once here: not a device sync per graph-free step)."""
        self.cfg = cfg
        self.lr = cfg.lr if lr is None else lr
        self.lr_value = float(self.lr.detach()) if torch.is_tensor(self.lr) else float(self.lr)
        self.t = 0
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()} if cfg.optimizer == "adam" else None

    def detach_(self) -> None:
        """Cut the optimiser state from any graph (the state enters the window as constants)."""
        self.m = {k: m.detach() for k, m in self.m.items()}
        if self.v is not None:
            self.v = {k: v.detach() for k, v in self.v.items()}

    def _step_size(self, lr: float | torch.Tensor) -> float | torch.Tensor:
        b1, b2 = self.cfg.betas
        return lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)

    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        self.t += 1
        out = {}
        if cfg.optimizer == "sgd":
            for k, p in params.items():
                g = grads[k] + cfg.weight_decay * p if cfg.weight_decay else grads[k]
                if cfg.momentum:
                    self.m[k] = g = self.m[k] * cfg.momentum + g
                out[k] = p - self.lr * g
            return out
        b1, b2 = cfg.betas
        step_size = self._step_size(self.lr)
        for k, p in params.items():
            g = grads[k] + cfg.weight_decay * p if cfg.weight_decay else grads[k]
            self.m[k] = m = self.m[k] * b1 + (1 - b1) * g
            self.v[k] = v = self.v[k] * b2 + (1 - b2) * g * g
            out[k] = p - step_size * m / (_safe_sqrt(v) + cfg.eps)
        return out

    @torch.no_grad()
    def step_(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        """``step`` in place, without a graph (√ needs no guard where nothing is differentiated)."""
        cfg = self.cfg
        self.t += 1
        lr = self.lr_value  # nothing is differentiated here
        for k, p in params.items():
            g = grads[k].add(p, alpha=cfg.weight_decay) if cfg.weight_decay else grads[k]
            if cfg.optimizer == "sgd":
                if cfg.momentum:
                    g = self.m[k].mul_(cfg.momentum).add_(g)
                p.add_(g, alpha=-lr)
                continue
            b1, b2 = cfg.betas
            m = self.m[k].mul_(b1).add_(g, alpha=1 - b1)
            v = self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, v.sqrt().add_(cfg.eps), value=-self._step_size(lr))


class StepRows(torch.autograd.Function):
    """``S[r, :width]`` for the row indices r of each of the W differentiable inner steps.

    The values are W plain gathers'. The backward differs in cost only: W gathers would each
    scatter their gradient into a zero tensor of S's size, and autograd would add the W of
    them into S's gradient (passes over (μ, ζ, |V|) per inner step: docs/performance.md,
    "The inner loop's bookkeeping"). Here each step's gradient is summed over its own rows only
    and added into one tensor, in the order autograd adds the W gradients (the last
    step's first) and each with the sums W scatters form (a row drawn twice in a step is
    summed within the step first): the meta-gradient is the same to the last bit
    (tests/test_inner.py). It is differentiated once: the inner gradients are taken
    w.r.t. the learner's parameters, which S's rows do not depend on.
    """

    @staticmethod
    def forward(ctx, S: torch.Tensor, width: int, *rows: torch.Tensor):
        ctx.shape, ctx.width, ctx.rows = S.shape, width, rows
        return tuple(S[r, :width] for r in rows)  # W × (B, width, |V|)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        out = None
        for r, g in reversed(list(zip(ctx.rows, grads))):
            if g is None:
                continue
            if out is None:
                out = g.new_zeros(ctx.shape)
            unique, inverse = torch.unique(r.to(g.device), return_inverse=True)
            summed = g.new_zeros((len(unique), *g.shape[1:])).index_put_((inverse,), g, accumulate=True)
            out[unique, :ctx.width] += summed
        return (out, None, *(None for _ in ctx.rows))


def step_rows(S: torch.Tensor, rows: list[torch.Tensor], width: int) -> tuple[torch.Tensor, ...]:
    """W × (B, width, |V|): ``S[r, :width]`` for each step's rows r (``StepRows``)."""
    return StepRows.apply(S, width, *rows)


class InnerLoop:
    """Trains a learner on a summary for M steps; the last W steps stay differentiable."""

    def __init__(self, model: nn.Module, cfg: Inner):
        cfg.check()
        self.model = model
        self.cfg = cfg
        self.prefixes = trains_on_prefixes(model, cfg.bidirectional_loss)  # else BERT4Rec's cloze
        self.objective = _Objective(model, cfg)
        names = [n for n, _ in model.named_parameters()]
        self.trained = [n for n in names if not (cfg.frozen_embedding and n == EMBEDDING)]

    # ------------------------------------------------------------ batching
    @staticmethod
    def batches(mu: int, batch_size: int, steps: int, generator: torch.Generator,
                fixed: bool = False) -> list[torch.Tensor]:
        """Row indices per step: consecutive chunks of seeded permutations of the μ rows, or
        of 0..μ-1 itself when ``fixed`` (then μ must be a multiple of the batch, so that
        every step sees the same batches: checked by ``td3.config.RunConfig.check``)."""
        out, order = [], torch.empty(0, dtype=torch.long)
        while len(out) < steps:
            if len(order) < batch_size:
                nxt = torch.arange(mu) if fixed else torch.randperm(mu, generator=generator)
                order = torch.cat([order, nxt])
            out.append(order[:batch_size])
            order = order[batch_size:]
        return out

    def inputs(self, S: torch.Tensor, embedding: torch.Tensor | None, candidates=None):
        """What the learner reads: distributions, or their embedding once per outer step when frozen."""
        if self.cfg.frozen_embedding and self.prefixes:  # not the cloze: it masks the rows themselves
            table = embedding[1:] if candidates is None else embedding[1:][candidates.items]
            return Embedded(S[:, :-1] @ table)  # (μ, ζ-1, d)
        return None

    def window_batches(self, S: torch.Tensor, embedded, rows: list[torch.Tensor],
                       generator: torch.Generator, candidates=None) -> list[SummaryBatch]:
        """The W differentiable steps' batches. Their targets are gathered from S in one
        indexing operation (so the backward pass scatters into S once, not W times); ALT's
        positions are drawn step by step, in the order a step-by-step loop draws them."""
        cfg = self.cfg
        if not rows:
            return []
        if not self.prefixes:  # BERT4Rec's cloze: whole rows
            batches = [SummaryBatch(rows=x) for x in step_rows(S, rows, S.shape[1])]
        else:
            plans = [loss_positions(r, S.shape[1], cfg.alt, cfg.alt_low, generator) for r in rows]
            seq = torch.cat([p[0] for p in plans]).to(S.device)
            pos = torch.cat([p[1] for p in plans]).to(S.device)
            targets = S[seq, pos].split([len(p[0]) for p in plans])  # W × (n, |V|)
            # distributions as inputs: gathered after the targets, so that their gradient
            # reaches S first, as W separate gathers' did (StepRows)
            inputs = [None] * len(rows) if embedded is not None else step_rows(S, rows, S.shape[1] - 1)
            batches = [make_batch(S, r, cfg.alt, cfg.alt_low, generator, embedded, targets=t, plan=p, inputs=x)
                       for r, t, p, x in zip(rows, targets, plans, inputs)]
        for batch in batches:
            batch.candidates = candidates
        return batches

    # ------------------------------------------------------------------ run
    def run(self, S: torch.Tensor, init: dict[str, torch.Tensor], steps: int, window: int,
            generator: torch.Generator, candidates=None, lr: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """M = ``steps`` inner steps from parameters ``init``; returns the final parameters
        (all of them, by name), differentiable w.r.t. S through the last ``window`` steps.

        candidates: the outer step's sampled items (``td3.candidates``) when S covers only them.
        lr: a learned η (0-dim tensor, ``distill.inner.learn_lr``): the last ``window``
        steps are differentiable w.r.t. it as well; None: ``cfg.lr``.
        """
        if lr is not None and self.cfg.backend != "func":
            raise ConfigError("a learned inner learning rate needs distill.inner.backend=func")
        if not 0 <= window <= steps:
            raise ConfigError(f"window W={window} must be in [0, M={steps}]")
        cfg = self.cfg
        rows = self.batches(S.shape[0], cfg.batch_size, steps, generator, fixed=cfg.order == "fixed")
        frozen = {n: t.detach() for n, t in init.items() if n not in self.trained}
        # Every trained parameter lives in one flat tensor; the model sees views of it.
        shapes = [init[n].shape for n in self.trained]
        sizes = [init[n].numel() for n in self.trained]
        flat = torch.cat([init[n].detach().reshape(-1) for n in self.trained]).clone()
        opt = FunctionalOptimizer(cfg, {"flat": flat}, lr=lr)
        embedding = init[EMBEDDING].detach()

        def unflatten(vector: torch.Tensor) -> dict[str, torch.Tensor]:
            return {n: t.view(shape) for n, t, shape in zip(self.trained, vector.split(sizes), shapes)}

        # Phase 1: M − W steps, no graph anywhere, the optimiser in place.
        S_const = S.detach()
        X_const = self.inputs(S_const, embedding, candidates)
        for step in range(steps - window):
            batch = make_batch(S_const, rows[step], cfg.alt, cfg.alt_low, generator, X_const, self.prefixes)
            batch.candidates = candidates
            grad = self._grad(flat.requires_grad_(True), unflatten, frozen, batch, opt.t, graph=False)
            flat = flat.detach()
            opt.step_({"flat": flat}, {"flat": grad})

        # Phase 2: W steps unrolled with a graph from S to the final parameters.
        opt.detach_()
        if cfg.backend == "higher":
            return self._run_higher(S, unflatten(flat.detach()), frozen, opt, rows[steps - window:], generator, sizes,
                                    candidates)
        batches = self.window_batches(S, self.inputs(S, embedding, candidates), rows[steps - window:], generator,
                                      candidates)
        if batches:
            flat = flat.detach().requires_grad_(True)
        for batch in batches:
            grad = self._grad(flat, unflatten, frozen, batch, opt.t, graph=True)
            flat = opt.step({"flat": flat}, {"flat": grad})["flat"]
        return {**frozen, **unflatten(flat)}

    def _grad(self, flat: torch.Tensor, unflatten, frozen: dict[str, torch.Tensor], batch: SummaryBatch,
              done: int, graph: bool) -> torch.Tensor:
        """d(inner loss)/d(flat parameters): one tensor, zeros where a parameter is unused."""
        full = {f"model.{n}": t for n, t in {**frozen, **unflatten(flat)}.items()}
        loss = functional_call(self.objective, full, (batch,))
        if not torch.isfinite(loss):
            from .errors import TrainingError
            raise TrainingError(f"non-finite inner loss ({loss.item()}) at inner step {done + 1}")
        (grad,) = torch.autograd.grad(loss, flat, create_graph=graph)
        return grad

    def _run_higher(self, S, params, frozen, opt, rows, generator, sizes, candidates=None):
        import higher

        cfg = self.cfg
        model = self.model
        with torch.no_grad():  # start the window from the phase-1 parameters
            for n, p in model.named_parameters():
                p.copy_({**frozen, **params}[n])
        trained = [p for n, p in model.named_parameters() if n in self.trained]
        if cfg.optimizer == "adam":
            torch_opt = torch.optim.Adam(trained, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                         weight_decay=cfg.weight_decay)
        else:
            torch_opt = torch.optim.SGD(trained, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        order = {n: i for i, n in enumerate(self.trained)}
        m_parts = opt.m["flat"].split(sizes)
        v_parts = opt.v["flat"].split(sizes) if opt.v is not None else None
        for n, p in zip(self.trained, trained):  # hand over the phase-1 optimiser state
            state = torch_opt.state[p]
            i = order[n]
            if cfg.optimizer == "adam":
                state.update(step=torch.tensor(float(opt.t)), exp_avg=m_parts[i].view_as(p).clone(),
                             exp_avg_sq=v_parts[i].view_as(p).clone())
            elif cfg.momentum:
                state["momentum_buffer"] = m_parts[i].view_as(p).clone()
        batches = self.window_batches(S, self.inputs(S, frozen.get(EMBEDDING), candidates), rows, generator,
                                      candidates)
        with higher.innerloop_ctx(model, torch_opt, copy_initial_weights=True,
                                  track_higher_grads=True) as (fmodel, diffopt):
            # higher's Adam keeps its step count as a plain int
            for group_state in diffopt.state:
                for state in group_state.values():
                    if "step" in state:
                        state["step"] = int(state["step"])
            fobjective = _Objective(fmodel, cfg)
            for batch in batches:
                diffopt.step(fobjective(batch), params=None)
            return dict(zip((n for n, _ in model.named_parameters()), fmodel.parameters(time=-1)))
