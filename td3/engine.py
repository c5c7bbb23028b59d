"""The bi-level engine: Algorithm 1's outer step, and the loop that learns a summary.

Outer step (RaT-BPTT, docs/method.md, "The bi-level loop"): S is computed once; the learner
starts from a pool checkpoint; M ~ U(W, N) inner steps, the last W differentiable
(``td3.inner``); the outer loss (next-item cross-entropy on a real batch + feature-space
alignment with the teacher) is backpropagated into the summary only. Every outer step is
seeded from (seed, step) (``td3.seeds``), so a run resumed from a checkpoint ends bitwise
equal to an uninterrupted one.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call
from tqdm.auto import tqdm

from . import records, stop, summary_training
from .candidates import draw_candidates
from .config import SUMMARY_METHODS, RunConfig, model_options
from .data import training_windows
from .errors import TrainingError
from .inner import EMBEDDING, InnerLoop
from .models import build_model
from .models.linear_ce import linear_cross_entropy
from .optim import Adam, CosineSchedule
from .seeds import candidates_seed, epoch_order_seed, fresh_init_seed, step_seed

log = logging.getLogger("td3.engine")


# ------------------------------------------------------------ outer pieces
class _OuterObjective(nn.Module):
    """Cross-entropy of the unrolled learner on real windows + feature-space alignment."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y, teacher_features, candidates=None):
        h = self.model(x)  # (B, L, d)
        keep = y != 0
        hk = h[keep]  # (n, d): features at the positions that carry a target
        if candidates is None:  # first order: the outer loss is differentiated once
            ce = self.model.cross_entropy(hk, y[keep])
        else:  # over the step's sampled items, with their correction (td3.candidates)
            table = self.model.item_embedding.weight[1:][candidates.items]
            ce = linear_cross_entropy(hk, table, candidates.local(y[keep]), bias=candidates.log_weight)
        fsa = 0.5 * (teacher_features - hk).pow(2).sum(-1).mean()
        return ce, fsa


@functools.lru_cache(maxsize=1)  # the same epoch's order serves all its outer steps
def real_batches(num_windows: int, windows_per_batch: int, epoch: int, seed: int) -> list[torch.Tensor]:
    order = torch.randperm(num_windows, generator=torch.Generator().manual_seed(epoch_order_seed(seed, epoch)))
    return [order[i:i + windows_per_batch] for i in range(0, num_windows, windows_per_batch)]


