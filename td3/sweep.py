"""Sweeps: ``python -m td3.sweep -m +sweep=table3 [hydra/launcher=td3_slurm] [overrides]``.

Each grid point is one ``td3.run.run(cfg)``, launched by whichever Hydra launcher is
chosen: the basic one (in this process, one after the other), ``submitit_local`` (local
processes) or ``submitit_slurm`` / the ``td3_slurm`` preset (one SLURM array task per
point, or per ``hydra.launcher.runs_per_task`` points: ``RunGroup``). The grid comes from
the sweep file (``sweeps/<name>.yaml``, see ``td3.grid``) and the command line. Complete
runs are skipped before anything is launched (``hydra/sweeper=td3_grid``); a failed run
leaves a ``failed`` record and the sweep goes on; a preempted or timed-out SLURM job is
requeued by Submitit (the launcher's ``checkpoint`` resubmits the same call) and the run
resumes from its last checkpoint.

The sweep directory (``<results>/sweeps/<name>/<time>/``) keeps ``multirun.yaml`` (the
sweep's config), ``jobs/<signature>.json`` (one ledger entry per grid point: its
overrides, status, run directory and error; ``td3.ledger``, packed into ``jobs.jsonl``
when published) and ``summary.json``, and Submitit's logs
under ``.submitit/``. The command exits with status 1 when any run failed.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from . import ledger, records
from .cli import CONF_DIR

log = logging.getLogger("td3.sweep")

#: Set by ``SweepReport`` when a run of the sweep failed: the process's exit status.
EXIT_STATUS = 0


def grid_runs(sweep_dir: str | Path, results: str | Path, index: dict | None = None,
              composed: dict | None = None) -> list[tuple[list[str], Path, bool]]:
    """A recorded sweep's grid points (from its ``multirun.yaml``), each with the run
    directory under ``results/distill`` that answers for it, and whether that run is not the
    one the point composes into today.

    The run is the one the sweep launched (its ledger entry), or a relaunch of it launched
    (``index``, ``td3.ledger.index``), preferring a complete one: named by the config's signature
    when it ran. Every point is also composed with today's defaults, which answers for it
    only where no ledger names a run (a default changed since the sweep ran would compose
    the point into another run, which a relaunch of the sweep as it was would make) or where
    its launches all failed and today's run is complete (made by a later launch under
    another spelling or code). Raises when the grid cannot be expanded.

    composed: {sorted overrides: run name today}, shared by the calls of one reader (the
    audit, publish): a relaunched sweep's ledgers repeat their points, and composing a
    config is most of the time this takes."""
    from .config import compose_config
    from .grid import expand
    from .layout import distillation

    sweep_dir, results = Path(sweep_dir), Path(results)
    index = ledger.index(results) if index is None else index
    noted = ledger.entries(sweep_dir)  # once: a published ledger is one file for every point
    sweep = OmegaConf.to_container(OmegaConf.load(sweep_dir / "multirun.yaml"), resolve=False)
    sweeper = sweep["hydra"].get("sweeper") or {}
    task = list(sweep["hydra"].get("overrides", {}).get("task", []))
    composed = {} if composed is None else composed
    out = []
    for job in expand(sweeper.get("params"), sweeper.get("grid"), task):
        key = tuple(sorted(job))
        if key not in composed:
            cfg = compose_config(job)
            cfg["results_dir"] = str(results)
            composed[key] = distillation(cfg).dir.name
        today = results / "distill" / composed[key]
        entry = noted.get(ledger.entry_key(job))
        # the run this launch made first, then the launches of the same point (a relaunch after
        # it failed may have made the run under another signature, had the code changed)
        names = [Path(entry["run_dir"]).name] if entry and entry.get("run_dir") else []
        names += [n for n in sorted(index.get(key, ())) if n not in names]
        done = [n for n in names if records.is_complete(results / "distill" / n, verify=False)]
        if not done and records.is_complete(today, verify=False):
            done = [today.name]  # what the point composes into today is done: a relaunch would skip it
        run_dir = results / "distill" / (done or names)[0] if names else today
        out.append((job, run_dir, run_dir.name != today.name))
    return out


class SweepReport(Callback):
    """After a sweep: count the outcomes, write ``summary.json``, list the failures."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global EXIT_STATUS
        sweep_dir = Path(config.hydra.sweep.dir)
        entries = list(ledger.entries(sweep_dir).values())
        counts: dict[str, int] = {}
        for e in entries:
            counts[e.get("status", "unknown")] = counts.get(e.get("status", "unknown"), 0) + 1
        failed = [e for e in entries if e.get("status") not in ("complete", "skipped")]
        records.write_json(sweep_dir / "summary.json", {"jobs": len(entries), "counts": counts,
                                                        "failed": failed})
        print(f"td3 sweep: {len(entries)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
              + f" ({sweep_dir})", flush=True)
        for e in failed:
            print(f"  FAILED {' '.join(e.get('overrides', []))}: {e.get('error')}", flush=True)
        if failed:
            EXIT_STATUS = 1


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="distill")
def task(cfg: DictConfig) -> dict:
    """One grid point: resolve the config, run it, note the outcome in the sweep's ledger."""
    from .run import RunResult, run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # cannot even name the run: note it and go on
        result = RunResult("failed", "", "", error=f"config does not resolve: {exc}")
    else:
        result = run(config)
    print(f"td3: {result.status}: {result.run_dir}" + (f" ({result.error})" if result.error else ""), flush=True)
    if hc.mode == hydra.types.RunMode.MULTIRUN:
        ledger.write_entry(hc.sweep.dir, overrides, **result.as_dict())
    return result.as_dict()


@dataclass
class GroupedRunError:
    """A run of a grouped task that raised before it could say so in its own record (its
    config did not compose, Hydra's job setup failed): the sweep records it as failed."""

    error: str


class RunGroup:
    """Submitit's callable when ``hydra.launcher.runs_per_task`` > 1: several grid points
    one after the other in one task, each through the launcher exactly as if it had a task
    of its own (its own Hydra job, record and ledger entry), so the task's start is paid
    once. ``calls`` are the launcher's arguments, one tuple per run.

    A run that raises is reported as failed (``GroupedRunError``) and the next one runs. On
    a preemption or a timeout Submitit requeues the task with the copy ``checkpoint``
    returns, which keeps the results of the runs already done: the requeued task goes on
    with the run it was in (which resumes from its own checkpoint) and the ones after it."""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher
        self.done: dict[int, Any] = {}

    def __call__(self, calls: list[tuple]) -> list:
        for index, call in enumerate(calls):
            if index not in self.done:
                print(f"td3: run {index + 1} of {len(calls)} in this task: {' '.join(call[0])}", flush=True)
                self.done[index] = self._run(call)
        return [self.done[index] for index in range(len(calls))]

    def _run(self, call: tuple) -> Any:
        try:
            return self.launcher(*call)
        except Exception as exc:  # this run's problem: the others of the task still run
            log.exception("td3 sweep: run %s raised", " ".join(call[0]))
            return GroupedRunError(f"{type(exc).__name__}: {exc}")

    def checkpoint(self, calls: list[tuple]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, calls)


def main() -> None:
    task()
    # The callback sets the flag on the module ``td3.sweep``, which under ``python -m`` is
    # not this ``__main__`` module.
    from td3 import sweep as module
    sys.exit(module.EXIT_STATUS)


if __name__ == "__main__":
    main()
