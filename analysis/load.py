"""Records -> tables of numbers (pandas), reading nothing but the run directories.

``load(results)`` walks ``<results>/distill/*/record.json`` and returns

- ``runs``: one row per run directory: its status and error, and the config keys the tables
  group by (dataset, method, size, seed, the summary's evaluation protocol, the settings
  that make a variant: ranks, FSA, ALT, learning rates, ...), costs (distillation seconds,
  peak memory, training seconds);
- ``values``: one row per (run, evaluated model, learner seed, split, ranking protocol,
  metric) with the value in [0, 1]. Ranking protocols: ``recbole100`` (the paper's),
  ``unseen100``, ``full``; records written before ``recbole100`` existed hold ``unseen100``
  under its earlier name ``uni100`` and load as ``unseen100``.

Full-data runs are records of ``method=full``. Random, Longest and Full do not depend on the
summary-evaluation protocol: their ``summary_protocol`` is "-" and the tables show them
under both protocols, never mixed with summaries of the other protocol.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from td3.config import SUMMARY_METHODS  # light: the standard library only
#: Ranking protocols under the names records used before they were renamed.
LEGACY_PROTOCOLS = {"uni100": "unseen100"}
METHOD_LABELS = {"td3": "TD3", "farzi": "Farzi", "naive": "Naive", "random": "Random", "longest": "Longest",
                 "full": "Full-Data"}
#: Settings that make two runs of one method, dataset and size different experiments.
VARIANT_KEYS = ("d1", "d2", "fsa", "alt", "outer_lr", "inner_lr", "embedding", "init_from", "outer_epochs",
                "min_steps", "learn_lr", "bidirectional_loss", "steps", "window", "eval_epochs", "eval_lr",
                "teacher_seed", "learners", "validate_learners", "average_last")


def _get(d: dict, *path, default=None):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


#: The columns of ``values``, in order; ``_parse`` yields its rows as tuples of these.
VALUE_COLUMNS = ("run_dir", "model", "learner_seed", "split", "protocol", "metric", "value", "train_seconds")


def _parse(path: str, splits: tuple[str, ...] | None = None) -> tuple[dict, list[tuple]]:
    """One record: its ``runs`` row and its ``values`` rows (tuples in VALUE_COLUMNS order:
    a tuple per value costs a fraction of a dict, and 10,000 records hold half a million)."""
    run_dir = os.path.dirname(path)
    try:
        with open(path, "rb") as f:
            rec = json.loads(f.read())
    except (OSError, ValueError) as exc:
        return {"run_dir": run_dir, "status": "unreadable", "error": f"record.json: {exc}"}, []
    cfg = rec.get("config") or {}
    method = cfg.get("method", rec.get("method"))
    s, d, ev = cfg.get("summary", {}), cfg.get("distill", {}), cfg.get("evaluation", {})
    summary_protocol = ev.get("protocol", "scratch") if method in SUMMARY_METHODS else "-"
    run = {
        "run_dir": run_dir, "signature": rec.get("signature"), "status": rec.get("status"),
        "error": rec.get("error"), "method": method, "dataset": _get(cfg, "dataset", "name"),
        "mu": s.get("mu"), "zeta": s.get("zeta"), "size": f"{s.get('mu')}x{s.get('zeta')}",
        "interactions": (s.get("mu") or 0) * (s.get("zeta") or 0), "seed": cfg.get("seed"),
        "summary_protocol": summary_protocol, "models": ",".join(ev.get("models", [])),
        "sweep": _get(cfg, "sweep", "name"), "git": _get(rec, "git", "sha"),
        "d1": s.get("d1") if method == "td3" else None, "d2": s.get("d2") if method == "td3" else None,
        "fsa": _get(d, "outer", "fsa") if method in SUMMARY_METHODS else None,
        "alt": _get(d, "inner", "alt") if method in SUMMARY_METHODS else None,
        "outer_lr": _get(d, "outer", "lr") if method in SUMMARY_METHODS else None,
        "inner_lr": _get(d, "inner", "lr") if method in SUMMARY_METHODS else None,
        "embedding": _get(d, "inner", "embedding") if method in SUMMARY_METHODS else None,
        "init_from": d.get("init_from", "pool") if method in SUMMARY_METHODS else None,
        "outer_epochs": _get(d, "outer", "epochs") if method in SUMMARY_METHODS else None,
        "min_steps": _get(d, "outer", "min_steps", default=0) if method in SUMMARY_METHODS else None,
        "learn_lr": _get(d, "inner", "learn_lr", default=False) if method in SUMMARY_METHODS else None,
        "bidirectional_loss": (_get(d, "inner", "bidirectional_loss", default="cloze")
                               if method in SUMMARY_METHODS else None),
        "steps": d.get("steps") if method in SUMMARY_METHODS else None,
        "window": d.get("window") if method in SUMMARY_METHODS else None,
        "eval_epochs": ev.get("epochs") if method not in ("full",) else None,
        "eval_lr": ev.get("lr") if method not in ("full",) else None,   # a learner's on the summary
        "train_epochs": _get(cfg, "train", "epochs") if method in SUMMARY_METHODS or method == "full" else None,
        "teacher_seed": cfg.get("teacher_seed") if method in SUMMARY_METHODS else None,
        # several inner learners (distill.learners): their names, '' for the run's model alone
        "learners": "+".join(d.get("learners") or []) if method in SUMMARY_METHODS else None,
        # who picked the summary's best step: the run's model, or every inner learner
        "validate_learners": d.get("validate_learners", "model") if method in SUMMARY_METHODS else None,
        "average_last": d.get("average_last", 0.0) if method in SUMMARY_METHODS else None,
        "distill_seconds": _get(rec, "distill", "seconds"),
        "distill_cached": _get(rec, "distill", "cached"),
        "seconds_per_outer_step": _get(rec, "distill", "seconds_per_outer_step"),
        "peak_memory_mb": rec.get("peak_memory_mb"),
        "total_seconds": _get(rec, "timings", "total"),
    }
    values = []
    for e in rec.get("evaluations") or []:
        model, seed, seconds = e.get("model"), e.get("seed"), e.get("seconds")
        for split, by_protocol in (e.get("metrics") or {}).items():
            if splits is not None and split not in splits:
                continue
            for protocol, metrics in (by_protocol or {}).items():
                protocol = LEGACY_PROTOCOLS.get(protocol, protocol)
                values.extend((run_dir, model, seed, split, protocol, metric, value, seconds)
                              for metric, value in (metrics or {}).items())
    return run, values


#: The columns of ``runs``, as ``_parse`` writes them: the frame has every one even when no
#: record could be read (a run directory without a record has nothing but run_dir, status and
#: error), so that the tables find their columns, empty.
RUN_COLUMNS = ("run_dir", "signature", "status", "error", "method", "dataset", "mu", "zeta", "size",
               "interactions", "seed", "summary_protocol", "models", "sweep", "git", "d1", "d2", "fsa", "alt",
               "outer_lr", "inner_lr", "embedding", "init_from", "outer_epochs", "min_steps", "learn_lr", "bidirectional_loss",
               "steps", "window", "eval_epochs", "eval_lr", "train_epochs", "teacher_seed", "learners", "validate_learners", "average_last", "distill_seconds", "distill_cached", "seconds_per_outer_step",
               "peak_memory_mb", "total_seconds")


def find_records(results: str | Path) -> list[str]:
    base = Path(results) / "distill"
    if not base.is_dir():
        return []
    out = []
    with os.scandir(base) as entries:
        for entry in entries:
            if entry.is_dir():
                path = os.path.join(entry.path, "record.json")
                if os.path.exists(path):
                    out.append(path)
                else:
                    out.append(path)  # a run directory without a record: reported as missing
    return sorted(out)


def load(results: str | Path, splits: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, values) of every run directory under ``results``; ``values`` of the given
    ``splits`` only (default: all), e.g. ("test",) for the tables, which read no other.

    One process: parsing is mostly json.loads, and a pool's workers sent back every value
    pickled, which cost more than it saved on a machine whose cores are busy
    (docs/performance.md, "Tables from 10,000 run records")."""
    runs, values = [], []
    for path in find_records(results):
        if not os.path.exists(path):
            runs.append({"run_dir": os.path.dirname(path), "status": "no record", "error": "no record.json"})
            continue
        run, run_values = _parse(path, splits)
        runs.append(run)
        values.extend(run_values)
    return pd.DataFrame(runs, columns=list(RUN_COLUMNS)), pd.DataFrame(values, columns=list(VALUE_COLUMNS))


