"""Dataset distillation: ``python -m td3.distill [method=td3] [dataset=ml-100k] ...``.

One run = one method at one seed, ending in one record:
- ``td3`` / ``farzi`` / ``naive``: learn a summary (Tucker, Farzi's latent+decoder, free
  logits) by bi-level optimisation (SPEC §4), then train fresh learners on it (SPEC §5);
- ``random`` / ``longest``: real sequences at the same interaction budget μ·ζ;
- ``full``: full-data training of the same learners.

The teacher (its item table is the Tucker V and its features are FSA's target) and the
init pool are a full-data training run (``td3.train``), found by its signature or trained
on demand.

Outer step (RaT-BPTT): S is computed once; the learner starts from a pool checkpoint;
M ~ U(W, N) inner steps, the last W differentiable; the outer loss (next-item
cross-entropy on a real batch + FSA) is backpropagated into the summary only. Every outer
step is seeded from (seed, step), so a run resumed from a checkpoint ends bitwise equal to
an uninterrupted one.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call
from tqdm.auto import tqdm

from . import baselines, records, stop, summary_training
from .candidates import draw_candidates
from .cli import CONF_DIR, hydra_command
from .data import load_dataset, training_windows
from .errors import ConfigError, DamagedFileError, TrainingError
from .evaluate import protocol_problems
from .inner import EMBEDDING, InnerConfig, InnerLoop
from .layout import SUMMARY_METHODS, run_dir_for, summary_dir_for  # light: no torch
from .models import MODELS, build_model
from .models.linear_ce import linear_cross_entropy
from .optim import Adam, CosineSchedule
from .train import dataset_options, model_options, setup_runtime, train as train_full

log = logging.getLogger("td3.distill")

METHODS = (*SUMMARY_METHODS, "random", "longest", "full")
MODEL_CONF_DIR = Path(CONF_DIR) / "model"   # evaluation learners' options, conf/model/<name>.yaml


# ------------------------------------------------------------------ config
def check_config(cfg: dict) -> None:
    """Refuse impossible settings before any work starts."""
    s, d = cfg["summary"], cfg["distill"]
    problems = []
    if cfg["method"] not in METHODS:
        problems.append(f"method={cfg['method']!r}: expected one of {', '.join(METHODS)}")
    if s["zeta"] < 3:
        problems.append(f"summary.zeta={s['zeta']} must be >= 3")
    if s["mu"] < 1:
        problems.append(f"summary.mu={s['mu']} must be >= 1")
    if cfg["method"] == "td3" and (s["d1"] > s["mu"] or s["d2"] > s["zeta"]):
        problems.append(f"Tucker ranks d1={s['d1']}, d2={s['d2']} cannot exceed mu={s['mu']}, zeta={s['zeta']}")
    problems += _evaluation_problems(cfg)
    # The bi-level settings only bind the methods that distil: Random, Longest and Full-Data
    # never read them, so a grid that shares them across methods must not fail there.
    distils = cfg["method"] in SUMMARY_METHODS
    if distils:
        problems += _bilevel_problems(s, d)
        sampled = d.get("sampled_items", 0)
        if isinstance(sampled, bool) or not isinstance(sampled, int) or sampled < 0:
            problems.append(f"distill.sampled_items={sampled!r} must be an integer >= 0 (0: every item)")
        elif sampled and not getattr(MODELS.get(cfg["model"]["name"]), "causal", True):
            problems.append(f"distill.sampled_items={sampled} needs a causal learner: {cfg['model']['name']} "
                            f"is trained on the summary by a cloze loss over every item")
        if cfg["max_len"] != s["zeta"]:
            problems.append(f"max_len={cfg['max_len']} must equal summary.zeta={s['zeta']} (the learner reads ζ-1 items)")
    if problems:
        raise ConfigError("; ".join(problems))
    if distils:
        InnerConfig(**inner_config_kwargs(cfg)).check()


def _evaluation_problems(cfg: dict) -> list[str]:
    """The learners trained on the result: refused now rather than after a distillation."""
    ev = cfg["evaluation"]
    problems = []
    if ev["protocol"] not in ("scratch", "paper"):
        problems.append(f"evaluation.protocol={ev['protocol']!r}: expected scratch or paper")
    unknown = [name for name in ev["models"]
               if name != cfg["model"]["name"] and not (MODEL_CONF_DIR / f"{name}.yaml").is_file()]
    if unknown or not ev["models"]:
        known = sorted(p.stem for p in MODEL_CONF_DIR.glob("*.yaml"))
        what = f"unknown {', '.join(map(repr, unknown))}" if unknown else "empty"
        problems.append(f"evaluation.models={list(ev['models'])}: {what} (known: {', '.join(known)})")
    if not ev["seeds"]:
        problems.append("evaluation.seeds is empty")
    if ev["protocol"] == "paper" and not unknown and cfg["method"] != "full":
        width = item_table_width(cfg["model"])
        other = [f"{name} ({item_table_width(model_config(name, cfg))})" for name in ev["models"]
                 if item_table_width(model_config(name, cfg)) != width]
        if other:
            problems.append(f"evaluation.protocol=paper starts each learner from the teacher's item table "
                            f"(width {width}), which {', '.join(other)} cannot take: evaluate other "
                            f"architectures with evaluation.protocol=scratch")
    if cfg["method"] == "full":
        problems += protocol_problems(cfg["eval"]["protocols"])
    else:  # Full-Data trains with train/, not with these
        problems += summary_training.settings_problems(
            ev["epochs"], ev["batch_size"], ev["lr"], ev["weight_decay"], ev["select"], ev.get("eval_every", 1),
            cfg["eval"]["protocols"], prefix="evaluation.")
    return problems


def _bilevel_problems(s: dict, d: dict) -> list[str]:
    inner, outer = d["inner"], d["outer"]
    problems = []
    if not 0 <= d["window"] <= d["steps"]:
        problems.append(f"distill.window W={d['window']} must be in [0, distill.steps N={d['steps']}]")
    if inner["alt"] and not 1 <= inner["alt_low"] < s["zeta"] - 1:
        problems.append(f"ALT needs 1 <= distill.inner.alt_low ({inner['alt_low']}) < zeta - 1 ({s['zeta'] - 1})")
    if inner.get("order", "shuffled") == "fixed" and s["mu"] % inner["batch_size"]:
        problems.append(f"distill.inner.order=fixed needs summary.mu ({s['mu']}) divisible by "
                        f"distill.inner.batch_size ({inner['batch_size']})")
    if inner["batch_size"] > s["mu"]:
        problems.append(f"distill.inner.batch_size={inner['batch_size']} exceeds summary.mu={s['mu']}")
    if d["init"] not in ("per_step", "per_epoch"):
        problems.append(f"distill.init={d['init']!r}: expected per_step or per_epoch")
    if d.get("init_from", "pool") not in ("pool", "scratch"):
        problems.append(f"distill.init_from={d['init_from']!r}: expected pool or scratch")
    if outer["epochs"] < 1 or outer["batch_size"] < 1:
        problems.append("distill.outer.epochs and distill.outer.batch_size must be >= 1")
    for key in ("validate_every", "checkpoint_every"):
        if d[key] < 1:
            problems.append(f"distill.{key}={d[key]} must be >= 1")
    problems += summary_training.settings_problems(
        d["validate_epochs"], d["validate_batch_size"], d["validate_lr"], d["validate_weight_decay"],
        prefix="distill.validate_")
    return problems


def inner_config_kwargs(cfg: dict) -> dict:
    i = cfg["distill"]["inner"]
    return dict(lr=i["lr"], weight_decay=i["weight_decay"], optimizer=i["optimizer"], batch_size=i["batch_size"],
                alt=i["alt"], alt_low=i["alt_low"], alt_weight=i.get("alt_weight", 1.0),
                order=i.get("order", "shuffled"), frozen_embedding=i["embedding"] == "frozen",
                backend=i["backend"], momentum=i.get("momentum", 0.0))


def teacher_config(cfg: dict) -> dict:
    """The full-data training run providing the teacher and the init pool."""
    return {"seed": cfg["teacher_seed"], "max_len": cfg["max_len"], "dataset": cfg["dataset"],
            "model": cfg["model"], "train": cfg["train"], "eval": cfg["eval"],
            "results_dir": cfg["results_dir"], "device": cfg.get("device"), "threads": cfg.get("threads"),
            "progress": cfg.get("progress", True)}


def model_config(name: str, cfg: dict) -> dict:
    """Options of an evaluation learner: the distillation learner's own, or conf/model/<name>.yaml."""
    if name == cfg["model"]["name"]:
        return dict(cfg["model"])
    path = MODEL_CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"evaluation model {name!r}: no config at {path}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def item_table_width(options: dict) -> int | None:
    """The width of a learner's item table: its embedding size, or its hidden size."""
    return options.get("embedding_size") or options.get("hidden_size")


