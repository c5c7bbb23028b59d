"""How long the rest of a set of sweeps will take, from the runs already made.

    python benchmarks/sweep_plan.py --results $TD3_RESULTS_DIR [--parallel 2] table3 table2 ...
    python benchmarks/sweep_plan.py --results ... table3:dataset=ml-100k   # a sweep with overrides
    python benchmarks/sweep_plan.py --results $TD3_RESULTS_DIR --priced-from results/learners-tuned learners_tuned

Expands each sweep's grid (as ``td3.sweep`` does), finds which grid points have a complete
record, and estimates the others from complete records of the same kind: a run costs its
evaluation (median over records of the same dataset, method, size and evaluated learners, per learner seed),
plus its distillation the first time its summary is needed, plus its teachers (one per inner
learner of a distillation) the first time each is needed (median over training runs of the same dataset and learner). A
distillation is priced per outer step times the outer steps it has left: its length as its
resume checkpoint (``state.pt``) records it, or else from the real batches per outer epoch
that records of the dataset and outer batch size give, less the steps that checkpoint has
done; per step at the pace that checkpoint records, or else the median of complete
distillations of its kind (``distill_kinds``: the same dataset, method, size, inner and
validating learners, and where records allow, the same inner loop). A started distillation
is thus priced from its checkpoint alone, whatever records the root holds. Each unfinished
summary gets a line. Kinds never run yet are listed as unknown: run one of each first.
Prints, per sweep and in all, the runs left, CPU-hours and wall-clock hours at
``--parallel`` jobs (one CPU each).

Costs are CPU seconds (the process's time on every thread) where records and checkpoints
keep them; older ones kept wall seconds alone, which equal the CPU seconds of a one-thread run
that had its core to itself and overstate them where runs shared the cores. A summary priced
from such a checkpoint says so ("wall-minutes"), and the total how much of it is wall time.

The records that set the prices are those of ``--results`` itself, or of the roots
``--priced-from`` names instead (a published root under ``results/``): a sweep not yet
started is priced from the runs that made the published figures. Their pace is that of the
machine that made them (their records' ``environment``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omegaconf import OmegaConf  # noqa: E402

from td3 import layout, records  # noqa: E402
from td3.config import SUMMARY_METHODS, RunConfig  # noqa: E402
from td3.grid import expand  # noqa: E402
from td3.layout import distillation, summary_dir_for, train_dir_for  # noqa: E402
from td3.config import compose_config  # noqa: E402


def size(cfg: dict) -> str:
    return f"{cfg['summary']['mu']}x{cfg['summary']['zeta']}"


def observed(roots: list[Path]) -> dict:
    """Median seconds per kind, from the complete records under ``roots``."""
    evals, teachers = defaultdict(list), defaultdict(list)
    per_step, batches = defaultdict(list), {}
    for path in (p for root in roots for p in sorted(root.glob("distill/*/record.json"))):
        r = json.loads(path.read_text())
        if r.get("status") != "complete":
            continue
        cfg = r["config"]
        key = (cfg["dataset"]["name"], cfg["method"], size(cfg), ",".join(cfg["evaluation"]["models"]))
        evals[key].append(cpu_or_wall(r["timings"], "evaluation") / learner_seeds(cfg))
        d = r.get("distill") or {}
        if d and not d.get("cached"):
            if d.get("outer_steps"):
                for kind in distill_kinds(cfg):
                    per_step[kind].append(spent(d)[0] / d["outer_steps"])
                batches[(cfg["dataset"]["name"], cfg["distill"]["outer"]["batch_size"])] = d["batches_per_epoch"]
    for path in (p for root in roots for p in sorted(root.glob("train/*/record.json"))):
        r = json.loads(path.read_text())
        if r.get("status") == "complete":
            cfg = r["config"]
            teachers[(cfg["dataset"]["name"], cfg["model"]["name"], cfg["max_len"])].append(cpu_or_wall(r["timings"], "total"))
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}  # noqa: E731
    return {"eval": med(evals), "teacher": med(teachers), "per_step": med(per_step), "batches": batches}


def cpu_or_wall(timings: dict, section: str) -> float:
    """A record's section in CPU seconds (process time, every thread's), or, in a record from
    before those were kept, its wall seconds: the same for a one-thread run alone on its core,
    more where runs shared the cores."""
    cpu = timings.get("cpu_seconds") or {}
    return cpu[section] if section in cpu else timings.get(section, 0.0)


def spent(distill: dict) -> tuple[float | None, str]:
    """A distillation's outer loop so far (a record's ``distill`` or a checkpoint's ``state``)
    and its unit: (CPU seconds, "CPU") where counted (None in one resumed from before they
    were), else (wall seconds, "wall")."""
    if distill.get("cpu_seconds"):
        return distill["cpu_seconds"], "CPU"
    return distill.get("seconds"), "wall"


def learner_seeds(cfg: dict) -> int:
    """Learner seeds per evaluated learner (evaluation.seeds): an evaluation costs each once."""
    return max(1, len(cfg["evaluation"].get("seeds") or [cfg["seed"]]))


def distill_kinds(cfg: dict) -> tuple[tuple, tuple]:
    """What a distillation's cost per outer step depends on, finest first: the dataset, method
    and size, which learners train in the inner loop and which validate (k learners'
    validation costs k times); then the summary's Tucker ranks (TD3's; none for the other
    methods), the inner loop's length and what each inner step computes
    (its batch, the item table trained or frozen, sampled items, BERT4Rec's loss, a learned
    η), the real batch each outer step scores, and how often and how long it validates. A
    distillation is priced by the finest kind that complete records have."""
    d = cfg["distill"]
    inner = d.get("inner") or {}   # a record from before an option existed lacks its key
    learners = tuple(d.get("learners") or ()) or (cfg["model"]["name"],)
    coarse = (cfg["dataset"]["name"], cfg["method"], size(cfg), learners, d.get("validate_learners", "model"))
    outer = d.get("outer") or {}
    ranks = (cfg["summary"].get("d1"), cfg["summary"].get("d2")) if cfg["method"] == "td3" else None
    fine = coarse + (ranks, d.get("steps"), d.get("window"), inner.get("batch_size"), inner.get("embedding"),
                     d.get("sampled_items", 0), inner.get("bidirectional_loss") if "bert4rec" in learners else None,
                     outer.get("batch_size"), inner.get("learn_lr", False),
                     d.get("validate_every"), d.get("validate_epochs"))
    return fine, coarse


def pace(cfg: dict, seen: dict) -> float | None:
    """Seconds per outer step of a distillation like ``cfg``'s, from records of its finest kind."""
    return next((seen["per_step"][k] for k in distill_kinds(cfg) if k in seen["per_step"]), None)


