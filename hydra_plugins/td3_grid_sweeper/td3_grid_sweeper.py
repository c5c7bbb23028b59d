"""Hydra sweeper ``hydra/sweeper=td3_grid``: Hydra's basic sweeper, plus

- ``grid``: a union of cartesian products (``td3.grid.expand``), so a sweep file can pair
  each dataset with its own summary sizes;
- complete runs are left out before anything is launched: a relaunched sweep submits only
  what is missing or broken (a run is complete when the record under its config's
  signature says so, ``td3.layout.is_done``), and the sweep's ledger lists the skipped ones;
- with a Submitit launcher, a job that ends without a result (``scancel``, the OOM killer,
  a lost node) does not end the sweep: its run gets a ``failed`` record naming the job and
  its state, and the sweep waits for the rest of the array (hydra-submitit-launcher's own
  ``launch`` raises at the first such job and leaves the others unwatched);
- with the td3 launcher presets' ``runs_per_task`` > 1 (``td3_submitit.py``), each array
  task runs that many grid points one after the other (``td3.sweep.RunGroup``): short runs
  pay a task's start once per group. A run of a lost task that had completed keeps its
  record; the others of the task get ``failed`` ones.

Deciding that a run is complete reads its record only (``td3.layout.is_done``,
``td3.layout``): the driver never imports torch or the distillation engine.

It must live in the ``hydra_plugins`` namespace: Hydra instantiates sweepers from there only
(and loads this module without registering it, so no ``from __future__`` annotations here).
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


#: SLURM states submitit takes for finished (it waits only on PENDING, RUNNING and a few
#: others) although the job goes on: ``scontrol suspend`` (resumed later), a requeue held.
ALIVE_STATES = {"SUSPENDED", "STOPPED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT",
                "CONFIGURING"}


def _wait_for_result(job, poll_s: float = 10.0):
    """``job.results()[0]``, waiting through states submitit mistakes for an end (a
    suspended job has no result yet; taking it for lost would record a failure while it
    still runs)."""
    import time

    while True:
        try:
            return job.results()[0]
        except Exception:
            state = job.watcher.get_state(job.job_id, mode="force").upper()
            if state not in ALIVE_STATES or job.paths.result_pickle.exists():
                raise
            time.sleep(poll_s)


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.td3_grid_sweeper.td3_grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, Any]] = None
    grid: Optional[List[Dict[str, Any]]] = None
    skip_complete: bool = True


ConfigStore.instance().store(group="hydra/sweeper", name="td3_grid", node=GridSweeperConf, provider="td3")


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, Any]] = None,
                 grid: Optional[List[Dict[str, Any]]] = None, skip_complete: bool = True) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grid = [dict(b) for b in grid] if grid else None
        self.skip_complete = skip_complete
        # each launched point's record before its job (an earlier attempt's failed one, or
        # None): a job lost now replaces that record's error with its own (td3.run.record_failure)
        self._before: Dict[tuple, Optional[dict]] = {}

    def sweep(self, arguments: List[str]) -> Any:
        from td3 import grid as td3_grid
        from td3 import ledger

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        jobs = td3_grid.expand(self.params, self.grid, arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        todo = jobs
        if self.skip_complete:
            from td3.layout import distillation, is_done
            from td3.records import read_record

            todo, shared, summaries = [], [], []
            for number, overrides in enumerate(jobs):
                try:
                    resolved = self._resolve(overrides)
                    done = is_done(resolved)
                except Exception:  # let the job itself report what is wrong with its config
                    resolved, done = None, False
                summaries.append(_shared_work(resolved))
                if done:
                    ledger.write_entry(sweep_dir, overrides, status="skipped", run_dir=str(distillation(resolved).dir))
                else:
                    if resolved is not None:
                        self._before[tuple(overrides)] = read_record(distillation(resolved).dir)
                    todo.append((number, overrides))
                    shared.append(summaries[-1])
            for varying, count in td3_grid.evaluation_splits(jobs, summaries):
                # distill.validate_lr and the like follow evaluation.*: each value distils anew
                log.warning("td3 sweep: grid points that differ only in %s distil %d different summaries: "
                            "the distillation's own settings follow the evaluation's (distill.validate_lr, "
                            "validate_batch_size, validate_weight_decay); pin them to evaluate one summary",
                            ", ".join(varying), count)
            # jobs evaluating a summary another job distils go last: they would wait on it
            pairs = td3_grid.spread_shared(list(zip(todo, shared)), shared)
            todo, keys = [job for job, _ in pairs], [key for _, key in pairs]
            log.info("td3 sweep: %d jobs, %d complete already, launching %d", len(jobs),
                     len(jobs) - len(todo), len(todo))
        else:
            todo = list(enumerate(jobs))
            keys = [None] * len(todo)

        batch_size = self.max_batch_size or len(todo) or 1
        returns = []
        for begin in range(0, len(todo), batch_size):
            batch = [list(overrides) for _, overrides in todo[begin:begin + batch_size]]
            self.validate_batch_is_legal(batch)
            if _is_submitit(self.launcher):
                returns.append(self._launch_submitit(batch, begin, sweep_dir, keys[begin:begin + batch_size]))
            else:
                returns.append(self.launcher.launch(batch, initial_job_idx=begin))
        return returns

    def _resolve(self, overrides: List[str]) -> dict:
        """The resolved config of one grid point, as its job will see it (without ``hydra``)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain.pop("hydra", None)
        return OmegaConf.to_container(OmegaConf.create(plain), resolve=True)

    def _launch_submitit(self, batch: List[List[str]], initial_job_idx: int, sweep_dir: Path,
                         keys: Optional[List[Optional[str]]] = None) -> List[Any]:
        """The Submitit launcher's submission, then every job waited for.

        One array holds every job that does work of its own, one task per run, or per
        ``runs_per_task`` runs (``td3.sweep.RunGroup``). On SLURM, a job reusing work
        another job of the batch makes (the second evaluation protocol of one summary:
        ``keys``, from ``_shared_work``) is submitted alone, after that job's array task
        (``--dependency=afterany``): it would otherwise hold a CPU for as long as the
        distillation takes, waiting on its lock, while other work waits for a CPU."""
        from hydra.core.singleton import Singleton

        from td3.sweep import RunGroup

        launcher = self.launcher
        kind = launcher._EXECUTOR  # "slurm" or "local"
        executor, extra = _executor(launcher)
        calls = [(overrides, "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}",
                  Singleton.get_state()) for i, overrides in enumerate(batch)]
        firsts, after = _split_shared(keys or [None] * len(batch), wait_in_queue=kind == "slurm")
        per_task = getattr(launcher, "runs_per_task", 1)
        # the task of each run, and the run's place in its task's results (None: the task's
        # result is the run's own)
        tasks: List[Any] = [None] * len(batch)
        places: List[Optional[int]] = [None] * len(batch)
        if per_task == 1:
            for i, job in zip(firsts, executor.map_array(launcher, *zip(*[calls[i] for i in firsts]))):
                tasks[i] = job
        else:
            groups = [firsts[g:g + per_task] for g in range(0, len(firsts), per_task)]
            jobs = executor.map_array(RunGroup(launcher), [[calls[i] for i in group] for group in groups])
            for group, job in zip(groups, jobs):
                for place, i in enumerate(group):
                    tasks[i], places[i] = job, place
        for i, first in after.items():
            executor.update_parameters(slurm_additional_parameters={**extra,
                                                                    "dependency": f"afterany:{tasks[first].job_id}"})
            tasks[i] = executor.submit(launcher, *calls[i])
        ids = list(dict.fromkeys(job.job_id for job in tasks))
        log.info("td3 sweep: submitted %d jobs in %d tasks (%s)%s", len(batch), len(ids),
                 ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else ""),
                 f", {len(after)} of them after the job whose summary they reuse" if after else "")
        return self._collect(batch, tasks, places, kind, sweep_dir)

    def _collect(self, batch: List[List[str]], tasks: List[Any], places: List[Optional[int]], kind: str,
                 sweep_dir: Path) -> List[Any]:
        """Each run's return, its task waited for; a run whose task ended without a result,
        or that raised inside a grouped task, gets a ``failed`` record (unless it completed)."""
        from hydra.core.utils import JobReturn, JobStatus

        from td3.sweep import GroupedRunError

        outcomes: Dict[str, Any] = {}  # task id -> its result, or the exception that says it has none
        returns = []
        for job, place, overrides in zip(tasks, places, batch):
            if job.job_id not in outcomes:
                try:
                    outcomes[job.job_id] = _wait_for_result(job)
                except Exception as exc:  # the task ended without a result
                    outcomes[job.job_id] = exc
            outcome = outcomes[job.job_id]
            if isinstance(outcome, Exception):
                error = f"{kind} job {job.job_id} ended {job.state} without a result: {_first_line(outcome)}"
            elif place is not None and isinstance(outcome[place], GroupedRunError):
                error = f"{kind} job {job.job_id}: {outcome[place].error}"
            else:
                returns.append(outcome if place is None else outcome[place])
                continue
            result = self._record_lost_job(overrides, error, sweep_dir)
            if result.get("status") != "complete":  # (an earlier run of a lost group may have completed)
                log.error("td3 sweep: %s (%s)", error, " ".join(overrides))
            returns.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=result))
        return returns

    def _record_lost_job(self, overrides: List[str], error: str, sweep_dir: Path) -> dict:
        """A ``failed`` record for a run whose job died without writing one, and its ledger
        entry; a run that completed before its task was lost (an earlier run of a group)
        keeps its record, and the entry its task wrote."""
        from td3 import records
        from td3.run import record_failure
        from td3 import ledger

        result = {"status": "failed", "error": error, "run_dir": "", "signature": ""}
        try:
            resolved = self._resolve(overrides)
            run_dir = record_failure(resolved, error, before=self._before.get(tuple(overrides)))
            result.update(run_dir=str(run_dir), signature=records.signature(resolved))
            if records.is_complete(run_dir):
                entry = ledger.entry(sweep_dir, overrides)
                if entry and entry.get("status") == "complete":
                    return entry
                result.update(status="complete", error=None)
        except Exception as exc:  # the ledger still says what happened
            log.error("td3 sweep: could not write the failed record: %s", exc)
        ledger.write_entry(sweep_dir, overrides, **result)
        return result