def _cached_summary(summary_dir: Path, device, teacher) -> tuple | None:
    """The summary another run already distilled in ``summary_dir`` with its ``distill.json``,
    or None when there is none or it cannot be read: a damaged cache (a truncated or
    overwritten file) is distilled again, which gives the same bytes, after one warning. A
    readable summary built on another teacher item table stays an error (the teacher's runs
    disagree: something is wrong that distilling again would hide)."""
    marker = summary_dir / "distill.json"  # written last: the summary is complete
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        log.warning("the cached summary's %s cannot be read (%s): distilling it again", marker, exc)
        marker.unlink()
        return None
    from .summary import Summary

    try:
        summary = Summary.load(summary_dir / "summary.pt", map_location=device,
                               shared={"V": teacher.item_embedding[1:]})
    except DamagedFileError as exc:
        log.warning("%s: distilling it again", exc)
        marker.unlink()
        return None
    return summary, info


# ----------------------------------------------------------------- teacher
class Teacher:
    """The full-data run: best model (eval mode, frozen) and its init pool."""

    def __init__(self, cfg: dict, device: torch.device, num_items: int):
        record_path = train_full(teacher_config(cfg))
        self.run_dir = record_path.parent
        self.record = json.loads(record_path.read_text())
        if self.record.get("status") != "complete":
            raise TrainingError(f"teacher run {self.run_dir} is not complete: {self.record.get('error')}")
        best = self.run_dir / "best.pt"
        if not best.is_file():
            raise TrainingError(f"teacher checkpoint missing: {best}")
        self.model = build_model(cfg["model"]["name"], num_items, max_len=cfg["max_len"],
                                 **model_options(cfg["model"])).to(device)
        self.model.load_state_dict(self._load(best, device))
        self.model.eval().requires_grad_(False)
        self.pool_paths = [self.run_dir / p for p in self.record["checkpoints"]["pool"]]
        missing = [p for p in self.pool_paths if not p.is_file()]
        if missing:
            raise TrainingError(f"init pool checkpoint missing: {missing[0]}")
        self.pool = [self._load(p, device) for p in self.pool_paths]
        lo, hi = cfg["train"]["pool_epochs"]
        self.pool_note = None
        if len(self.pool) < hi - lo + 1:
            # Early stopping ended the teacher before the pool's last epoch: use what there is.
            self.pool_note = (f"pool has {len(self.pool)} of the {hi - lo + 1} checkpoints asked "
                              f"(epochs {lo}..{hi}; the teacher stopped at epoch {self.record['epochs_run']})")
            if cfg["distill"].get("init_from", "pool") == "pool" and cfg["method"] in SUMMARY_METHODS:
                warnings.warn(self.pool_note)  # (a run that never draws from the pool need not hear of it)
        if not self.pool:
            self.pool = [self.model.state_dict()]
            self.pool_note = (self.pool_note or "") + "; the pool is empty, learners start from the teacher itself"

    def _load(self, path: Path, device) -> dict:
        """A checkpoint of the teacher's run, or one line saying it is damaged and what to do."""
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # truncated, overwritten, not a checkpoint at all
            raise TrainingError(f"teacher checkpoint {path} cannot be read ({type(exc).__name__}); move the "
                                f"teacher's run directory {self.run_dir} away to train it again") from exc

    @property
    def item_embedding(self) -> torch.Tensor:
        return self.model.item_embedding.weight.detach()  # (|V|+1, d)


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
    order = torch.randperm(num_windows, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return [order[i:i + windows_per_batch] for i in range(0, num_windows, windows_per_batch)]


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63 - 1)


