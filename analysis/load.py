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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

SUMMARY_METHODS = ("td3", "farzi", "naive")
#: Ranking protocols under the names records used before they were renamed.
LEGACY_PROTOCOLS = {"uni100": "unseen100"}
METHOD_LABELS = {"td3": "TD3", "farzi": "Farzi", "naive": "Naive", "random": "Random", "longest": "Longest",
                 "full": "Full-Data"}
#: Settings that make two runs of one method, dataset and size different experiments.
VARIANT_KEYS = ("d1", "d2", "fsa", "alt", "outer_lr", "inner_lr", "embedding", "init_from", "outer_epochs",
                "steps", "window", "eval_epochs", "teacher_seed")


def _get(d: dict, *path, default=None):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _parse(path: str) -> tuple[dict, list[dict]]:
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
        "steps": d.get("steps") if method in SUMMARY_METHODS else None,
        "window": d.get("window") if method in SUMMARY_METHODS else None,
        "eval_epochs": ev.get("epochs") if method not in ("full",) else None,
        "train_epochs": _get(cfg, "train", "epochs") if method in SUMMARY_METHODS or method == "full" else None,
        "teacher_seed": cfg.get("teacher_seed") if method in SUMMARY_METHODS else None,
        "distill_seconds": _get(rec, "distill", "seconds"),
        "distill_cached": _get(rec, "distill", "cached"),
        "seconds_per_outer_step": _get(rec, "distill", "seconds_per_outer_step"),
        "peak_memory_mb": rec.get("peak_memory_mb"),
        "total_seconds": _get(rec, "timings", "total"),
    }
    values = []
    for e in rec.get("evaluations") or []:
        for split, by_protocol in (e.get("metrics") or {}).items():
            for protocol, metrics in (by_protocol or {}).items():
                for metric, value in (metrics or {}).items():
                    values.append({"run_dir": run_dir, "model": e.get("model"), "learner_seed": e.get("seed"),
                                   "split": split, "protocol": LEGACY_PROTOCOLS.get(protocol, protocol),
                                   "metric": metric, "value": value,
                                   "train_seconds": e.get("seconds")})
    return run, values


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


def _parse_many(paths: list[str]) -> tuple[list[dict], list[dict]]:
    runs, values = [], []
    for p in paths:
        if not os.path.exists(p):
            runs.append({"run_dir": os.path.dirname(p), "status": "no record", "error": "no record.json"})
            continue
        r, v = _parse(p)
        runs.append(r)
        values.extend(v)
    return runs, values


def load(results: str | Path, workers: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, values) of every run directory under ``results``."""
    paths = find_records(results)
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(paths) > 2000:
        chunks = [paths[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_parse_many, chunks))
    else:
        parts = [_parse_many(paths)]
    runs = pd.DataFrame([r for part in parts for r in part[0]])
    values = pd.DataFrame([v for part in parts for v in part[1]])
    if runs.empty:
        runs = pd.DataFrame(columns=["run_dir", "status", "method", "dataset", "size", "seed", "summary_protocol"])
    if values.empty:
        values = pd.DataFrame(columns=["run_dir", "model", "learner_seed", "split", "protocol", "metric", "value"])
    return runs, values


def _plain(value):
    """16 for 16.0: a column holding NaN for other methods turns its integers into floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def variant_labels(runs: pd.DataFrame, group: list[str]) -> pd.Series:
    """For each run, the variant settings that differ from the most common ones of its
    ``group`` (e.g. dataset × method): '' for the usual run, 'd1=16' for a rank study."""
    labels = pd.Series("", index=runs.index, dtype=object)
    for _, idx in runs.groupby(group, dropna=False).groups.items():
        sub = runs.loc[idx]
        parts = pd.Series([[] for _ in range(len(sub))], index=sub.index, dtype=object)
        for key in VARIANT_KEYS:
            if key not in sub or sub[key].isna().all():
                continue
            mode = sub[key].astype(str).mode().iloc[0]
            for i in sub.index[sub[key].astype(str) != mode]:
                parts[i].append(f"{key}={_plain(sub.at[i, key])}")
        labels.loc[sub.index] = [" ".join(p) for p in parts]
    return labels