def distill_cost(cfg: dict, summary: Path, seen: dict) -> tuple[float, int, int, str] | None:
    """(seconds, outer steps left, outer steps in all, "CPU" or "wall") of the summary's
    distillation, or None when neither its checkpoint nor a record of its kind gives a pace, or
    neither its checkpoint (its cosine schedule's length) nor a record its dataset's batches per
    outer epoch gives its length. "wall": the pace is that of a checkpoint
    which kept wall seconds alone (made before CPU time was counted), the run's CPU time less
    where it shared its cores."""
    rate, done, unit, total = pace(cfg, seen), 0, "CPU", None
    if (summary / "state.pt").is_file():
        import torch
        saved = torch.load(summary / "state.pt", map_location="cpu", weights_only=False)
        done, (seconds, kept) = saved["state"]["step"], spent(saved["state"])
        if done and seconds:
            rate, unit = seconds / done, kept   # its own pace, validations included
        total = (saved.get("scheduler") or {}).get("total_steps")   # its length, as the run computed it
    if total is None:
        outer = RunConfig.of(cfg).distill.outer
        per_epoch = seen["batches"].get((cfg["dataset"]["name"], outer.batch_size))
        total = None if per_epoch is None else outer.schedule(per_epoch)[1]
    if rate is None or total is None:
        return None
    return rate * (total - done), total - done, total, unit


def training_cost(cfg: dict, model: str, seed: int, seen: dict, counted: set, unknown: dict) -> float:
    """Seconds of the full-data training run (``model``, ``seed``) when it is still to be made
    and not already counted; 0 otherwise."""
    run = RunConfig.of(cfg)
    tcfg = {**run.teacher(), "seed": seed, "model": run.learner(model)}
    run_dir = train_dir_for(tcfg, records.signature(tcfg))
    if run_dir in counted or records.is_complete(run_dir):
        return 0.0
    counted.add(run_dir)
    key = (cfg["dataset"]["name"], model, cfg["max_len"])
    if key in seen["teacher"]:
        return seen["teacher"][key]
    unknown[f"{key[0]} {model} max_len {key[2]} full-data training"] += 1
    return 0.0