# -------------------------------------------------------------------- run
def distill(cfg: dict, report=None) -> Path:
    """One config -> one record. Returns the record's path.

    report: called as ``report({"step": ..., "valid_MRR@10": ...})`` after each validation
        of the summary (Ray Tune's schedulers read it); None to report nothing.
    """
    check_config(cfg)
    sig = records.signature(cfg)
    run_dir = run_dir_for(cfg, sig)
    if records.is_complete(run_dir):
        log.info("complete run found, nothing to do: %s", run_dir)
        return run_dir / records.RECORD_NAME
    with records.exclusive(run_dir):  # the same config launched twice: the second waits, then skips
        if records.is_complete(run_dir):
            return run_dir / records.RECORD_NAME
        return _distill(cfg, sig, run_dir, report)


def _distill(cfg: dict, sig: str, run_dir: Path, report) -> Path:
    timer = records.Timer()
    device = setup_runtime(cfg)
    torch.manual_seed(cfg["seed"])
    with timer("data"):
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))

    record = records.new_record("distill", cfg, sig)
    record.update(method=cfg["method"], dataset={"name": data.name, "sha256": data.sha256, "stats": data.stats})
    method = cfg["method"]
    teacher = None
    if method in SUMMARY_METHODS or cfg["evaluation"]["protocol"] == "paper":
        with timer("teacher"):
            teacher = Teacher(cfg, device, data.num_items)
        record["teacher"] = {"run": str(teacher.run_dir), "signature": teacher.record["signature"],
                             "test": teacher.record["metrics"]["test"], "pool_size": len(teacher.pool),
                             "pool_note": teacher.pool_note}
    run_dir.mkdir(parents=True, exist_ok=True)
    records.write_text(run_dir / "config.json", records.canonical_json(cfg) + "\n")

    from .summary import Summary

    try:
        if method in SUMMARY_METHODS:
            summary_dir, summary_sig = summary_dir_for(cfg)
            with records.exclusive(summary_dir):  # runs evaluating one summary distil it once
                cached = _cached_summary(summary_dir, device, teacher)
                if cached is not None:
                    summary, info = cached
                    info = {**info, "cached": True}
                else:
                    with timer("distill"):
                        summary, info = learn_summary(cfg, data, teacher, summary_dir, device, report)
                    # info["seconds"]: the outer loop's time over every attempt (checkpointed), not
                    # this process's alone; up to checkpoint_every steps lost to a kill are not in it
                    summary.save(summary_dir / "summary.pt")
                    summary.export_inter(summary_dir / "summary.inter", item_ids=data.item_ids)
                    records.write_json(summary_dir / "distill.json", info)
                    (summary_dir / "state.pt").unlink(missing_ok=True)
                    info = {**info, "cached": False}
            for name in ("summary.pt", "summary.inter"):  # the run directory is self-contained
                with records.atomic_path(run_dir / name) as tmp:
                    shutil.copyfile(summary_dir / name, tmp)
            # the per-step history stays in the summary's distill.json: records stay small
            record["distill"] = {k: v for k, v in info.items() if k != "history"}
            record["summary"] = {"kind": summary.kind, "parameters": summary.num_parameters(),
                                 "storage": summary.storage(), "file": "summary.pt", "inter": "summary.inter",
                                 "dir": str(summary_dir), "signature": summary_sig}
            S = summary.distributions().detach()
        elif method in ("random", "longest"):
            mu, zeta = cfg["summary"]["mu"], cfg["summary"]["zeta"]
            seqs = (baselines.random_sequences(data.train, mu, zeta, cfg["seed"]) if method == "random"
                    else baselines.longest_sequences(data.train, mu, zeta))
            baselines.export_inter(seqs, run_dir / "summary.inter", item_ids=data.item_ids)
            record["summary"] = {"kind": method, "sequences": len(seqs),
                                 "interactions": int(sum(len(s) for s in seqs)), "inter": "summary.inter"}

        with timer("evaluation"):
            evaluations, per_user, train_runs = [], [], []
            ev = cfg["evaluation"]
            for name in ev["models"]:
                options = model_options(model_config(name, cfg))
                for seed in ev["seeds"]:
                    kwargs = dict(epochs=ev["epochs"], batch_size=ev["batch_size"], lr=ev["lr"],
                                  weight_decay=ev["weight_decay"], seed=seed, max_len=cfg["max_len"],
                                  select=ev["select"], eval_every=ev.get("eval_every", 1),
                                  eval_protocols=tuple(cfg["eval"]["protocols"]),
                                  exclude_history=cfg["eval"]["exclude_history"], device=device)
                    if method != "full":
                        if method in SUMMARY_METHODS:
                            paper = ev["protocol"] == "paper"
                            result = summary_training.train_on_summary(
                                S, data, name, options, alt=cfg["distill"]["inner"]["alt"],
                                alt_low=cfg["distill"]["inner"]["alt_low"], protocol=ev["protocol"],
                                alt_weight=cfg["distill"]["inner"].get("alt_weight", 1.0),
                                teacher_item_embedding=teacher.item_embedding if paper else None, **kwargs)
                        else:
                            result = summary_training.train_on_sequences(seqs, data, name, options, **kwargs)
                        splits = {"valid": result.valid, "test": result.test}
                        metrics = {s: r.metrics for s, r in splits.items()}
                        seconds, best_epoch = result.seconds, result.best_epoch
                        curve = result.validation_curve()
                        frames = [r.to_frame().assign(split=s) for s, r in splits.items()]
                    else:  # full data: a full-data training run per learner and seed
                        full_cfg = {**teacher_config(cfg), "seed": seed, "model": model_config(name, cfg)}
                        full_record_path = train_full(full_cfg)
                        full = json.loads(full_record_path.read_text())
                        metrics, seconds, best_epoch = full["metrics"], full["timings"]["total"], full["best_epoch"]
                        curve = None  # in the full-data run's own record (its history)
                        train_runs.append(str(full_record_path.parent))
                        frames = [pd.read_parquet(full_record_path.parent / full["per_user"])]
                    evaluations.append({"model": name, "seed": seed, "protocol": ev["protocol"],
                                        "metrics": metrics, "best_epoch": best_epoch, "seconds": round(seconds, 3),
                                        "valid_curve": curve})
                    per_user.append(pd.concat(frames, ignore_index=True).assign(model=name, seed=seed))
    except TrainingError as exc:
        record.update(status="failed", error=str(exc), timings=timer.as_dict(), peak_memory_mb=records.peak_rss_mb())
        records.write_record(run_dir, record)
        raise

    with records.atomic_path(run_dir / "per_user.parquet") as tmp:
        pd.concat(per_user, ignore_index=True).to_parquet(tmp, index=False)
    record.update(
        status="complete",
        metrics=mean_metrics([e["metrics"] for e in evaluations if e["model"] == cfg["evaluation"]["models"][0]]),
        metrics_by_model={name: mean_metrics([e["metrics"] for e in evaluations if e["model"] == name])
                          for name in cfg["evaluation"]["models"]},
        evaluations=evaluations,
        train_runs=train_runs,
        per_user="per_user.parquet",
        timings=timer.as_dict(),
        peak_memory_mb=records.peak_rss_mb(),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return records.write_record(run_dir, record)


def mean_metrics(results: list[dict]) -> dict:
    """Mean over seeds of {split: {protocol: {metric: value}}}."""
    if not results:
        return {}
    return {split: {protocol: {m: float(np.mean([r[split][protocol][m] for r in results]))
                               for m in results[0][split][protocol]}
                    for protocol in results[0][split]}
            for split in results[0]}


# ------------------------------------------------------- the bi-level loop
class BilevelEngine:
    """The outer step of Algorithm 1, for a summary, a learner and a teacher.

    ``teacher`` needs ``model`` (eval mode), ``pool`` (state dicts) and ``item_embedding``.
    """

    def __init__(self, cfg: dict, data, teacher, device: torch.device):
        from .summary import build_summary

        s, d = cfg["summary"], cfg["distill"]
        self.cfg, self.d, self.outer, self.seed = cfg, d, d["outer"], cfg["seed"]
        self.teacher = teacher
        self.summary = build_summary(SUMMARY_METHODS[cfg["method"]], s["mu"], s["zeta"], data.num_items,
                                     item_factor=teacher.item_embedding[1:], d1=s["d1"], d2=s["d2"],
                                     latent_dim=s["latent_dim"],
                                     generator=torch.Generator().manual_seed(self.seed)).to(device)
        self.learner = build_model(cfg["model"]["name"], data.num_items, max_len=cfg["max_len"],
                                   **model_options(cfg["model"])).to(device)
        self.inner = InnerLoop(self.learner, InnerConfig(**inner_config_kwargs(cfg)))
        self.objective = _OuterObjective(self.learner)
        self.frozen_E = teacher.item_embedding if d["inner"]["embedding"] == "frozen" else None

        # Real data: windows of ζ items, every position a next-item example.
        x, y = training_windows(data.train, cfg["max_len"])
        self.x, self.y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.targets_per_window = float((self.y != 0).sum()) / len(self.y)
        self.windows_per_batch = max(1, round(self.outer["batch_size"] / self.targets_per_window))
        self.batches_per_epoch = math.ceil(len(self.x) / self.windows_per_batch)
        self.total_steps = self.outer["epochs"] * self.batches_per_epoch
        with torch.no_grad():  # the teacher's features at every position, once
            self.t_feats = torch.cat([teacher.model(self.x[i:i + 512]) for i in range(0, len(self.x), 512)])

        self.opt = Adam(self.summary.parameters(), lr=self.outer["lr"], weight_decay=self.outer["weight_decay"])
        self.sched = CosineSchedule(self.opt, self.total_steps)
        self._pool_index = None

    def step(self, step: int) -> dict:
        """Outer step number ``step`` (0-based): everything random is seeded from (seed, step)."""
        d, outer = self.d, self.outer
        epoch, in_epoch = divmod(step, self.batches_per_epoch)
        batch = real_batches(len(self.x), self.windows_per_batch, epoch, self.seed)[in_epoch]
        torch.manual_seed(step_seed(self.seed, step))  # dropout
        g = torch.Generator().manual_seed(step_seed(self.seed, step))  # init draw, M, batches, ALT
        if d["init"] == "per_step" or self._pool_index is None or in_epoch == 0:
            self._pool_index = int(torch.randint(len(self.teacher.pool), (1,), generator=g))
        if d.get("init_from", "pool") == "scratch":  # a freshly initialised learner, as evaluation trains
            init = self._fresh_init(self._pool_index)
        else:
            init = dict(self.teacher.pool[self._pool_index])
        if self.frozen_E is not None:
            init[EMBEDDING] = self.frozen_E
        M = int(torch.randint(d["window"], d["steps"] + 1, (1,), generator=g))
        xb, yb = self.x[batch], self.y[batch]

        sampled = None  # every loss over all |V| items, or over a sampled subset (td3.candidates)
        if d.get("sampled_items", 0):
            own = torch.Generator().manual_seed(step_seed(self.seed, step) ^ 0x5A3D)  # leaves g's draws as they are
            sampled = draw_candidates(yb[yb != 0], self.learner.num_items, d["sampled_items"], own).to(self.x.device)
            S = self.summary.distributions(items=sampled.items, log_weight=sampled.log_weight)  # (μ, ζ, k)
        else:
            S = self.summary.distributions()  # (μ, ζ, |V|): once per outer step
        self.learner.train(d["inner"]["dropout"])
        try:
            params = self.inner.run(S, init, steps=M, window=d["window"], generator=g, candidates=sampled)
        except TrainingError as exc:
            raise TrainingError(f"{exc} of outer step {step + 1}") from exc
        self.learner.train(outer["learner_dropout"])
        ce, fsa = functional_call(self.objective, {f"model.{k}": v for k, v in params.items()},
                                  (xb, yb, self.t_feats[batch][yb != 0], sampled))
        loss = outer["ce_weight"] * ce + (outer["fsa_weight"] * fsa if outer["fsa"] else 0.0)
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite outer loss (ce={ce.item()}, fsa={fsa.item()}) at outer step {step + 1}")
        self.opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.summary.parameters(), outer["clip"])
        if not torch.isfinite(norm):
            raise TrainingError(f"non-finite meta-gradient (norm {norm.item()}) at outer step {step + 1}")
        self.opt.step()
        self.sched.step()
        return {"step": step + 1, "ce": round(ce.item(), 5), "fsa": round(fsa.item(), 5),
                "grad_norm": round(norm.item(), 5), "M": M, "init": self._pool_index}

    def _fresh_init(self, index: int) -> dict:
        """A fresh learner's weights: ``len(pool)`` fixed draws, so that a per-epoch init
        and a resumed run see the same ones."""
        if not hasattr(self, "_fresh"):
            self._fresh = {}
        if index not in self._fresh:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(step_seed(self.seed, 10_000_019 + index))
                model = build_model(self.cfg["model"]["name"], self.learner.num_items, max_len=self.cfg["max_len"],
                                    **model_options(self.cfg["model"]))
            self._fresh[index] = {k: v.to(self.x.device) for k, v in model.state_dict().items()}
        return dict(self._fresh[index])

    def state_dict(self) -> dict:
        return {"summary": self.summary.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        self.summary.load_state_dict(saved["summary"])
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])


