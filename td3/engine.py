"""The bi-level engine: Algorithm 1's outer step, and the loop that learns a summary.

Outer step (RaT-BPTT, docs/method.md, "The bi-level loop"): S is computed once; the learner
starts from a pool checkpoint; M ~ U(W, N) inner steps, the last W differentiable
(``td3.inner``); the outer loss (next-item cross-entropy on a real batch + feature-space
alignment with the teacher) is backpropagated into the summary only. Every outer step is
seeded from (seed, step) (``td3.seeds``), so a run resumed from a checkpoint ends bitwise
equal to an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import layout, records, stop, summary_training
from .candidates import draw_candidates
from .config import SUMMARY_METHODS, RunConfig, model_options
from .data import training_windows
from .errors import TrainingError
from .inner import EMBEDDING, InnerLoop
from .models import build_model
from .models.linear_ce import linear_cross_entropy
from .optim import Adam, CosineSchedule
from .seeds import candidates_seed, derive, epoch_order_seed, fresh_init_seed, learner_draw, step_seed

log = logging.getLogger("td3.engine")


# ------------------------------------------------------------ outer pieces
class _OuterObjective(nn.Module):
    """Cross-entropy of the unrolled learner on real windows + feature-space alignment."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y, teacher_features, candidates=None):
        if getattr(self.model, "causal", True):
            keep = y != 0
            hk, targets = self.model(x)[keep], y[keep]  # (n, d), (n,): every position with a target
        else:  # the item after each window, from a [MASK] placed there (td3.models.bert4rec)
            lengths, after = window_ends(x, y)
            keep = after != 0
            hk, targets = self.model.next_features(x, lengths)[keep], after[keep]
        if candidates is None:  # first order: the outer loss is differentiated once
            ce = self.model.cross_entropy(hk, targets)
        else:  # over the step's sampled items, with their correction (td3.candidates)
            table = self.model.item_embedding.weight[1:][candidates.items]
            ce = linear_cross_entropy(hk, table, candidates.local(targets), bias=candidates.log_weight)
        fsa = 0.5 * (teacher_features[keep] - hk).pow(2).sum(-1).mean()
        return ce, fsa


def window_ends(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) real items of each window (left-aligned, padded with 0 after) and (B,) the target
    after its last one (0: none)."""
    lengths = (x != 0).sum(1).clamp(min=1)
    return lengths, y[torch.arange(len(y), device=y.device), lengths - 1]


def outer_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Which examples of real windows (x, y) carry the outer loss: for a causal learner every
    position with a target, (B, L); for a bidirectional one, which reads x[t+1] = y[t] at t,
    only the item after each window, (B,)."""
    return y != 0 if getattr(model, "causal", True) else window_ends(x, y)[1] != 0


