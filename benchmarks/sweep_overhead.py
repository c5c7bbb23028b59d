"""What a launcher costs: an 8-point sweep of trivial runs through SLURM and through Ray Tune.

    slurm/local-cluster.sh start && export SLURM_CONF=/tmp/td3-slurm/slurm.conf
    python benchmarks/sweep_overhead.py [--points 8] [--keep DIR]

Each point is a Random-baseline run of the smoke sweep cut to one training epoch (a few
seconds of work), so the figures are mostly the launchers': for SLURM, submission,
scheduling, Submitit's pickles and the Python start of each task; for Ray, the cluster's
start, the trials' actors and Tune's bookkeeping. Prints, for each launcher, the end-to-end
wall-clock seconds, the seconds the runs themselves recorded, and the overhead per point:
(wall-clock × parallel slots − Σ run seconds) / points. Asserts nothing about them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], root: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TD3_")}
    env.update(TD3_RESULTS_DIR=str(root / "runs"), TD3_DATA_DIR=str(root / "data"), PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def run_seconds(root: Path) -> list[float]:
    recs = [json.loads(p.read_text()) for p in (root / "runs" / "distill").glob("*/record.json")]
    assert all(r["status"] == "complete" for r in recs)
    return [r["timings"]["total"] for r in recs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--keep", default=None, help="keep the results roots here")
    args = ap.parse_args()
    if not os.environ.get("SLURM_CONF") and not shutil.which("sinfo"):
        sys.exit("no SLURM: start slurm/local-cluster.sh and export SLURM_CONF")
    slots = os.cpu_count() or 1
    seeds = ",".join(str(s) for s in range(args.points))
    point = ["+sweep=smoke", f"seed={seeds}", "method=random", "evaluation.epochs=1", "threads=1"]
    base = Path(args.keep or tempfile.mkdtemp(prefix="td3-sweep-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"{args.points} points (Random, 1 training epoch), {slots} slots, results under {base}")
    print(f"{'launcher':<16}{'wall s':>9}{'Σ run s':>10}{'mean run s':>12}{'overhead s/point':>18}")
    for name, cmd in [
        ("submitit_slurm", [sys.executable, "-m", "td3.sweep", "-m", *point, "hydra/launcher=td3_slurm"]),
        ("ray tune", [sys.executable, "-m", "td3.tune", *point, "--cpus-per-trial", "1"]),
    ]:
        root = base / name.replace(" ", "_")
        wall = run(cmd, root)
        secs = run_seconds(root)
        assert len(secs) == args.points, f"{name}: {len(secs)} records for {args.points} points"
        overhead = (wall * slots - sum(secs)) / args.points
        print(f"{name:<16}{wall:>9.1f}{sum(secs):>10.1f}{sum(secs) / len(secs):>12.2f}{overhead:>18.2f}", flush=True)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