def learn_summary(cfg: dict, data, teacher: Teacher, summary_dir: Path, device: torch.device, report=None):
    """Algorithm 1 with validation and checkpoints (``summary_dir/state.pt``).
    Returns the best summary and a description of the run."""
    d, seed = cfg["distill"], cfg["seed"]
    engine = BilevelEngine(cfg, data, teacher, device)
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
        paper = d["validate_protocol"] == "paper"
        result = summary_training.train_on_summary(
            summary.distributions().detach(), data, cfg["model"]["name"], model_options(cfg["model"]),
            epochs=d["validate_epochs"], batch_size=d["validate_batch_size"], lr=d["validate_lr"],
            weight_decay=d["validate_weight_decay"], alt=d["inner"]["alt"], alt_low=d["inner"]["alt_low"],
            alt_weight=d["inner"].get("alt_weight", 1.0), seed=seed, max_len=cfg["max_len"], select="last",
            eval_protocols=(summary_training.SELECT_PROTOCOL,), protocol=d["validate_protocol"],
            teacher_item_embedding=teacher.item_embedding if paper else None, device=device,
            stoppable=False)   # a stop waits for the outer step's checkpoint
        return result.valid.metrics[summary_training.SELECT_PROTOCOL][summary_training.SELECT_METRIC]

    step_seconds = []
    bar = tqdm(total=engine.total_steps, initial=state["step"], desc=f"distill {data.name}/{cfg['method']}",
               disable=not cfg.get("progress", True), dynamic_ncols=True, unit="step")
    try:
        state["attempts"] = state.get("attempts", 0) + 1
        for step in range(state["step"], engine.total_steps):
            t0 = time.perf_counter()
            entry = engine.step(step)
            step_seconds.append(time.perf_counter() - t0)
            state["history"].append(entry)
            state["step"] = step + 1
            last = state["step"] == engine.total_steps
            if state["step"] % d["validate_every"] == 0 or last:
                score = validate()
                state["validations"].append({"step": state["step"], "valid_MRR@10": score})
                if report is not None:
                    report({"step": state["step"], "valid_MRR@10": score})
                if score > state["best_score"]:
                    state.update(best_score=score, best_step=state["step"])
                    best_state = {k: v.detach().clone() for k, v in summary.state_dict().items()}
            # wall time of the distillation over every attempt (a resumed run counts its earlier ones)
            state["seconds"] = state.get("seconds", 0.0) + time.perf_counter() - t0
            if (state["step"] % d["checkpoint_every"] == 0 or stop.requested()) and not last:
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


def headline(record: dict) -> list[str]:
    """The figures a run ends with: test NDCG@10 and HR@10 per evaluated learner, under the
    paper's ranking protocol and full ranking."""
    lines = []
    for model, metrics in (record.get("metrics_by_model") or {}).items():
        test = metrics.get("test", {})
        parts = [f"{p} NDCG@10 {test[p]['NDCG@10']:.4f} HR@10 {test[p]['HR@10']:.4f}"
                 for p in ("recbole100", "full") if p in test]
        lines.append(f"{record.get('method')} {model}: " + ", ".join(parts))
    return lines


@hydra_command("distill")
def _main(cfg: dict) -> None:
    path = distill(cfg)
    record = records.read_record(path.parent) or {}
    for line in headline(record):
        print(line, flush=True)
    print(path, flush=True)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