@torch.no_grad()
def teacher_features(model: nn.Module, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """The teacher's features of every real window, as the objective compares them: (N, L, d)
    for a causal teacher, (N, d) (after each window) for a bidirectional one."""
    causal = getattr(model, "causal", True)
    parts = [model(c) if causal else model.next_features(c, (c != 0).sum(1).clamp(min=1))
             for c in x.split(chunk)]
    return torch.cat(parts)


class _Learner:
    """One inner learner of the outer steps: its module, inner loop and outer objective, its
    teacher (init pool, features, frozen item table) and where it stands. The teacher's
    features are computed per outer step for its real batch, not kept for every window
    (docs/performance.md §6)."""

    def __init__(self, name: str, index: int, teacher, build: Callable[[], nn.Module],
                 inner_cfg, frozen: bool, device: torch.device):
        self.name, self.index, self.teacher, self.build = name, index, teacher, build
        self.module = build().to(device)
        self.inner = InnerLoop(self.module, inner_cfg)
        self.objective = _OuterObjective(self.module)
        self.frozen_E = teacher.item_embedding if frozen else None
        self.pool_index: int | None = None
        self.fresh: dict[int, dict] = {}


@functools.lru_cache(maxsize=1)  # the same epoch's order serves all its outer steps
def real_batches(num_windows: int, windows_per_batch: int, epoch: int, seed: int) -> list[torch.Tensor]:
    order = torch.randperm(num_windows, generator=torch.Generator().manual_seed(epoch_order_seed(seed, epoch)))
    return [order[i:i + windows_per_batch] for i in range(0, num_windows, windows_per_batch)]


# ------------------------------------------------------- the bi-level loop
class BilevelEngine:
    """The outer step of Algorithm 1, for a summary, a learner and a teacher.

    ``teacher`` needs ``model`` (eval mode), ``pool`` (state dicts) and ``item_embedding``.
    """

    def __init__(self, run: RunConfig | dict, data, teacher, device: torch.device, teachers: dict | None = None):
        """teachers: the teacher of each other inner learner (``run.inner_learners``) by name."""
        from .summary import build_summary

        run = RunConfig.of(run)
        s, d = run.summary, run.distill
        self.run, self.d, self.outer, self.seed = run, d, d.outer, run.seed
        self.teacher = teacher
        self.summary = build_summary(SUMMARY_METHODS[run.method], s.mu, s.zeta, data.num_items,
                                     item_factor=teacher.item_embedding[1:], d1=s.d1, d2=s.d2,
                                     latent_dim=s.latent_dim,
                                     generator=torch.Generator().manual_seed(self.seed)).to(device)

        # Real data: windows of ζ items, every position a next-item example.
        x, y = training_windows(data.train, run.max_len)
        self.x, self.y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.targets_per_window = float((self.y != 0).sum()) / len(self.y)
        self.windows_per_batch = max(1, round(self.outer.batch_size / self.targets_per_window))
        self.batches_per_epoch = math.ceil(len(self.x) / self.windows_per_batch)
        self.outer_epochs, self.total_steps = self.outer.schedule(self.batches_per_epoch)

        teachers = {run.model.name: teacher, **(teachers or {})}
        missing = [n for n in run.inner_learners if n not in teachers]
        if missing:
            raise TrainingError(f"no teacher for the inner learner(s) {', '.join(missing)}")
        self.learners = [
            _Learner(name, i, teachers[name], functools.partial(
                build_model, name, data.num_items, max_len=run.max_len, **model_options(run.learner(name))),
                d.inner, d.inner.frozen_embedding, device)
            for i, name in enumerate(run.inner_learners)]
        self.learner = self.learners[0].module  # the run's model: validation, candidates' catalogue

        self.opt = Adam(self.summary.parameters(), lr=self.outer.lr, weight_decay=self.outer.weight_decay)
        self.sched = CosineSchedule(self.opt, self.total_steps)
        # A learned η (docs/method.md, "A learned inner learning rate"): log η, so that it
        # stays positive, with its own Adam and schedule (one η for every inner learner).
        self.log_lr = None
        if d.inner.learn_lr:
            self.log_lr = torch.tensor(math.log(d.inner.lr), device=device, requires_grad=True)
            self.lr_opt = Adam([self.log_lr], lr=d.inner.lr_lr, weight_decay=0.0)
            self.lr_sched = CosineSchedule(self.lr_opt, self.total_steps)

    @property
    def inner_lr(self) -> float:
        """η as the next outer step uses it."""
        return self.d.inner.lr if self.log_lr is None else math.exp(self.log_lr.item())

    def learner_at(self, step: int) -> _Learner:
        """The inner learner of outer step ``step``: drawn uniformly, seeded from (seed, step)
        on a stream of its own (one learner: no draw, so every other draw is as it was)."""
        if len(self.learners) == 1:
            return self.learners[0]
        return self.learners[learner_draw(self.seed, step) % len(self.learners)]

    def resume(self, history: list[dict], done: int) -> None:
        """Where each learner stands after ``done`` outer steps (its per-epoch init)."""
        if len(self.learners) == 1:
            self.learners[0].pool_index = history[-1]["init"] if history else None
            return
        epoch = done // self.batches_per_epoch
        for learner in self.learners:
            last = [e for e in history if e.get("learner") == learner.name]
            same_epoch = last and (last[-1]["step"] - 1) // self.batches_per_epoch == epoch
            learner.pool_index = last[-1]["init"] if same_epoch else None

    def step(self, step: int) -> dict:
        """Outer step number ``step`` (0-based): everything random is seeded from (seed, step)."""
        d, outer = self.d, self.outer
        epoch, in_epoch = divmod(step, self.batches_per_epoch)
        batch = real_batches(len(self.x), self.windows_per_batch, epoch, self.seed)[in_epoch]
        learner = self.learner_at(step)
        torch.manual_seed(step_seed(self.seed, step))  # dropout
        g = torch.Generator().manual_seed(step_seed(self.seed, step))  # init draw, M, batches, ALT
        if in_epoch == 0:
            for other in self.learners:  # per_epoch: every learner draws anew in a new epoch
                other.pool_index = None
        if d.init == "per_step" or learner.pool_index is None:
            learner.pool_index = int(torch.randint(len(learner.teacher.pool), (1,), generator=g))
        if d.init_from == "scratch":  # a freshly initialised learner, as evaluation trains
            init = self._fresh_init(learner, learner.pool_index)
        else:
            init = dict(learner.teacher.pool[learner.pool_index])
        if learner.frozen_E is not None:
            init[EMBEDDING] = learner.frozen_E
        M = int(torch.randint(d.window, d.steps + 1, (1,), generator=g))
        xb, yb = self.x[batch], self.y[batch]

        sampled = None  # every loss over all |V| items, or over a sampled subset (td3.candidates)
        if d.sampled_items:
            own = torch.Generator().manual_seed(candidates_seed(self.seed, step))  # leaves g's draws as they are
            sampled = draw_candidates(yb[yb != 0], self.learner.num_items, d.sampled_items, own).to(self.x.device)
            S = self.summary.distributions(items=sampled.items, log_weight=sampled.log_weight)  # (μ, ζ, k)
        else:
            S = self.summary.distributions()  # (μ, ζ, |V|): once per outer step
        learner.module.train(d.inner.dropout)
        try:
            lr = None if self.log_lr is None else self.log_lr.exp()
            params = learner.inner.run(S, init, steps=M, window=d.window, generator=g, candidates=sampled, lr=lr)
        except TrainingError as exc:
            raise TrainingError(f"{exc} of outer step {step + 1}") from exc
        learner.module.train(outer.learner_dropout)
        ce, fsa = functional_call(learner.objective, {f"model.{k}": v for k, v in params.items()},
                                  (xb, yb, teacher_features(learner.teacher.model, xb), sampled))
        loss = outer.ce_weight * ce + (outer.fsa_weight * fsa if outer.fsa else 0.0)
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite outer loss (ce={ce.item()}, fsa={fsa.item()}) at outer step {step + 1}")
        self.opt.zero_grad()
        if self.log_lr is not None:
            self.lr_opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.summary.parameters(), outer.clip)
        if not torch.isfinite(norm):
            raise TrainingError(f"non-finite meta-gradient (norm {norm.item()}) at outer step {step + 1}")
        entry = {"step": step + 1, "ce": round(ce.item(), 5), "fsa": round(fsa.item(), 5),
                 "grad_norm": round(norm.item(), 5), "M": M, "init": learner.pool_index}
        if self.log_lr is not None:  # Adam's step does not depend on the gradient's scale: no clip
            if not torch.isfinite(self.log_lr.grad):  # W >= 1 steps scale by η: it has a gradient
                raise TrainingError(f"non-finite meta-gradient of the inner learning rate at outer step {step + 1}")
            entry["inner_lr"] = round(self.inner_lr, 7)  # the η this step used
            self.lr_opt.step()
            self.lr_sched.step()
        self.opt.step()
        self.sched.step()
        if len(self.learners) > 1:
            entry["learner"] = learner.name
        return entry

    def _fresh_init(self, learner: _Learner, index: int) -> dict:
        """A fresh learner's weights: ``len(pool)`` fixed draws, so that a per-epoch init
        and a resumed run see the same ones."""
        if index not in learner.fresh:
            with torch.random.fork_rng(devices=[]):
                seed = fresh_init_seed(self.seed, index)
                torch.manual_seed(seed if learner.index == 0 else derive(seed, learner.index))
                model = learner.build()
            learner.fresh[index] = {k: v.to(self.x.device) for k, v in model.state_dict().items()}
        return dict(learner.fresh[index])

    def state_dict(self) -> dict:
        state = {"summary": self.summary.state_dict(), "optimizer": self.opt.state_dict(),
                 "scheduler": self.sched.state_dict()}
        if self.log_lr is not None:
            state["inner_lr"] = {"log_lr": self.log_lr.detach().clone(), "optimizer": self.lr_opt.state_dict(),
                                 "scheduler": self.lr_sched.state_dict()}
        return state

    def load_state_dict(self, saved: dict) -> None:
        self.summary.load_state_dict(saved["summary"])
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        if self.log_lr is not None:
            if "inner_lr" not in saved:
                raise TrainingError("the checkpoint holds no learned inner learning rate (distill.inner.learn_lr)")
            with torch.no_grad():
                self.log_lr.copy_(saved["inner_lr"]["log_lr"])
            self.lr_opt.load_state_dict(saved["inner_lr"]["optimizer"])
            self.lr_sched.load_state_dict(saved["inner_lr"]["scheduler"])