# ------------------------------------------------------- the bi-level loop
class BilevelEngine:
    """The outer step of Algorithm 1, for a summary, a learner and a teacher.

    ``teacher`` needs ``model`` (eval mode), ``pool`` (state dicts) and ``item_embedding``.
    """

    def __init__(self, run: RunConfig | dict, data, teacher, device: torch.device):
        from .summary import build_summary

        run = RunConfig.of(run)
        s, d = run.summary, run.distill
        self.run, self.d, self.outer, self.seed = run, d, d.outer, run.seed
        self.teacher = teacher
        self.summary = build_summary(SUMMARY_METHODS[run.method], s.mu, s.zeta, data.num_items,
                                     item_factor=teacher.item_embedding[1:], d1=s.d1, d2=s.d2,
                                     latent_dim=s.latent_dim,
                                     generator=torch.Generator().manual_seed(self.seed)).to(device)
        self.learner = self._build_learner(data.num_items).to(device)
        self.inner = InnerLoop(self.learner, d.inner)
        self.objective = _OuterObjective(self.learner)
        self.frozen_E = teacher.item_embedding if d.inner.frozen_embedding else None

        # Real data: windows of ζ items, every position a next-item example.
        x, y = training_windows(data.train, run.max_len)
        self.x, self.y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.targets_per_window = float((self.y != 0).sum()) / len(self.y)
        self.windows_per_batch = max(1, round(self.outer.batch_size / self.targets_per_window))
        self.batches_per_epoch = math.ceil(len(self.x) / self.windows_per_batch)
        self.total_steps = self.outer.epochs * self.batches_per_epoch
        with torch.no_grad():  # the teacher's features at every position, once
            self.t_feats = torch.cat([teacher.model(self.x[i:i + 512]) for i in range(0, len(self.x), 512)])

        self.opt = Adam(self.summary.parameters(), lr=self.outer.lr, weight_decay=self.outer.weight_decay)
        self.sched = CosineSchedule(self.opt, self.total_steps)
        self._pool_index = None
        self._fresh: dict[int, dict] = {}

    def _build_learner(self, num_items: int) -> nn.Module:
        return build_model(self.run.model.name, num_items, max_len=self.run.max_len, **model_options(self.run.model))

    def step(self, step: int) -> dict:
        """Outer step number ``step`` (0-based): everything random is seeded from (seed, step)."""
        d, outer = self.d, self.outer
        epoch, in_epoch = divmod(step, self.batches_per_epoch)
        batch = real_batches(len(self.x), self.windows_per_batch, epoch, self.seed)[in_epoch]
        torch.manual_seed(step_seed(self.seed, step))  # dropout
        g = torch.Generator().manual_seed(step_seed(self.seed, step))  # init draw, M, batches, ALT
        if d.init == "per_step" or self._pool_index is None or in_epoch == 0:
            self._pool_index = int(torch.randint(len(self.teacher.pool), (1,), generator=g))
        if d.init_from == "scratch":  # a freshly initialised learner, as evaluation trains
            init = self._fresh_init(self._pool_index)
        else:
            init = dict(self.teacher.pool[self._pool_index])
        if self.frozen_E is not None:
            init[EMBEDDING] = self.frozen_E
        M = int(torch.randint(d.window, d.steps + 1, (1,), generator=g))
        xb, yb = self.x[batch], self.y[batch]

        sampled = None  # every loss over all |V| items, or over a sampled subset (td3.candidates)
        if d.sampled_items:
            own = torch.Generator().manual_seed(candidates_seed(self.seed, step))  # leaves g's draws as they are
            sampled = draw_candidates(yb[yb != 0], self.learner.num_items, d.sampled_items, own).to(self.x.device)
            S = self.summary.distributions(items=sampled.items, log_weight=sampled.log_weight)  # (μ, ζ, k)
        else:
            S = self.summary.distributions()  # (μ, ζ, |V|): once per outer step
        self.learner.train(d.inner.dropout)
        try:
            params = self.inner.run(S, init, steps=M, window=d.window, generator=g, candidates=sampled)
        except TrainingError as exc:
            raise TrainingError(f"{exc} of outer step {step + 1}") from exc
        self.learner.train(outer.learner_dropout)
        ce, fsa = functional_call(self.objective, {f"model.{k}": v for k, v in params.items()},
                                  (xb, yb, self.t_feats[batch][yb != 0], sampled))
        loss = outer.ce_weight * ce + (outer.fsa_weight * fsa if outer.fsa else 0.0)
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite outer loss (ce={ce.item()}, fsa={fsa.item()}) at outer step {step + 1}")
        self.opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.summary.parameters(), outer.clip)
        if not torch.isfinite(norm):
            raise TrainingError(f"non-finite meta-gradient (norm {norm.item()}) at outer step {step + 1}")
        self.opt.step()
        self.sched.step()
        return {"step": step + 1, "ce": round(ce.item(), 5), "fsa": round(fsa.item(), 5),
                "grad_norm": round(norm.item(), 5), "M": M, "init": self._pool_index}

    def _fresh_init(self, index: int) -> dict:
        """A fresh learner's weights: ``len(pool)`` fixed draws, so that a per-epoch init
        and a resumed run see the same ones."""
        if index not in self._fresh:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(fresh_init_seed(self.seed, index))
                model = self._build_learner(self.learner.num_items)
            self._fresh[index] = {k: v.to(self.x.device) for k, v in model.state_dict().items()}
        return dict(self._fresh[index])

    def state_dict(self) -> dict:
        return {"summary": self.summary.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        self.summary.load_state_dict(saved["summary"])
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])