def _executor(launcher: Any) -> Tuple[Any, dict]:
    """A Submitit executor set up as hydra-submitit-launcher sets up its own, and the
    launcher's ``additional_parameters`` (to add a dependency to later)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    kind = launcher._EXECUTOR
    params = dict(launcher.params)
    folder = params.pop("submitit_folder")
    init = {f"{kind}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=kind, **init)
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"{kind}_{k}": v for k, v in params.items()})
    return executor, dict(params.get("additional_parameters") or {})


def _split_shared(keys: List[Optional[str]], wait_in_queue: bool) -> Tuple[List[int], Dict[int, int]]:
    """The runs to submit at once, and those to submit after another (run -> the run whose
    shared work it reuses: the first of its key). Without a queue to wait in (local
    processes) every run goes at once."""
    firsts, after, maker = [], {}, {}
    for i, key in enumerate(keys):
        if wait_in_queue and key is not None and key in maker:
            after[i] = maker[key]
        else:
            firsts.append(i)
            if key is not None:
                maker[key] = i
    return firsts, after


def _shared_work(resolved: Optional[dict]) -> Optional[str]:
    """The summary a grid point's run distils or reuses (None: it shares nothing)."""
    if not resolved:
        return None
    from td3.config import SUMMARY_METHODS  # not td3.distill: no torch in the driver
    from td3.layout import summary_dir_for

    if resolved.get("method") not in SUMMARY_METHODS:
        return None
    return str(summary_dir_for(resolved)[0])


def _is_submitit(launcher: Any) -> bool:
    """Whether ``launcher`` is hydra-submitit-launcher's (or one built on it), by the names of
    its classes: Hydra's plugin scan executes a plugin module again when it was imported
    before (as ``td3_submitit`` imports hydra-submitit-launcher's), so its classes exist
    twice and ``isinstance`` against the current ones can miss."""
    return any(cls.__name__ == "BaseSubmititLauncher" and cls.__module__.startswith("hydra_plugins.hydra_submitit")
               for cls in type(launcher).__mro__)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