def in_average(step: int, total_steps: int, fraction: float) -> bool:
    """Whether ``distill.average_last=fraction`` averages the summary validated after ``step``:
    one of the last ``fraction`` of the outer loop (after step ``(1 - fraction) * total_steps``)."""
    return fraction > 0 and step > (1.0 - fraction) * total_steps


def averaged_steps(steps: list[int], total_steps: int, fraction: float) -> list[int]:
    """The validated ``steps`` whose summaries ``distill.average_last=fraction`` averages."""
    return [step for step in steps if in_average(step, total_steps, fraction)]


def load_average(summary: nn.Module, parameters: list[dict]) -> None:
    """Set ``summary``'s learned tensors to their element-wise mean over ``parameters`` (one
    ``{name: tensor}`` per summary averaged: Tucker factors U, T, G, or Farzi's latent and
    decoder; docs/method.md, "Averaging the last summaries"); its buffers (a shared V) stay."""
    mean = {k: torch.stack([p[k] for p in parameters]).mean(0) for k in parameters[0]}
    summary.load_state_dict({**summary.state_dict(), **mean})


class Pace:
    """The progress line a distillation logs at each validation (its run.log, the job's log):
    where it stands, its validation score, and the time left at this attempt's pace (wall
    seconds per outer step since it started or resumed, validations included)."""

    def __init__(self, start_step: int, total_steps: int, clock: Callable[[], float] = time.perf_counter):
        self.start_step, self.total_steps, self.clock = start_step, total_steps, clock
        self.t0 = clock()

    def line(self, step: int, validation: dict, state: dict) -> str:
        per_step = (self.clock() - self.t0) / max(1, step - self.start_step)
        scores = validation.get("by_learner")
        text = (f"outer step {step} of {self.total_steps}, valid MRR@10 {validation['valid_MRR@10']:.4f}"
                + (" (" + ", ".join(f"{name} {value:.4f}" for name, value in scores.items()) + ")" if scores else "")
                + f", best {state['best_score']:.4f} at step {state['best_step']}; {per_step:.1f} s per step")
        left = self.total_steps - step
        return text + (f", about {duration(per_step * left)} left" if left else "")