def learn_summary(run: RunConfig, data, teacher, summary_dir: Path, device: torch.device, report=None):
    """Algorithm 1 with validation and checkpoints (``summary_dir/state.pt``).
    Returns the best summary and a description of the run.

    teacher: a ``td3.teacher.Teacher`` (or anything with its ``model``, ``pool`` and ``item_embedding``).
    """
    d, seed = run.distill, run.seed
    engine = BilevelEngine(run, data, teacher, device)
    summary = engine.summary
    state = {"step": 0, "best_score": -math.inf, "best_step": None, "history": [], "validations": []}
    best_state = {k: v.detach().clone() for k, v in summary.state_dict().items()}
    summary_dir.mkdir(parents=True, exist_ok=True)
    ckpt = summary_dir / "state.pt"
    if ckpt.exists():
        try:
            saved = torch.load(ckpt, map_location=device, weights_only=False)
            engine.load_state_dict(saved)
        except Exception as exc:
            raise TrainingError(f"checkpoint {ckpt} cannot be read ({type(exc).__name__}); delete it to start over") from exc
        state, best_state = saved["state"], saved["best_summary"]
        engine._pool_index = state["history"][-1]["init"] if state["history"] else None  # per_epoch init
        log.info("resuming %s after outer step %d", summary_dir.name, state["step"])

    def validate() -> float:
        """A fresh learner trained on S (by default as the evaluated learners will be)."""
        paper = d.validate_protocol == "paper"
        result = summary_training.train_on_summary(
            summary.distributions().detach(), data, run.model.name, model_options(run.model),
            epochs=d.validate_epochs, batch_size=d.validate_batch_size, lr=d.validate_lr,
            weight_decay=d.validate_weight_decay, alt=d.inner.alt, alt_low=d.inner.alt_low,
            alt_weight=d.inner.alt_weight, seed=seed, max_len=run.max_len, select="last",
            eval_protocols=(summary_training.SELECT_PROTOCOL,), protocol=d.validate_protocol,
            teacher_item_embedding=teacher.item_embedding if paper else None, device=device,
            stoppable=False)   # a stop waits for the outer step's checkpoint
        return result.valid.metrics[summary_training.SELECT_PROTOCOL][summary_training.SELECT_METRIC]

    step_seconds = []
    bar = tqdm(total=engine.total_steps, initial=state["step"], desc=f"distill {data.name}/{run.method}",
               disable=not run.progress, dynamic_ncols=True, unit="step")
    try:
        state["attempts"] = state.get("attempts", 0) + 1
        for step in range(state["step"], engine.total_steps):
            t0 = time.perf_counter()
            entry = engine.step(step)
            step_seconds.append(time.perf_counter() - t0)
            state["history"].append(entry)
            state["step"] = step + 1
            last = state["step"] == engine.total_steps
            if state["step"] % d.validate_every == 0 or last:
                score = validate()
                state["validations"].append({"step": state["step"], "valid_MRR@10": score})
                if report is not None:
                    report({"step": state["step"], "valid_MRR@10": score})
                if score > state["best_score"]:
                    state.update(best_score=score, best_step=state["step"])
                    best_state = {k: v.detach().clone() for k, v in summary.state_dict().items()}
            # wall time of the distillation over every attempt (a resumed run counts its earlier ones)
            state["seconds"] = state.get("seconds", 0.0) + time.perf_counter() - t0
            if (state["step"] % d.checkpoint_every == 0 or stop.requested()) and not last:
                records.torch_save({**engine.state_dict(), "state": state, "best_summary": best_state}, ckpt)
                stop.check(f"after outer step {state['step']} (checkpoint {ckpt})")
            bar.update(1)
            val = state["validations"][-1]["valid_MRR@10"] if state["validations"] else float("nan")
            bar.set_postfix(ce=f"{entry['ce']:.3f}", fsa=f"{entry['fsa']:.3f}", val=f"{val:.4f}")
    finally:
        bar.close()

    summary.load_state_dict(best_state)
    info = {"outer_steps": engine.total_steps, "batches_per_epoch": engine.batches_per_epoch,
            "windows_per_batch": engine.windows_per_batch,
            "targets_per_batch": round(engine.windows_per_batch * engine.targets_per_window),
            "best_step": state["best_step"], "best_valid_MRR@10": state["best_score"],
            "validations": state["validations"], "history": state["history"],
            "seconds": round(state.get("seconds", 0.0), 3), "attempts": state.get("attempts", 1),
            "seconds_per_outer_step": round(float(np.median(step_seconds)), 3) if step_seconds else None}
    return summary, info
