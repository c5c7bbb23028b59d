"""Full-data training: ``python -m td3.train dataset=ml-100k model=sasrec``.

Every position of every training window is a next-item example (cross-entropy over all
items), one forward pass per window: for causal learners this covers all of RecBole's
prefix examples at a fraction of the cost (``train.stride=1`` reproduces them exactly).
Adam, early stopping on validation MRR@10, a checkpoint per epoch in the init-pool range
(the distillation engine draws learner initialisations from it), the best checkpoint, and
one result record per run.

A run lives in ``<results_dir>/train/<dataset>-<model>-<signature>/``. Relaunching a
finished config prints its record and does nothing; relaunching an interrupted one resumes
from ``last.pt`` and ends as the uninterrupted run would have.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import layout, records, stop
from .cli import hydra_command
from .config import TrainRun, dataset_options, model_options
from .data import load_dataset, training_windows
from .device import setup_runtime
from .errors import ConfigError, TrainingError
from .evaluate import evaluate
from .files import atomic_path
from .models import build_model
from .models.popularity import Popularity
from .optim import Adam
from .seeds import rng_state, seed_everything, set_rng_state

log = logging.getLogger("td3.train")


# --------------------------------------------------------------------- run
def train(cfg: dict) -> Path:
    """One config -> one record. Returns the record's path."""
    TrainRun.of(cfg).check()
    place = layout.training(cfg)  # a concurrent job training the same run: wait for it, then skip
    return layout.run_once(place, lambda: _train(cfg, place.signature, place.dir))


