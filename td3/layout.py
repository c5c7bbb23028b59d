"""Where a distillation run and its summary live on disk, from the resolved config alone.

Kept apart from ``td3.distill`` so that what only asks "is this run done?" (the sweeper
before it launches anything, ``td3.run.is_done``, Ray Tune's driver) reads records without
importing torch and the distillation engine: standard library and ``td3.records`` only.
"""
from __future__ import annotations

from pathlib import Path

from . import records

#: What a summary depends on: everything but how it is evaluated afterwards.
SUMMARY_KEYS = ("method", "seed", "teacher_seed", "max_len", "dataset", "model", "train", "summary", "distill")


def summary_dir_for(cfg: dict) -> tuple[Path, str]:
    """The cached summary of a config: one distillation serves every evaluation of it
    (other architectures, protocols, budgets, seeds)."""
    sig = records.signature({k: cfg[k] for k in SUMMARY_KEYS})
    s = cfg["summary"]
    name = f"{cfg['dataset']['name']}-{cfg['method']}-{s['mu']}x{s['zeta']}-{sig}"
    return Path(cfg["results_dir"]) / "summaries" / name, sig


def run_dir_for(cfg: dict, sig: str) -> Path:
    s = cfg["summary"]
    return Path(cfg["results_dir"]) / "distill" / (
        f"{cfg['dataset']['name']}-{cfg['method']}-{s['mu']}x{s['zeta']}-{sig}")


def train_dir_for(cfg: dict, sig: str) -> Path:
    """A full-data training run (a teacher, or a Full-Data evaluation)."""
    return Path(cfg["results_dir"]) / "train" / f"{cfg['dataset']['name']}-{cfg['model']['name']}-{sig}"