def duration(seconds: float) -> str:
    """``3 h 05 min``, ``12 min``, ``40 s``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def learn_summary(run: RunConfig, data, teacher, summary_dir: Path, device: torch.device, report=None,
                  teachers: dict | None = None):
    """Algorithm 1 with validation and checkpoints (``summary_dir/state.pt``).
    Returns the best summary and a description of the run.

    teacher: a ``td3.teacher.Teacher`` (or anything with its ``model``, ``pool`` and ``item_embedding``).
    teachers: the other inner learners' teachers by name (``distill.learners``).
    """
    d, seed = run.distill, run.seed
    engine = BilevelEngine(run, data, teacher, device, teachers=teachers)
    summary = engine.summary
    state = {"step": 0, "best_score": -math.inf, "best_step": None, "history": [], "validations": [],
             "averaged": [], "cpu_seconds": 0.0}   # averaged (distill.average_last): the learned tensors, by step
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
        state.setdefault("averaged", [])  # a checkpoint from before averaging existed
        engine.resume(state["history"], state["step"])  # each learner's per-epoch init
        log.info("resuming %s after outer step %d", summary_dir.name, state["step"])

    # who validates: the run's model, or every inner learner (their mean; docs/method.md,
    # "Several learners"): each as the evaluated learners will be trained, its own options
    validators = engine.learners if d.validate_learners == "all" else engine.learners[:1]

    def validate() -> tuple[float, dict[str, float]]:
        """Fresh learners trained on S: their mean MRR@10 on the validation users, and each's."""
        S = summary.distributions().detach()
        scores = {}
        for learner in validators:
            result = summary_training.train_on_summary(
                S, data, learner.name, model_options(run.learner(learner.name)),
                epochs=d.validate_epochs, batch_size=d.validate_batch_size, lr=d.validate_lr,
                weight_decay=d.validate_weight_decay, alt=d.inner.alt, alt_low=d.inner.alt_low,
                alt_weight=d.inner.alt_weight, bidirectional_loss=d.inner.bidirectional_loss,
                seed=seed, max_len=run.max_len, select="last",
                eval_protocols=(summary_training.SELECT_PROTOCOL,), protocol=d.validate_protocol,
                teacher_item_embedding=learner.teacher.item_embedding if d.validate_protocol == "paper" else None,
                device=device, stoppable=False)   # a stop waits for the outer step's checkpoint
            scores[learner.name] = result.valid.metrics[summary_training.SELECT_PROTOCOL][summary_training.SELECT_METRIC]
        return float(np.mean(list(scores.values()))), scores

    step_seconds = []
    bar = tqdm(total=engine.total_steps, initial=state["step"], desc=f"distill {data.name}/{run.method}",
               disable=not run.progress, dynamic_ncols=True, unit="step")
    # the progress line of each validation goes above the bar, not through it
    console = logging_redirect_tqdm() if run.progress else contextlib.nullcontext()
    pace = Pace(state["step"], engine.total_steps)
    with bar, console:   # the bar is closed however the loop ends
        state["attempts"] = state.get("attempts", 0) + 1
        for step in range(state["step"], engine.total_steps):
            t0, c0 = time.perf_counter(), time.process_time()
            entry = engine.step(step)
            step_seconds.append(time.perf_counter() - t0)
            state["history"].append(entry)
            state["step"] = step + 1
            last = state["step"] == engine.total_steps
            if state["step"] % d.validate_every == 0 or last:
                score, by_learner = validate()
                validation = {"step": state["step"], "valid_MRR@10": score}
                if len(by_learner) > 1:
                    validation["by_learner"] = by_learner
                state["validations"].append(validation)
                if d.snapshots:  # the S just validated, whichever rule will pick a step from them
                    summary.save(layout.snapshot_path(summary_dir, state["step"]), meta={**summary.meta, "validation": validation})
                if report is not None:
                    report({"step": state["step"], "valid_MRR@10": score})
                if score > state["best_score"]:
                    state.update(best_score=score, best_step=state["step"])
                    best_state = {k: v.detach().clone() for k, v in summary.state_dict().items()}
                if in_average(state["step"], engine.total_steps, d.average_last):
                    state["averaged"].append((state["step"], {k: v.detach().clone() for k, v in summary.named_parameters()}))
                log.info("%s: %s", summary_dir.name, pace.line(state["step"], validation, state))
            # wall and CPU time of the distillation over every attempt (a resumed run counts its
            # earlier ones); CPU time is its cost whether or not other runs shared the cores
            state["seconds"] = state.get("seconds", 0.0) + time.perf_counter() - t0
            if "cpu_seconds" in state:   # not counted by a checkpoint from before it was: unknown
                state["cpu_seconds"] += time.process_time() - c0
            if (state["step"] % d.checkpoint_every == 0 or stop.requested()) and not last:
                records.torch_save({**engine.state_dict(), "state": state, "best_summary": best_state}, ckpt)
                stop.check(f"after outer step {state['step']} (checkpoint {ckpt})")
            bar.update(1)
            val = state["validations"][-1]["valid_MRR@10"] if state["validations"] else float("nan")
            bar.set_postfix(ce=f"{entry['ce']:.3f}", fsa=f"{entry['fsa']:.3f}", val=f"{val:.4f}")

    averaged = None
    if state["averaged"]:  # distill.average_last: the mean of the last validated summaries is kept
        load_average(summary, [tensors for _, tensors in state["averaged"]])
        score, by_learner = validate()
        averaged = {"steps": [step for step, _ in state["averaged"]], "valid_MRR@10": score}
        if len(by_learner) > 1:
            averaged["by_learner"] = by_learner
    else:
        summary.load_state_dict(best_state)
    info = {"outer_steps": engine.total_steps, "outer_epochs": engine.outer_epochs,
            "batches_per_epoch": engine.batches_per_epoch,
            "windows_per_batch": engine.windows_per_batch,
            "targets_per_batch": round(engine.windows_per_batch * engine.targets_per_window),
            "best_step": state["best_step"], "best_valid_MRR@10": state["best_score"],
            "validations": state["validations"], "history": state["history"],
            "seconds": round(state.get("seconds", 0.0), 3), "attempts": state.get("attempts", 1),
            "cpu_seconds": round(state["cpu_seconds"], 3) if "cpu_seconds" in state else None,
            "seconds_per_outer_step": round(float(np.median(step_seconds)), 3) if step_seconds else None}
    if averaged is not None:  # the kept summary is this mean, not the best step's
        info["kept"], info["average"] = "average", averaged
    if engine.log_lr is not None:  # the learned η after the last outer step
        info["inner_lr"] = round(engine.inner_lr, 7)
    return summary, info
