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
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import records, stop
from .cli import hydra_command
from .device import cuda_rng_state, prepare_cuda, resolve_device, set_cuda_rng_state
from .data import load_dataset, training_windows
from .errors import ConfigError, TrainingError
from .evaluate import PROTOCOLS, evaluate, protocol_problems
from .models import build_model
from .models.popularity import Popularity
from .optim import Adam

log = logging.getLogger("td3.train")


# ------------------------------------------------------------------ helpers
def setup_runtime(cfg: dict) -> torch.device:
    """Device and torch threads for a run. Give a process as many threads as it has cores:
    more makes OpenMP threads wait on each other (TD3 outer steps on ML-100K: 4-185 s with
    2 threads beside another busy process, against 2-4 s with 1 thread). Without
    ``threads``, a SLURM job takes the CPUs it was given (SLURM_CPUS_PER_TASK).

    Deterministic algorithms: with 2 threads, the backward pass through the inner loop
    otherwise differs between identical runs (by ~1e-10 per outer step, which 74 outer
    steps of the synthetic default grew to 0.4 in the summary's factors), so a run made
    with several threads could not be re-run bitwise. ``warn_only``: where an op has no
    deterministic kernel (on CUDA), the run goes on and says so. On CUDA, cuBLAS is only
    deterministic with a fixed workspace, set here before the run first touches the GPU
    (``td3.device.prepare_cuda``)."""
    prepare_cuda()
    threads = cfg.get("threads") or os.environ.get("SLURM_CPUS_PER_TASK")
    if threads:
        torch.set_num_threads(int(threads))
    use_deterministic_algorithms()
    return resolve_device(cfg.get("device"))


def use_deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its other effect:
    it also sets the flag of torch's compiler (inductor), and importing that config imports
    ``torch._dynamo``, seconds per process, for a compiler no run uses. Where the
    compiler is already loaded, or torch lacks the flag's setter, the public call is used."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global random states; on a GPU also its own, from which dropout draws there."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    cuda = cuda_rng_state()
    if cuda is not None:
        state["cuda"] = cuda
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    set_cuda_rng_state(state.get("cuda"))


def dataset_options(cfg: dict) -> dict:
    """The dataset group minus its name: passed through to ``load_dataset``."""
    return {k: v for k, v in cfg.items() if k != "name" and v is not None}


def model_options(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "name"}


def check_config(cfg: dict) -> None:
    """Refuse impossible settings before any work starts."""
    t = cfg["train"]
    problems = []
    if cfg["max_len"] < 2:
        problems.append(f"max_len={cfg['max_len']} must be >= 2")
    if t["epochs"] < 1:
        problems.append(f"train.epochs={t['epochs']} must be >= 1")
    if t["batch_size"] < 1:
        problems.append(f"train.batch_size={t['batch_size']} must be >= 1")
    if not t["lr"] > 0:
        problems.append(f"train.lr={t['lr']} must be > 0")
    if t.get("stride") is not None and not 1 <= t["stride"] <= cfg["max_len"]:
        problems.append(f"train.stride={t['stride']} must be in [1, max_len={cfg['max_len']}]")
    problems += protocol_problems(cfg["eval"]["protocols"])
    if t["select_protocol"] not in PROTOCOLS:
        problems += protocol_problems([t["select_protocol"]], "train.select_protocol")
    lo, hi = t["pool_epochs"]
    if not 1 <= lo <= hi:
        problems.append(f"train.pool_epochs={t['pool_epochs']} must be [first, last] with 1 <= first <= last")
    if problems:
        raise ConfigError("; ".join(problems))


def run_dir_for(cfg: dict, sig: str) -> Path:
    return Path(cfg["results_dir"]) / "train" / f"{cfg['dataset']['name']}-{cfg['model']['name']}-{sig}"


# --------------------------------------------------------------------- run
def train(cfg: dict) -> Path:
    """One config -> one record. Returns the record's path."""
    check_config(cfg)
    sig = records.signature(cfg)
    run_dir = run_dir_for(cfg, sig)
    if records.is_complete(run_dir):
        log.info("complete run found, nothing to do: %s", run_dir)
        return run_dir / records.RECORD_NAME
    with records.exclusive(run_dir):  # a concurrent job training the same run: wait for it
        if records.is_complete(run_dir):
            return run_dir / records.RECORD_NAME
        return _train(cfg, sig, run_dir)


def _train(cfg: dict, sig: str, run_dir: Path) -> Path:
    timer = records.Timer()
    device = setup_runtime(cfg)
    seed_everything(cfg["seed"])

    with timer("data"):
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
        inputs, targets = training_windows(data.train, cfg["max_len"], cfg["train"].get("stride"))
    if len(inputs) == 0:
        raise ConfigError(f"dataset {data.name} yields no training windows at max_len={cfg['max_len']}")
    inputs, targets = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)

    model = build_model(cfg["model"]["name"], data.num_items, max_len=cfg["max_len"],
                        **model_options(cfg["model"])).to(device)
    t = cfg["train"]
    optimizer = Adam(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    shuffle = torch.Generator().manual_seed(cfg["seed"])

    record = records.new_record("train", cfg, sig)
    record["dataset"] = {"name": data.name, "sha256": data.sha256, "stats": data.stats}
    record["model"] = {"name": cfg["model"]["name"], "parameters": model.num_parameters()}
    run_dir.mkdir(parents=True, exist_ok=True)
    records.write_text(run_dir / "config.json", records.canonical_json(cfg) + "\n")

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

    select_protocol, select_metric = t["select_protocol"], t["select_metric"]
    pool_lo, pool_hi = t["pool_epochs"]
    epoch_seconds = [h["seconds"] for h in state["history"]]
    bar = tqdm(total=t["epochs"], initial=state["epoch"], desc=f"train {data.name}/{cfg['model']['name']}",
               disable=not cfg.get("progress", True), dynamic_ncols=True, unit="ep")
    try:
        for epoch in range(state["epoch"] + 1, t["epochs"] + 1):
            t0 = time.perf_counter()
            with timer("train"):
                loss = train_epoch(model, optimizer, inputs, targets, t["batch_size"], shuffle, epoch)
            with timer("valid"):
                result = evaluate(model, data, "valid", protocols=(select_protocol,),
                                  max_len=cfg["max_len"], batch_size=cfg["eval"]["batch_size"], device=device)
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
            if state["bad_epochs"] >= t["patience"]:
                break
    except TrainingError as exc:
        record.update(status="failed", error=str(exc), timings=timer.as_dict())
        records.write_record(run_dir, record)
        raise
    finally:
        bar.close()

    with timer("test"):
        model.load_state_dict(torch.load(run_dir / "best.pt", map_location=device, weights_only=True))
        protocols = tuple(cfg["eval"]["protocols"])
        results = {split: evaluate(model, data, split, protocols=protocols, max_len=cfg["max_len"],
                                   batch_size=cfg["eval"]["batch_size"], device=device,
                                   exclude_history=cfg["eval"]["exclude_history"])
                   for split in ("valid", "test")}
        # The floor every learner must clearly beat, on the same candidates.
        popularity = evaluate(Popularity.fit(data.train, data.num_items), data, "test", protocols=protocols,
                              max_len=cfg["max_len"], batch_size=cfg["eval"]["batch_size"], device=device,
                              exclude_history=cfg["eval"]["exclude_history"])
    per_user = pd.concat([r.to_frame().assign(split=split) for split, r in results.items()], ignore_index=True)
    with records.atomic_path(run_dir / "per_user.parquet") as tmp:
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
