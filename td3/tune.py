"""Ray Tune: ``python -m td3.tune +sweep=table3 [overrides] [--address auto] [--scheduler asha]``.

The same grid as ``python -m td3.sweep -m +sweep=...`` (the sweep file and the command
line's overrides, expanded by ``td3.grid.expand``), each point one Ray Tune trial calling
``td3.run.run``, so the records are the same records, in the same directories: a point
that is complete already (by any launcher) is not run again, and a broken one resumes.

- ``--address``: a running cluster (``auto``, ``ray://host:10001``, ``host:6379``);
  without it Ray starts a local one. Under ``ray job submit`` the job's cluster is used.
- ``--scheduler asha``: ASHA stops poor trials early on their validation score
  (``valid_MRR@10``, reported after each validation of a summary): for learning-rate
  searches. A stopped trial keeps its checkpoint and its record says ``running``:
  relaunching the point resumes it.
- ``--cpus-per-trial``: CPUs Ray reserves per trial; torch uses as many threads.
- ``--gpus-per-trial``: GPUs Ray reserves per trial (a fraction shares one GPU between
  trials). Ray shows a trial only the GPUs it reserved (``CUDA_VISIBLE_DEVICES``), so the
  run's ``cuda`` is its own; a trial given GPUs runs with ``device=cuda`` unless the
  overrides name a device, so that a trial that cannot see its GPU fails instead of
  quietly running on the CPU. A trial given none sees no GPU and runs on the CPU.
- ``--dry-run``: print the trials and what each would reserve, start nothing.
- ``--storage-path``: Ray Tune's own results (default ``<results_dir>/ray``, absolute).

Exits with status 1 when any trial failed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from . import records
from .config import compose_config

log = logging.getLogger("td3.tune")

METRIC = "valid_MRR@10"
#: Environment passed to the trials: where data and results live.
ENV_PREFIXES = ("TD3_",)


def grid_jobs(overrides: list[str]) -> tuple[str, list[list[str]]]:
    """The sweep's name and its jobs (each a list of overrides)."""
    from .grid import expand

    fixed = [o for o in overrides if "," not in o.split("=", 1)[-1]]  # a sweep value is not composable
    base = compose_config(fixed, hydra=True)
    sweeper = base["hydra"].get("sweeper", {}) or {}
    name = (base.get("sweep") or {}).get("name", "adhoc")
    return name, expand(sweeper.get("params"), sweeper.get("grid"), overrides)


def trial_resources(cpus: float, gpus: float):
    """What Ray reserves for one trial: a placement group of one bundle (the form
    ``tune.with_resources`` turns a resource dict into), with no GPU entry when none is asked."""
    from ray.tune import PlacementGroupFactory

    bundle = {"CPU": float(cpus)}
    if gpus:
        bundle["GPU"] = float(gpus)
    return PlacementGroupFactory([bundle])


def trial_config(cfg: dict, cpus: float, gpus: float) -> dict:
    """A grid point's config as a trial runs it: results root absolute (trials run in other
    processes, on other nodes), torch threads = its CPUs, and on the GPU it was given."""
    cfg = dict(cfg)
    cfg["results_dir"] = str(Path(cfg["results_dir"]).resolve())
    cfg["threads"] = max(1, int(cpus))
    if gpus and cfg.get("device") in (None, "auto"):
        cfg["device"] = "cuda"  # not in the signature: the same run as on the CPU, found and resumed alike
    return cfg


