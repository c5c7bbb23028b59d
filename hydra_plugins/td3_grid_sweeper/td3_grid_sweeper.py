"""Hydra sweeper ``hydra/sweeper=td3_grid``: Hydra's basic sweeper, plus

- ``grid``: a union of cartesian products (``td3.grid.expand``), so a sweep file can pair
  each dataset with its own summary sizes;
- complete runs are left out before anything is launched: a relaunched sweep submits only
  what is missing or broken (a run is complete when the record under its config's
  signature says so, ``td3.run.is_done``), and the sweep's ledger lists the skipped ones;
- with a Submitit launcher, a job that ends without a result (``scancel``, the OOM killer,
  a lost node) does not end the sweep: its run gets a ``failed`` record naming the job and
  its state, and the sweep waits for the rest of the array (hydra-submitit-launcher's own
  ``launch`` raises at the first such job and leaves the others unwatched).

It must live in the ``hydra_plugins`` namespace: Hydra instantiates sweepers from there only
(and loads this module without registering it, so no ``from __future__`` annotations here).
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

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

    def sweep(self, arguments: List[str]) -> Any:
        from td3 import grid as td3_grid
        from td3.sweep import write_ledger_entry

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        jobs = td3_grid.expand(self.params, self.grid, arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        todo = jobs
        if self.skip_complete:
            from td3.run import is_done, run_dir_of

            todo, shared = [], []
            for number, overrides in enumerate(jobs):
                try:
                    resolved = self._resolve(overrides)
                    done = is_done(resolved)
                except Exception:  # let the job itself report what is wrong with its config
                    resolved, done = None, False
                if done:
                    write_ledger_entry(sweep_dir, overrides, status="skipped", run_dir=str(run_dir_of(resolved)))
                else:
                    todo.append((number, overrides))
                    shared.append(_shared_work(resolved))
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

        One array holds every job that does work of its own. On SLURM, a job reusing work
        another job of the batch makes (the second evaluation protocol of one summary:
        ``keys``, from ``_shared_work``) is submitted alone, after that job's array task
        (``--dependency=afterany``): it would otherwise hold a CPU for as long as the
        distillation takes, waiting on its lock, while other work waits for a CPU."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobReturn, JobStatus
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        launcher = self.launcher
        kind = launcher._EXECUTOR  # "slurm" or "local"
        params = dict(launcher.params)
        folder = params.pop("submitit_folder")
        init = {f"{kind}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
        executor = submitit.AutoExecutor(folder=folder, cluster=kind, **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"{kind}_{k}": v for k, v in params.items()})

        calls = [(overrides, "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}",
                  Singleton.get_state()) for i, overrides in enumerate(batch)]
        firsts, after, maker = [], {}, {}
        for i, key in enumerate(keys or [None] * len(batch)):
            if kind == "slurm" and key is not None and key in maker:
                after[i] = maker[key]
            else:
                firsts.append(i)
                if key is not None:
                    maker[key] = i
        jobs: List[Any] = [None] * len(batch)
        for i, job in zip(firsts, executor.map_array(launcher, *zip(*[calls[i] for i in firsts]))):
            jobs[i] = job
        extra = dict(params.get("additional_parameters") or {})
        for i, first in after.items():
            executor.update_parameters(slurm_additional_parameters={**extra,
                                                                    "dependency": f"afterany:{jobs[first].job_id}"})
            jobs[i] = executor.submit(launcher, *calls[i])
        log.info("td3 sweep: submitted %d jobs (%s)%s", len(jobs), ", ".join(j.job_id for j in jobs[:3])
                 + (", ..." if len(jobs) > 3 else ""),
                 f", {len(after)} of them after the job whose summary they reuse" if after else "")
        returns = []
        for job, overrides in zip(jobs, batch):
            try:
                returns.append(_wait_for_result(job))
            except Exception as exc:  # the job ended without a result
                error = f"{kind} job {job.job_id} ended {job.state} without a result: {_first_line(exc)}"
                log.error("td3 sweep: %s (%s)", error, " ".join(overrides))
                returns.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED,
                                         _return_value=self._record_lost_job(overrides, error, sweep_dir)))
        return returns

    def _record_lost_job(self, overrides: List[str], error: str, sweep_dir: Path) -> dict:
        """A ``failed`` record for a run whose job died without writing one, and its ledger entry."""
        from td3 import records
        from td3.run import record_failure
        from td3.sweep import write_ledger_entry

        result = {"status": "failed", "error": error, "run_dir": "", "signature": ""}
        try:
            resolved = self._resolve(overrides)
            run_dir = record_failure(resolved, error)
            result.update(run_dir=str(run_dir), signature=records.signature(resolved))
        except Exception as exc:  # the ledger still says what happened
            log.error("td3 sweep: could not write the failed record: %s", exc)
        write_ledger_entry(sweep_dir, overrides, **result)
        return result


def _shared_work(resolved: Optional[dict]) -> Optional[str]:
    """The summary a grid point's run distils or reuses (None: it shares nothing)."""
    if not resolved:
        return None
    from td3.distill import SUMMARY_METHODS, summary_dir_for

    if resolved.get("method") not in SUMMARY_METHODS:
        return None
    return str(summary_dir_for(resolved)[0])


def _is_submitit(launcher: Any) -> bool:
    try:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
    except ImportError:
        return False
    return isinstance(launcher, BaseSubmititLauncher)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
