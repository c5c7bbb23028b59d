"""Hydra launchers ``hydra/launcher=td3_submitit_slurm`` and ``td3_submitit_local``:
hydra-submitit-launcher's, plus ``runs_per_task`` (the presets
``conf/hydra/launcher/td3_{slurm,local}.yaml`` build on them).

``runs_per_task: k`` runs k grid points one after the other in each array task, so that
short runs pay a task's start (the scheduler, Python, torch's import: seconds) once per k
runs rather than once each. 1, the default, is one task per point. The td3 sweeper
(``hydra/sweeper=td3_grid``) submits the jobs and does the grouping; these classes only
keep the setting out of the parameters handed to Submitit (which knows no such key), so
that hydra-submitit-launcher's own ``launch`` still works, one point per task.

Hydra loads this module itself when it scans ``hydra_plugins``: no ``from __future__``.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher


def _runs_per_task(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"hydra.launcher.runs_per_task={value!r}: expected an integer >= 1")
    return value


class TD3SlurmLauncher(SlurmLauncher):
    def __init__(self, runs_per_task: int = 1, **params: Any) -> None:
        self.runs_per_task = _runs_per_task(runs_per_task)
        super().__init__(**params)


class TD3LocalLauncher(LocalLauncher):
    def __init__(self, runs_per_task: int = 1, **params: Any) -> None:
        self.runs_per_task = _runs_per_task(runs_per_task)
        super().__init__(**params)


@dataclass
class TD3SlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.td3_grid_sweeper.td3_submitit.TD3SlurmLauncher"
    runs_per_task: int = 1


@dataclass
class TD3LocalQueueConf(LocalQueueConf):
    _target_: str = "hydra_plugins.td3_grid_sweeper.td3_submitit.TD3LocalLauncher"
    runs_per_task: int = 1


ConfigStore.instance().store(group="hydra/launcher", name="td3_submitit_slurm", node=TD3SlurmQueueConf(),
                             provider="td3")
ConfigStore.instance().store(group="hydra/launcher", name="td3_submitit_local", node=TD3LocalQueueConf(),
                             provider="td3")
