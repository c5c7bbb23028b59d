"""Hydra sweeper ``hydra/sweeper=td3_grid``: Hydra's basic sweeper, plus

- ``grid``: a union of cartesian products (``td3.grid.expand``), so a sweep file can pair
  each dataset with its own summary sizes;
- complete runs are left out before anything is launched: a relaunched sweep submits only
  what is missing or broken (a run is complete when the record under its config's
  signature says so, ``td3.run.is_done``), and the sweep's ledger lists the skipped ones.

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

            todo = []
            for number, overrides in enumerate(jobs):
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                plain = OmegaConf.to_container(cfg, resolve=False)
                plain.pop("hydra", None)
                try:
                    resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
                    done = is_done(resolved)
                except Exception:  # let the job itself report what is wrong with its config
                    done = False
                if done:
                    write_ledger_entry(sweep_dir, overrides, status="skipped", run_dir=str(run_dir_of(resolved)))
                else:
                    todo.append((number, overrides))
            log.info("td3 sweep: %d jobs, %d complete already, launching %d", len(jobs),
                     len(jobs) - len(todo), len(todo))
        else:
            todo = list(enumerate(jobs))

        batch_size = self.max_batch_size or len(todo) or 1
        returns = []
        for begin in range(0, len(todo), batch_size):
            batch = [list(overrides) for _, overrides in todo[begin:begin + batch_size]]
            self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=begin))
        return returns
