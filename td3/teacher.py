"""The teacher: a full-data training run's best learner, frozen, and its init pool.

Its item table is the Tucker summary's shared V and its features are the target of the
feature-space alignment; the pool's checkpoints are where each outer step's learner starts
(docs/method.md, "Full-data training, the teacher and the init pool"). The run is found by its signature or trained on
demand (``td3.train``).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from . import layout, records
from .config import RunConfig, model_options
from .errors import TrainingError
from .models import build_model
from .train import train as train_full


class Teacher:
    """The full-data run of a distillation's config: best model (eval mode, frozen) and its init pool.

    model: another learner's options (``run.learner(name)``) for the teacher of that
        architecture (several inner learners, ``distill.learners``); default the run's model.
    """

    def __init__(self, run: RunConfig, device: torch.device, num_items: int, model: dict | None = None):
        options = dict(model) if model is not None else run.model.as_dict()
        self.name = options["name"]
        record_path = train_full({**run.teacher(), "model": options})
        self.run_dir = record_path.parent
        self.record = json.loads(record_path.read_text())
        if self.record.get("status") != "complete":
            raise TrainingError(f"teacher run {self.run_dir} is not complete: {self.record.get('error')}")
        best = self.run_dir / "best.pt"
        if not best.is_file():
            raise TrainingError(f"teacher checkpoint missing: {best}")
        self.model = build_model(self.name, num_items, max_len=run.max_len, **model_options(options)).to(device)
        self.model.load_state_dict(self._load(best, device))
        self.model.eval().requires_grad_(False)
        self.pool_paths = [self.run_dir / p for p in self.record["checkpoints"]["pool"]]
        missing = [p for p in self.pool_paths if not p.is_file()]
        if missing:
            raise TrainingError(f"init pool checkpoint missing: {missing[0]}")
        self.pool = [self._load(p, device) for p in self.pool_paths]
        lo, hi = run.train.pool_epochs
        self.pool_note = None
        if len(self.pool) < hi - lo + 1:
            # Early stopping ended the teacher before the pool's last epoch: use what there is.
            self.pool_note = (f"pool has {len(self.pool)} of the {hi - lo + 1} checkpoints asked "
                              f"(epochs {lo}..{hi}; the teacher stopped at epoch {self.record['epochs_run']})")
            if run.distill.init_from == "pool" and run.distils:
                warnings.warn(self.pool_note)  # (a run that never draws from the pool need not hear of it)
        if not self.pool:
            self.pool = [self.model.state_dict()]
            self.pool_note = (self.pool_note or "") + "; the pool is empty, learners start from the teacher itself"

    def _load(self, path: Path, device) -> dict:
        """A checkpoint of the teacher's run, or one line saying it is damaged and what to do."""
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # truncated, overwritten, not a checkpoint at all
            raise TrainingError(f"teacher checkpoint {path} cannot be read ({type(exc).__name__}); move the "
                                f"teacher's run directory {self.run_dir} away to train it again") from exc

    @property
    def item_embedding(self) -> torch.Tensor:
        return self.model.item_embedding.weight.detach()  # (|V|+1, d)

    def describe(self) -> dict:
        """What a distillation's record says of its teacher."""
        return {"run": str(self.run_dir), "signature": self.record["signature"],
                "test": self.record["metrics"]["test"], "pool_size": len(self.pool), "pool_note": self.pool_note}


def teachers_of(run: RunConfig, device: torch.device, num_items: int, names: list[str]) -> dict[str, Teacher]:
    """The teachers of several inner learners (``distill.learners``), by name.

    Jobs of a sweep launched together need the same teachers: taken in one order, the second
    job would wait on each teacher the first is training. Each teacher is taken when no other
    process is making it, one being made elsewhere is left for later, so that two jobs train
    two teachers at once (a teacher's training is seeded by its own config: which job makes
    it does not change it)."""
    pending, made = list(names), {}
    while pending:
        options = {n: run.learner(n) for n in pending}
        free = [n for n in pending if not records.held_elsewhere(
            layout.training({**run.teacher(), "model": options[n]}).dir)]
        name = (free or pending)[0]  # all being made elsewhere: wait for the first
        made[name] = Teacher(run, device, num_items, model=options[name])
        pending.remove(name)
    return {name: made[name] for name in names}