def _plain(value):
    """16 for 16.0: a column holding NaN for other methods turns its integers into floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def matching(runs: pd.DataFrame, where: list[str]) -> pd.Series:
    """Which ``runs`` rows hold every ``KEY=VALUE`` of ``where``, values compared as written
    on a command line (60 for 60.0, the empty string for a missing value). ``KEY=A,B,C``, as in
    a Hydra sweep, holds any of them (``seed=3,4,5``), or the value ``A,B,C`` itself."""
    keep = pd.Series(True, index=runs.index)
    for condition in where:
        key, sep, value = condition.partition("=")
        if not sep or key not in runs.columns:
            raise SystemExit(f"--where {condition!r}: expected KEY=VALUE with KEY one of: {', '.join(runs.columns)}")
        allowed = {value, *value.split(",")}
        keep &= runs[key].map(lambda v: ("" if pd.isna(v) else str(_plain(v))) in allowed)
    return keep


#: Variant settings labelled against a fixed value rather than their group's most common one:
#: the distilling learners are what Table 4's rows compare (a summary of the run's model alone
#: against one of several architectures), so a several-learner summary is always labelled
#: and a single-learner one never, however many runs of each a results root holds. BERT4Rec's
#: loss on a summary is labelled against the cloze, which every summary before the prefix loss
#: used, so that a root with more prefix runs than cloze ones does not relabel the cloze ones;
#: the validating learners against the run's model, and a learner's learning rate on the summary
#: against conf/evaluation's 0.005, and the kept summary against the best validated one (no
#: average): the defaults every earlier record had.
FIXED_USUAL = {"learners": "", "bidirectional_loss": "cloze", "validate_learners": "model", "eval_lr": "0.005",
               "average_last": "0"}


def variant_labels(runs: pd.DataFrame, group: list[str]) -> pd.Series:
    """For each run, the variant settings that differ from the usual ones of its ``group``
    (e.g. dataset × method): '' for the usual run, 'd1=16' for a rank study. Usual: the most
    common value in the group (``FIXED_USUAL``: a fixed one)."""
    labels = pd.Series("", index=runs.index, dtype=object)
    keys = [key for key in VARIANT_KEYS if key in runs]
    for _, idx in runs.groupby(group, dropna=False).groups.items():
        sub = runs.loc[idx, keys]  # the variant settings only: the other columns are not looked at
        parts = pd.Series([[] for _ in range(len(sub))], index=sub.index, dtype=object)
        for key in keys:
            if sub[key].isna().all():
                continue
            as_text = sub[key].map(lambda v: str(_plain(v)))  # 0 for 0.0: a column with NaN holds floats
            usual = FIXED_USUAL.get(key, as_text.mode().iloc[0])
            for i in sub.index[as_text != usual]:
                parts[i].append(f"{key}={_plain(sub.at[i, key])}")
        labels.loc[sub.index] = [" ".join(p) for p in parts]
    return labels