def plan(root: Path, sweeps: list[str], parallel: int, priced_from: list[Path] | None = None) -> int:
    for source in priced_from or []:
        if not source.is_dir():
            raise SystemExit(f"sweep_plan: --priced-from {source}: no such results root")
    seen = observed(priced_from or [root])
    counted_summaries, counted_teachers = set(), set()
    total_seconds, total_left, unknown_all = 0.0, 0, defaultdict(int)
    wall_priced = 0.0   # seconds priced at a checkpoint's wall pace (no CPU time kept)
    for spec in sweeps:
        name, _, extra = spec.partition(":")
        sweeper = OmegaConf.load(REPO / "sweeps" / f"{name}.yaml").hydra.sweeper
        args = [a for a in extra.split(",,") if a] if extra else []
        jobs = expand(sweeper.get("params"), sweeper.get("grid"), [f"+sweep={name}", *args])
        seconds, left, unknown = 0.0, 0, defaultdict(int)
        for job in jobs:
            cfg = compose_config(job)
            cfg["results_dir"] = str(root)
            if records.is_complete(distillation(cfg).dir):
                continue
            left += 1
            ds, method = cfg["dataset"]["name"], cfg["method"]
            key = (ds, method, size(cfg), ",".join(cfg["evaluation"]["models"]))
            if method == "full":  # its cost is the full-data training runs of its learners
                for model in cfg["evaluation"]["models"]:
                    seconds += training_cost(cfg, model, cfg["seed"], seen, counted_teachers, unknown)
                continue
            if key in seen["eval"]:
                seconds += seen["eval"][key] * learner_seeds(cfg)
            else:
                unknown[f"{ds} {method} {size(cfg)} evaluation ({key[3]})"] += 1
            if method in SUMMARY_METHODS:
                summary = summary_dir_for(cfg)[0]
                if summary not in counted_summaries and not (summary / layout.SUMMARY_MARKER).is_file():
                    counted_summaries.add(summary)
                    cost = distill_cost(cfg, summary, seen)
                    if cost is not None:
                        seconds += cost[0]
                        print(f"  to distil: {summary.name}: {cost[1]} of {cost[2]} outer steps left, "
                              f"{cost[0] / 60:.1f} {cost[3]}-minutes"
                              + (" (its checkpoint kept no CPU time: at its own wall pace)"
                                 if cost[3] == "wall" else ""))
                        if cost[3] == "wall":
                            wall_priced += cost[0]
                    else:
                        unknown[f"{ds} {method} {size(cfg)} distillation"] += 1
            for model in RunConfig.of(cfg).teachers_needed:
                seconds += training_cost(cfg, model, cfg["teacher_seed"], seen, counted_teachers, unknown)
        print(f"{spec}: {len(jobs)} grid points, {left} left, {seconds / 3600:.1f} CPU-hours known"
              + (f"; unknown: {dict(unknown)}" if unknown else ""))
        total_seconds += seconds
        total_left += left
        for k, v in unknown.items():
            unknown_all[k] += v
    print(f"in all: {total_left} runs left, {total_seconds / 3600:.1f} CPU-hours of known kinds, "
          f"{total_seconds / 3600 / parallel:.1f} h wall at {parallel} parallel jobs"
          + (f"; {sum(unknown_all.values())} costs of kinds never run yet" if unknown_all else ""))
    if wall_priced:
        print(f"  of those, {wall_priced / 3600:.1f} are wall hours, at the pace of runs whose checkpoints kept "
              f"no CPU time: running side by side as they did, each finishes in about its own wall time left, "
              f"not in the sum divided by the parallel jobs")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweeps", nargs="+", help="sweep names, each optionally name:override,,override")
    ap.add_argument("--results", required=True, help="the results root the sweeps write to")
    ap.add_argument("--parallel", type=int, default=2, help="jobs running at once (one CPU each)")
    ap.add_argument("--priced-from", action="append", type=Path, default=None, metavar="ROOT",
                    help="a results root whose complete records set the prices, instead of --results "
                         "(repeat it for several)")
    args = ap.parse_args()
    return plan(Path(args.results), args.sweeps, args.parallel, args.priced_from)


if __name__ == "__main__":
    sys.exit(main())
