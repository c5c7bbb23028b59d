"""Run identity and the results layout: what a run is called and where it lives, from the
resolved config alone (as facebookresearch/dora's XP: a run is its config's signature).

- ``distillation(cfg)``, ``training(cfg)``, ``summary(cfg)``: a ``Place``, the signature and
  directory of a distillation run, of a full-data training run (a teacher, or a Full-Data
  evaluation) and of a learned summary (shared by every evaluation of it);
- ``is_done(cfg)``: whether a distillation's record is complete;
- ``run_once(place, work)``: lock-and-skip, so that a config launched twice runs once.

Kept apart from the engine so that what only asks "is this run done?" (the sweeper before it
launches anything, Ray Tune's driver, the audit) reads records without importing torch:
standard library and ``td3.records`` only. The failed record a launcher writes for a job
that died is ``td3.run.record_failure``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import records

log = logging.getLogger("td3.layout")

#: A summary directory's description of its distillation, written last: its presence marks a
#: complete summary (the cache's test; the audit's; restored last by ``td3.restore``).
SUMMARY_MARKER = "distill.json"

def snapshot_path(summary_dir: Path, step: int) -> Path:
    """Where ``distill.snapshots`` keeps the summary validated after outer step ``step``."""
    return summary_dir / "snapshots" / f"step-{step:05d}.pt"


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


# --------------------------------------------------------------- places
@dataclass(frozen=True)
class Place:
    """A run's identity and home: the signature of its config and its directory."""
    signature: str
    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / records.RECORD_NAME

    def is_done(self) -> bool:
        """Whether its record is complete (read only: no torch, no engine)."""
        return records.is_complete(self.dir)


def distillation(cfg: dict) -> Place:
    """A distillation run (``python -m td3.distill``, a sweep's grid point)."""
    sig = records.signature(cfg)
    return Place(sig, run_dir_for(cfg, sig))


def training(cfg: dict) -> Place:
    """A full-data training run (``python -m td3.train``)."""
    sig = records.signature(cfg)
    return Place(sig, train_dir_for(cfg, sig))


def summary(cfg: dict) -> Place:
    """The learned summary of a distillation's config."""
    path, sig = summary_dir_for(cfg)
    return Place(sig, path)


def is_done(cfg: dict) -> bool:
    """Whether the distillation of ``cfg`` is complete: a sweep's driver asks it of every grid
    point in a fraction of a second."""
    return distillation(cfg).is_done()


def run_once(place: Place, work: Callable[[], Path]) -> Path:
    """``work()`` unless the run is complete; under the run's lock, so that the same config
    launched twice (two sweeps, a requeued job) runs once: the second waits, then skips.
    Returns the record's path."""
    if place.is_done():
        log.info("complete run found, nothing to do: %s", place.dir)
        return place.record
    with records.exclusive(place.dir):
        if place.is_done():
            return place.record
        return work()
