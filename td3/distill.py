"""Dataset distillation: ``python -m td3.distill [method=td3] [dataset=ml-100k] ...``.

One run = one method at one seed, ending in one record. What the learners are trained on
depends on the method (``SOURCES``, one entry per method):
- ``td3`` / ``farzi`` / ``naive``: a summary (Tucker, Farzi's latent+decoder, free logits)
  learnt by bi-level optimisation (``td3.engine``; docs/method.md, "The bi-level loop"),
  or found where another run of the same summary left it;
- ``random`` / ``longest``: real sequences at the same interaction budget μ·ζ;
- ``full``: the full data (a full-data training run per learner and seed).
Then each evaluation learner, at each evaluation seed, is trained on it and evaluated
(docs/method.md, "Using a summary"). The teacher and its init pool are a full-data
training run (``td3.teacher``), found by its signature or trained on demand.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from . import baselines, layout, records, summary_training
from .cli import hydra_command
from .config import SUMMARY_METHODS, RunConfig, dataset_options, model_options
from .data import load_dataset
from .data.formats import write_inter
from .device import setup_runtime
from .engine import learn_summary
from .errors import DamagedFileError, TrainingError
from .files import atomic_path
from .teacher import Teacher, teachers_of
from .train import train as train_full

log = logging.getLogger("td3.distill")


# -------------------------------------------------------------------- run
def distill(cfg: dict, report=None) -> Path:
    """One config -> one record. Returns the record's path.

    report: called as ``report({"step": ..., "valid_MRR@10": ...})`` after each validation
        of the summary (Ray Tune's schedulers read it); None to report nothing.
    """
    run = RunConfig.of(cfg).check()
    place = layout.distillation(cfg)
    return layout.run_once(place, lambda: _distill(run, place.signature, place.dir, report))


@dataclass
class Context:
    """What every step of one run shares."""
    run: RunConfig
    data: object
    teacher: Teacher | None
    run_dir: Path
    record: dict
    timer: records.Timer
    device: torch.device
    report: Callable[[dict], None] | None


@dataclass
class Trained:
    """One evaluation learner at one seed, trained on the method's data and evaluated."""
    metrics: dict            # {split: {protocol: {metric: value}}}
    seconds: float
    best_epoch: int | None
    curve: list | None       # validation curve (None: in the full-data run's own record)
    per_user: pd.DataFrame
    train_run: str | None = None


#: ``Trainer(name, seed)``: one evaluation learner trained on what the method provides.
Trainer = Callable[[str, int], Trained]


def _distill(run: RunConfig, sig: str, run_dir: Path, report) -> Path:
    timer = records.Timer()
    device = setup_runtime(run.device, run.threads)
    torch.manual_seed(run.seed)
    with timer("data"):
        data = load_dataset(run.dataset.name, **dataset_options(run.dataset))

    record = records.new_record("distill", run.raw, sig)
    record.update(method=run.method, dataset={"name": data.name, "sha256": data.sha256, "stats": data.stats})
    teacher = None
    if run.teachers_needed:   # the run's model's; the other inner learners' when the summary is distilled
        with timer("teacher"):
            teacher = Teacher(run, device, data.num_items)
        record["teacher"] = teacher.describe()
    run_dir.mkdir(parents=True, exist_ok=True)
    records.write_bytes(run_dir / "config.json", records.config_bytes(run.raw))

    ctx = Context(run, data, teacher, run_dir, record, timer, device, report)
    try:
        trainer = SOURCES[run.method](ctx)
        with timer("evaluation"):
            evaluations, per_user, train_runs = [], [], []
            for name in run.evaluation.models:
                for seed in run.evaluation.seeds:
                    trained = trainer(name, seed)
                    evaluations.append({"model": name, "seed": seed, "protocol": run.evaluation.protocol,
                                        "metrics": trained.metrics, "best_epoch": trained.best_epoch,
                                        "seconds": round(trained.seconds, 3), "valid_curve": trained.curve})
                    per_user.append(trained.per_user.assign(model=name, seed=seed))
                    log.info("evaluated %s", evaluated(run, name, seed, trained, len(evaluations)))
                    if trained.train_run:
                        train_runs.append(trained.train_run)
    except TrainingError as exc:
        record.update(status="failed", error=str(exc), timings=timer.as_dict(), peak_memory_mb=records.peak_rss_mb())
        records.write_record(run_dir, record)
        raise

    with atomic_path(run_dir / "per_user.parquet") as tmp:
        pd.concat(per_user, ignore_index=True).to_parquet(tmp, index=False)
    models = run.evaluation.models
    record.update(
        status="complete",
        metrics=mean_over_seeds([e["metrics"] for e in evaluations if e["model"] == models[0]]),
        metrics_by_model={name: mean_over_seeds([e["metrics"] for e in evaluations if e["model"] == name])
                          for name in models},
        evaluations=evaluations,
        train_runs=train_runs,
        per_user="per_user.parquet",
        timings=timer.as_dict(),
        peak_memory_mb=records.peak_rss_mb(),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return records.write_record(run_dir, record)


def mean_over_seeds(results: list[dict]) -> dict:
    """Mean over evaluation seeds of {split: {protocol: {metric: value}}}."""
    if not results:
        return {}
    return {split: {protocol: {m: float(np.mean([r[split][protocol][m] for r in results]))
                               for m in results[0][split][protocol]}
                    for protocol in results[0][split]}
            for split in results[0]}


# ------------------------------------------- what the learners train on
def _training_options(run: RunConfig, seed: int, device) -> dict:
    """The evaluation settings every learner trained on a summary or on sequences shares."""
    ev = run.evaluation
    return dict(epochs=ev.epochs, batch_size=ev.batch_size, lr=ev.lr, weight_decay=ev.weight_decay, seed=seed,
                max_len=run.max_len, select=ev.select, eval_every=ev.eval_every,
                eval_protocols=run.eval.protocols, exclude_history=run.eval.exclude_history, device=device)


def _trained(result: summary_training.SummaryTrainingResult) -> Trained:
    splits = {"valid": result.valid, "test": result.test}
    return Trained(metrics={s: r.metrics for s, r in splits.items()}, seconds=result.seconds,
                   best_epoch=result.best_epoch, curve=result.validation_curve(),
                   per_user=pd.concat([r.to_frame().assign(split=s) for s, r in splits.items()], ignore_index=True))


def learned_summary(ctx: Context) -> Trainer:
    """TD3, Farzi, naive: the summary this config distils, learnt now or found in its cache."""
    run, record = ctx.run, ctx.record
    summary_place = layout.summary(run.raw)
    summary_dir, summary_sig = summary_place.dir, summary_place.signature
    with records.exclusive(summary_dir):  # runs evaluating one summary distil it once
        cached = _cached_summary(summary_dir, ctx.device, ctx.teacher)
        if cached is not None:
            summary, info = cached
            info = {**info, "cached": True}
        else:
            with ctx.timer("teacher"):  # several inner learners: a teacher (and pool) of each architecture
                teachers = teachers_of(run, ctx.device, ctx.data.num_items, run.inner_learners[1:])
            with ctx.timer("distill"):
                summary, info = learn_summary(run, ctx.data, ctx.teacher, summary_dir, ctx.device, ctx.report,
                                              teachers=teachers)
            if teachers:  # in distill.json, so that every run evaluating the summary says it
                info["other_teachers"] = {name: t.describe() for name, t in teachers.items()}
            # info["seconds"]: the outer loop's time over every attempt (checkpointed), not
            # this process's alone; up to checkpoint_every steps lost to a kill are not in it
            summary.save(summary_dir / "summary.pt")
            summary.export_inter(summary_dir / "summary.inter", item_ids=ctx.data.item_ids)
            records.write_json(summary_dir / layout.SUMMARY_MARKER, info)
            (summary_dir / "state.pt").unlink(missing_ok=True)
            info = {**info, "cached": False}
    for name in ("summary.pt", "summary.inter"):  # the run directory is self-contained
        with atomic_path(ctx.run_dir / name) as tmp:
            shutil.copyfile(summary_dir / name, tmp)
    # the per-step history stays in the summary's distill.json: records stay small
    record["distill"] = {k: v for k, v in info.items() if k != "history"}
    record["summary"] = {"kind": summary.kind, "parameters": summary.num_parameters(),
                         "storage": summary.storage(), "file": "summary.pt", "inter": "summary.inter",
                         "dir": str(summary_dir), "signature": summary_sig,
                         "statistics": summary.statistics()}
    S = summary.distributions().detach()
    inner = run.distill.inner
    teacher_table = ctx.teacher.item_embedding if run.evaluation.protocol == "paper" else None

    def train(name: str, seed: int) -> Trained:
        return _trained(summary_training.train_on_summary(
            S, ctx.data, name, model_options(run.learner(name)), alt=inner.alt, alt_low=inner.alt_low,
            alt_weight=inner.alt_weight, bidirectional_loss=inner.bidirectional_loss,
            protocol=run.evaluation.protocol,
            teacher_item_embedding=teacher_table, **_training_options(run, seed, ctx.device)))
    return train


def real_sequences(ctx: Context) -> Trainer:
    """Random and Longest: real sequences at the summary's interaction budget μ·ζ."""
    run = ctx.run
    mu, zeta = run.summary.mu, run.summary.zeta
    seqs = (baselines.random_sequences(ctx.data.train, mu, zeta, run.seed) if run.method == "random"
            else baselines.longest_sequences(ctx.data.train, mu, zeta))
    write_inter(seqs, ctx.run_dir / "summary.inter", item_ids=ctx.data.item_ids)
    ctx.record["summary"] = {"kind": run.method, "sequences": len(seqs),
                             "interactions": int(sum(len(s) for s in seqs)), "inter": "summary.inter"}

    def train(name: str, seed: int) -> Trained:
        return _trained(summary_training.train_on_sequences(
            seqs, ctx.data, name, model_options(run.learner(name)), **_training_options(run, seed, ctx.device)))
    return train


def full_data(ctx: Context) -> Trainer:
    """Full-Data: a full-data training run per learner and seed (found by its signature or trained)."""
    run = ctx.run

    def train(name: str, seed: int) -> Trained:
        path = train_full({**run.teacher(), "seed": seed, "model": run.learner(name)})
        full = json.loads(path.read_text())
        return Trained(metrics=full["metrics"], seconds=full["timings"]["total"], best_epoch=full["best_epoch"],
                       curve=None, per_user=records.read_per_user(path.parent, full["per_user"]),
                       train_run=str(path.parent))
    return train


#: What each method's learners are trained on.
SOURCES: dict[str, Callable[[Context], Trainer]] = {
    **{method: learned_summary for method in SUMMARY_METHODS},
    "random": real_sequences, "longest": real_sequences, "full": full_data}


def _cached_summary(summary_dir: Path, device, teacher) -> tuple | None:
    """The summary another run already distilled in ``summary_dir`` with its ``distill.json``,
    or None when there is none or it cannot be read: a damaged cache (a truncated or
    overwritten file) is distilled again, which gives the same bytes, after one warning. A
    readable summary built on another teacher item table stays an error (the teacher's runs
    disagree: something is wrong that distilling again would hide)."""
    marker = summary_dir / layout.SUMMARY_MARKER  # written last: the summary is complete
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


# ------------------------------------------------------ what a run reports
def evaluated(run: RunConfig, name: str, seed: int, trained: Trained, done: int) -> str:
    """The log line of one learner evaluated (a line each, so that a batch job's log shows
    where a long evaluation stands)."""
    test = trained.metrics["test"]
    protocol = next(iter(test))
    total = len(run.evaluation.models) * len(run.evaluation.seeds)
    return (f"{name} (seed {seed}, {done} of {total}): test NDCG@10 {test[protocol]['NDCG@10']:.4f} ({protocol}), "
            f"best epoch {trained.best_epoch}, {trained.seconds:.0f} s")


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
    # A launcher's run (td3.run.run), with the error raised for the command line to report;
    # an impossible config is refused first, before anything is written.
    from .run import run

    RunConfig.of(cfg).check()
    run(cfg, raise_errors=True)
    place = layout.distillation(cfg)
    for line in headline(records.read_record(place.dir) or {}):
        print(line, flush=True)
    print(place.record, flush=True)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