def trial(config: dict, configs: list[dict]) -> None:
    """One Ray Tune trial: a grid point's run, reporting validations and the final result."""
    from ray import tune

    from .run import run

    cfg = configs[config["job"]]
    reported = {"any": False}

    def report(metrics: dict) -> None:
        reported["any"] = True
        tune.report({METRIC: metrics["valid_MRR@10"], "outer_step": metrics["step"]})

    result = run(cfg, report=report)
    record = records.read_record(result.run_dir) or {}
    final = {"status": result.status, "run_dir": result.run_dir, "signature": result.signature,
             "error": result.error or ""}
    try:
        final[METRIC] = record["metrics"]["valid"]["recbole100"]["MRR@10"]
    except (KeyError, TypeError):
        final[METRIC] = float("nan")
    final.update({f"test_{k}": v for k, v in result.metrics.items()})
    tune.report(final)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m td3.tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--address", default=None, help="Ray cluster to join (default: a local one)")
    ap.add_argument("--scheduler", choices=("fifo", "asha"), default="fifo")
    ap.add_argument("--cpus-per-trial", type=float, default=1)
    ap.add_argument("--gpus-per-trial", type=float, default=0,
                    help="GPUs per trial (0.5: two trials share one); trials given GPUs run with device=cuda")
    ap.add_argument("--max-concurrent", type=int, default=0, help="0: as many as the cluster fits")
    ap.add_argument("--grace-period", type=int, default=2, help="ASHA: validations before a trial may stop")
    ap.add_argument("--storage-path", default=None)
    ap.add_argument("--name", default=None, help="experiment name (default: the sweep's)")
    ap.add_argument("--results", default=None, metavar="DIR",
                    help="results root every node sees (default: $TD3_RESULTS_DIR); for drivers started "
                         "where the shell's variables do not reach, as under `ray submit`")
    ap.add_argument("--env", action="append", default=[], metavar="TD3_NAME=VALUE",
                    help="set a TD3_* variable for the driver and every trial (repeatable), e.g. "
                         "--env TD3_DATA_MIRROR=/shared/datasets")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the trials to launch and each one's resources; start nothing")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +sweep=table3 seed=0,1")
    args = ap.parse_args(argv)
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        print(f"td3: error: --cpus-per-trial must be > 0 and --gpus-per-trial >= 0 (got "
              f"{args.cpus_per_trial:g}, {args.gpus_per_trial:g})", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith(ENV_PREFIXES):
            print(f"td3: error: --env {item!r}: expected TD3_NAME=VALUE", file=sys.stderr)
            return 2
        os.environ[key] = value
    if args.results:  # absolute: trials run in other processes, on other nodes
        os.environ["TD3_RESULTS_DIR"] = str(Path(args.results).expanduser().resolve())

    from .errors import TD3Error
    from .layout import distillation, is_done

    try:
        name, jobs = grid_jobs(args.overrides)
        configs = [trial_config(compose_config(job), args.cpus_per_trial, args.gpus_per_trial) for job in jobs]
    except TD3Error as exc:
        print(f"td3: error: {exc}", file=sys.stderr)
        return 2
    todo = [(job, cfg) for job, cfg in zip(jobs, configs) if not is_done(cfg)]
    resources = trial_resources(args.cpus_per_trial, args.gpus_per_trial)
    print(f"td3 tune: {len(jobs)} runs, {len(jobs) - len(todo)} complete already, launching {len(todo)}"
          f" (each reserving {resources.required_resources})", flush=True)
    if args.dry_run:
        for job, cfg in todo:
            print(f"  {distillation(cfg).dir.name}  device={cfg['device']} threads={cfg['threads']}  {' '.join(job)}")
        return 0
    if not todo:
        return 0

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    results_dir = Path(configs[0]["results_dir"])
    storage = Path(args.storage_path or results_dir / "ray").resolve()
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    init = {"address": args.address} if args.address else {"include_dashboard": False}
    # Under `ray job submit` the job has a runtime env of its own, holding the same TD3_*
    # variables (the driver inherited them): let Ray merge the two.
    os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
    ray.init(runtime_env={"env_vars": env}, **init)
    scheduler = (ASHAScheduler(metric=METRIC, mode="max", grace_period=args.grace_period,
                               max_t=max(2, max(c["distill"]["outer"]["epochs"] for c in configs) * 1000))
                 if args.scheduler == "asha" else FIFOScheduler())
    trainable = tune.with_resources(tune.with_parameters(trial, configs=[cfg for _, cfg in todo]), resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"job": tune.grid_search(list(range(len(todo))))},
        # reuse_actors: a trial runs in the process of the one before it (same resources),
        # which pays the worker's start and torch's import once instead of once per trial;
        # a trial still running after being stopped (ASHA) gets a fresh process from Ray
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1, reuse_actors=True,
                                    max_concurrent_trials=args.max_concurrent or None),
        run_config=tune.RunConfig(name=args.name or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(storage), verbose=1),
    )
    grid = tuner.fit()
    failed = 0
    for res in grid:
        m = res.metrics or {}
        status = m.get("status", "stopped" if res.error is None else "failed")
        if res.error is not None or status == "failed":
            failed += 1
        print(f"  {status:9s} {m.get('run_dir', '?')}" + (f"  ({m.get('error') or res.error})"
                                                        if status == "failed" else ""), flush=True)
    print(f"td3 tune: {len(grid)} trials, {failed} failed; Ray Tune results in {storage}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