def _train(cfg: dict, sig: str, run_dir: Path) -> Path:
    run = TrainRun.of(cfg)
    timer = records.Timer()
    device = setup_runtime(run.device, run.threads)
    seed_everything(run.seed)

    with timer("data"):
        data = load_dataset(run.dataset.name, **dataset_options(run.dataset))
        inputs, targets = training_windows(data.train, run.max_len, run.train.stride)
    if len(inputs) == 0:
        raise ConfigError(f"dataset {data.name} yields no training windows at max_len={run.max_len}")
    inputs, targets = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)

    model = build_model(run.model.name, data.num_items, max_len=run.max_len,
                        **model_options(run.model)).to(device)
    t = run.train
    optimizer = Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    shuffle = torch.Generator().manual_seed(run.seed)

    record = records.new_record("train", cfg, sig)
    record["dataset"] = {"name": data.name, "sha256": data.sha256, "stats": data.stats}
    record["model"] = {"name": run.model.name, "parameters": model.num_parameters()}
    run_dir.mkdir(parents=True, exist_ok=True)
    records.write_bytes(run_dir / "config.json", records.config_bytes(cfg))

    state = {"epoch": 0, "best_epoch": 0, "best_score": -math.inf, "bad_epochs": 0, "history": []}
    last = run_dir / "last.pt"
    if last.exists():
        try:
            # on the CPU: the generator and RNG states must stay CPU tensors (set_state refuses
            # others); the model's and optimiser's load_state_dict copy to the run's device
            saved = torch.load(last, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise TrainingError(f"checkpoint {last} cannot be read ({type(exc).__name__}); delete it to start over") from exc
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        shuffle.set_state(saved["shuffle"])
        set_rng_state(saved["rng"])
        state = saved["state"]
        log.info("resuming %s after epoch %d", run_dir.name, state["epoch"])

    select_protocol, select_metric = t.select_protocol, t.select_metric
    pool_lo, pool_hi = t.pool_epochs
    epoch_seconds = [h["seconds"] for h in state["history"]]
    bar = tqdm(total=t.epochs, initial=state["epoch"], desc=f"train {data.name}/{run.model.name}",
               disable=not run.progress, dynamic_ncols=True, unit="ep")
    try:
        for epoch in range(state["epoch"] + 1, t.epochs + 1):
            t0 = time.perf_counter()
            with timer("train"):
                loss = train_epoch(model, optimizer, inputs, targets, t.batch_size, shuffle, epoch)
            with timer("valid"):
                result = evaluate(model, data, "valid", protocols=(select_protocol,),
                                  max_len=run.max_len, batch_size=run.eval.batch_size, device=device)
            score = result.metrics[select_protocol][select_metric]
            seconds = time.perf_counter() - t0
            epoch_seconds.append(seconds)
            state["history"].append({"epoch": epoch, "loss": loss, f"valid_{select_metric}": score,
                                     "seconds": round(seconds, 3)})
            if pool_lo <= epoch <= pool_hi:
                records.torch_save(model.state_dict(), run_dir / "pool" / f"epoch_{epoch:03d}.pt")
            if score > state["best_score"]:
                state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
                records.torch_save(model.state_dict(), run_dir / "best.pt")
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            records.torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "shuffle": shuffle.get_state(), "rng": rng_state(), "state": state}, last)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", **{select_metric: f"{score:.4f}"},
                            best=f"{state['best_score']:.4f}@{state['best_epoch']}")
            stop.check(f"after training epoch {epoch} (checkpoint {last})")
            if state["bad_epochs"] >= t.patience:
                break
    except TrainingError as exc:
        record.update(status="failed", error=str(exc), timings=timer.as_dict())
        records.write_record(run_dir, record)
        raise
    finally:
        bar.close()
    log.info("trained %s on %s: %d epochs%s, best valid %s %.4f at epoch %d, %.1f s per epoch",
             run.model.name, data.name, state["epoch"],
             " (stopped early: no better validation for %d)" % t.patience if state["epoch"] < t.epochs else "",
             select_metric, state["best_score"], state["best_epoch"],
             float(np.median(epoch_seconds)) if epoch_seconds else float("nan"))

    with timer("test"):
        model.load_state_dict(torch.load(run_dir / "best.pt", map_location=device, weights_only=True))
        protocols = run.eval.protocols
        results = {split: evaluate(model, data, split, protocols=protocols, max_len=run.max_len,
                                   batch_size=run.eval.batch_size, device=device,
                                   exclude_history=run.eval.exclude_history)
                   for split in ("valid", "test")}
        # The floor every learner must clearly beat, on the same candidates.
        popularity = evaluate(Popularity.fit(data.train, data.num_items), data, "test", protocols=protocols,
                              max_len=run.max_len, batch_size=run.eval.batch_size, device=device,
                              exclude_history=run.eval.exclude_history)
    per_user = pd.concat([r.to_frame().assign(split=split) for split, r in results.items()], ignore_index=True)
    with atomic_path(run_dir / "per_user.parquet") as tmp:
        per_user.to_parquet(tmp, index=False)

    pool = sorted(p.name for p in (run_dir / "pool").glob("epoch_*.pt"))
    record.update(
        status="complete",
        metrics={split: r.metrics for split, r in results.items()},
        reference={"popularity": {"test": popularity.metrics}},
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        history=state["history"],
        checkpoints={"best": "best.pt", "pool": [f"pool/{p}" for p in pool]},
        per_user="per_user.parquet",
        timings={**timer.as_dict(), "seconds_per_epoch": round(float(np.median(epoch_seconds)), 3)
                 if epoch_seconds else None},
        peak_memory_mb=records.peak_rss_mb(),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    path = records.write_record(run_dir, record)
    last.unlink(missing_ok=True)  # the record supersedes the resume state
    return path


def train_epoch(model, optimizer, inputs, targets, batch_size: int, shuffle: torch.Generator, epoch: int) -> float:
    """One pass over the training windows in a seeded random order; returns the mean loss.

    The order is drawn on the CPU (the same on every device). The step losses stay on the
    device until the epoch ends: reading one per step would make the CPU wait for the GPU
    at every step. A non-finite loss is therefore found at the end of its epoch (the run
    fails all the same, naming the step).
    """
    model.train()
    order = torch.randperm(len(inputs), generator=shuffle).to(inputs.device, non_blocking=True)
    starts = range(0, len(order), batch_size)
    losses = []
    for start in starts:
        idx = order[start:start + batch_size]
        loss = model.train_loss(inputs[idx], targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return epoch_mean(torch.stack(losses).tolist(), [min(batch_size, len(order) - s) for s in starts],
                      f"non-finite training loss ({{loss}}) at epoch {epoch}, step {{step}}")


def epoch_mean(losses: list[float], sizes: list[int], error: str) -> float:
    """Mean of per-step losses weighted by their batch sizes, summed in step order (so the
    figure is the one a per-step sum gives); ``error`` (with {loss} and {step}) names the
    first non-finite step."""
    total = 0.0
    for step, (loss, size) in enumerate(zip(losses, sizes)):
        if not math.isfinite(loss):
            raise TrainingError(error.format(loss=loss, step=step))
        total += loss * size
    return total / sum(sizes)


@hydra_command("train")
def _main(cfg: dict) -> None:
    path = train(cfg)
    print(path, flush=True)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
