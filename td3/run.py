"""One config -> one record: the single function every launcher calls.

Hydra's basic launcher, Submitit (SLURM or local processes) and Ray Tune all end in
``run(cfg)``; none of them needs logic the others lack. A run is identified by the
signature of its resolved config (``td3.records.signature``: the keys that cannot change
its results, such as the results root, threads, the launcher and the sweep's name, are left
out), so the same grid point launched by any launcher lands in the same directory:

- a complete record there: nothing is run (``status="skipped"``);
- a checkpoint there: the run resumes from it (a preempted or killed job);
- an error: the run's record says ``failed`` with the error, and ``run`` returns normally,
  so the sweep goes on (``python -m td3.distill`` asks for the error to be raised instead).
  Only the launcher's own exits (SystemExit, KeyboardInterrupt: Submitit's requeue on
  preemption, Ray stopping a trial) pass through.

Each run directory also gets ``run.log``: everything the run logged, every attempt.
"""
from __future__ import annotations

import logging
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import layout, records
from .errors import TD3Error

log = logging.getLogger("td3.run")


@dataclass
class RunResult:
    """What a launcher learns about a run (small and picklable: it travels back from a
    SLURM job or a Ray worker)."""

    status: str                  # complete | skipped (complete before) | failed
    run_dir: str
    signature: str
    error: str | None = None
    metrics: dict = field(default_factory=dict)   # test metrics of the first evaluation model
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def run_log(run_dir: Path) -> Iterator[logging.Handler]:
    """Append the process's td3 log lines to ``run_dir/run.log`` while the run lasts; yields
    the file's handler (a line for the file alone: ``handler.handle(record)``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("td3")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()


def _failed_record(cfg: dict, sig: str, run_dir: Path, error: str, trace: str | None,
                   before: dict | None = None) -> None:
    """A ``failed`` record, unless the attempt wrote one itself (its own is more precise):
    a failed record other than ``before``, the one the directory held when the attempt
    began (an earlier attempt's error is replaced, not kept)."""
    existing = records.read_record(run_dir)
    if existing and existing.get("status") == "failed" and existing != before:
        return
    record = records.new_record("distill", cfg, sig)
    record.update(status="failed", error=error, method=cfg.get("method"),
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if trace:
        record["traceback"] = trace
    records.write_bytes(run_dir / "config.json", records.config_bytes(cfg))
    records.write_record(run_dir, record)


def record_failure(cfg: dict, error: str, trace: str | None = None, before: dict | None = None) -> Path:
    """A ``failed`` record for ``cfg`` written from outside the run (its job was cancelled
    or killed before it could write one, or ``python -m td3.distill`` stopped on an error);
    a later launch resumes it like any broken run. ``before``: the record the attempt
    started from (see ``_failed_record``)."""
    run_dir = layout.distillation(cfg).dir
    if records.is_complete(run_dir):
        return run_dir
    with records.exclusive(run_dir):
        # again under the lock: a job taken for lost may have been running (holding the
        # lock) and completed while this waited; its complete record stays
        if not records.is_complete(run_dir):
            _failed_record(cfg, records.signature(cfg), run_dir, error, trace, before)
    return run_dir


def run(cfg: dict, report: Callable[[dict], None] | None = None, *,
        raise_errors: bool = False) -> RunResult:
    """Run ``cfg`` (a resolved distill config) to its record.

    A failed run gets its ``failed`` record and run.log's account of the error either way;
    then a launcher's call (the default) returns it as a RunResult, so the sweep goes on,
    while ``raise_errors=True`` (``python -m td3.distill``) raises it for the command line
    to report; the error's line then goes to run.log alone, so the console gets it once."""
    from .distill import distill

    place = layout.distillation(cfg)
    sig, run_dir = place.signature, place.dir
    try:
        done = records.is_complete(run_dir)
    except TD3Error as exc:  # a complete record edited since: neither trusted nor overwritten
        if raise_errors:
            raise
        log.error("refused: %s", exc)
        return RunResult("failed", str(run_dir), sig, error=str(exc))
    if done:  # left as it is, its run.log too
        log.info("complete run found, nothing to do: %s", run_dir)
        return RunResult("skipped", str(run_dir), sig, metrics=_test_metrics(records.read_record(run_dir)))
    before = records.read_record(run_dir)  # an earlier attempt's failed record, if any
    t0 = time.perf_counter()
    with run_log(run_dir) as run_file:
        log.info("run %s (%s)", sig, run_dir)
        try:
            distill(cfg, report=report)
        except Exception as exc:  # not SystemExit or KeyboardInterrupt: the launcher's own
            bug = not isinstance(exc, TD3Error)
            error = f"{type(exc).__name__}: {exc}" if bug else str(exc)
            trace = traceback.format_exc() if bug else None  # a bug: its traceback is kept
            line = ("failed with a bug: " if bug else "failed: ") + error + (f"\n{trace}" if trace else "")
            if raise_errors:
                run_file.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, line, None, None))
            else:
                log.error("%s", line)
            try:
                record_failure(cfg, error, trace, before)
            except (OSError, TD3Error) as unrecorded:  # a full disk, an edited record
                if not raise_errors:  # (raised: the first error is the one to report)
                    log.error("the failed record could not be written: %s", unrecorded)
            if raise_errors:
                raise
            return RunResult("failed", str(run_dir), sig, error=error, seconds=time.perf_counter() - t0)
        log.info("complete: %s", run_dir)
    return RunResult("complete", str(run_dir), sig, metrics=_test_metrics(records.read_record(run_dir)),
                     seconds=time.perf_counter() - t0)


def _test_metrics(record: dict | None) -> dict:
    try:
        test = record["metrics"]["test"]
        return dict(test.get("recbole100") or test["uni100"])   # uni100: records before recbole100
    except (KeyError, TypeError):
        return {}
