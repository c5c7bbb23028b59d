"""What a launcher costs: an 8-point sweep of trivial runs through SLURM and through Ray Tune.

    slurm/local-cluster.sh start && export SLURM_CONF=/tmp/td3-slurm/slurm.conf
    python benchmarks/sweep_overhead.py [--points 8] [--keep DIR] [--only slurm|ray]
        [--cgroup DIR] [SWEEP OVERRIDES, e.g. hydra.launcher.runs_per_task=8]

Each point is a Random-baseline run of the smoke sweep cut to one training epoch (a few
seconds of work), so the figures are mostly the launchers': for SLURM, submission,
scheduling, Submitit's pickles and the Python start of each task; for Ray, the cluster's
start, the trials' actors and Tune's bookkeeping. Prints, for each launcher, the end-to-end
wall-clock seconds, the seconds the runs themselves recorded, and the overhead per point:
(wall-clock × parallel slots − Σ run seconds) / points. Asserts nothing about them.

Wall-clock figures are only comparable on a quiet machine. ``--cgroup`` names a cgroup
(v1 ``cpuacct`` or v2) that holds this script and the cluster's daemons (start both from a
shell moved into it): every process a sweep starts, SLURM's tasks included, then adds to
its counter, and the script also prints the CPU seconds each launcher took in all, which
other load on the machine hardly changes. Overrides after the options go to the SLURM
sweep only (e.g. ``hydra.launcher.runs_per_task=8``, to compare groupings).
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


def cgroup_cpu_seconds(cgroup: Path | None) -> float:
    """CPU seconds the processes of ``cgroup`` have used so far (nan without one)."""
    if cgroup is None:
        return float("nan")
    if (cgroup / "cpuacct.usage").is_file():        # cgroup v1: nanoseconds
        return int((cgroup / "cpuacct.usage").read_text()) / 1e9
    stat = dict(line.split() for line in (cgroup / "cpu.stat").read_text().splitlines())
    return int(stat["usage_usec"]) / 1e6            # cgroup v2


def run_seconds(root: Path) -> list[float]:
    recs = [json.loads(p.read_text()) for p in (root / "runs" / "distill").glob("*/record.json")]
    assert all(r["status"] == "complete" for r in recs)
    return [r["timings"]["total"] for r in recs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--keep", default=None, help="keep the results roots here")
    ap.add_argument("--only", choices=("slurm", "ray"), default=None, help="measure one launcher only")
    ap.add_argument("--cgroup", type=Path, default=None,
                    help="a cgroup holding this script and the cluster: also print CPU seconds")
    args, extra = ap.parse_known_args()
    if not os.environ.get("SLURM_CONF") and not shutil.which("sinfo"):
        sys.exit("no SLURM: start slurm/local-cluster.sh and export SLURM_CONF")
    slots = os.cpu_count() or 1
    seeds = ",".join(str(s) for s in range(args.points))
    point = ["+sweep=smoke", f"seed={seeds}", "method=random", "evaluation.epochs=1", "threads=1"]
    base = Path(args.keep or tempfile.mkdtemp(prefix="td3-sweep-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"{args.points} points (Random, 1 training epoch), {slots} slots, results under {base}")
    print(f"{'launcher':<16}{'wall s':>9}{'Σ run s':>10}{'mean run s':>12}{'overhead s/point':>18}{'CPU s':>8}")
    launchers = [
        ("slurm", "submitit_slurm", [sys.executable, "-m", "td3.sweep", "-m", *point, "hydra/launcher=td3_slurm",
                                     *extra]),
        ("ray", "ray tune", [sys.executable, "-m", "td3.tune", *point, "--cpus-per-trial", "1"]),
    ]
    for key, name, cmd in launchers:
        if args.only and key != args.only:
            continue
        root = base / name.replace(" ", "_")
        cpu0 = cgroup_cpu_seconds(args.cgroup)
        wall = run(cmd, root)
        cpu = cgroup_cpu_seconds(args.cgroup) - cpu0
        secs = run_seconds(root)
        assert len(secs) == args.points, f"{name}: {len(secs)} records for {args.points} points"
        overhead = (wall * slots - sum(secs)) / args.points
        print(f"{name:<16}{wall:>9.1f}{sum(secs):>10.1f}{sum(secs) / len(secs):>12.2f}{overhead:>18.2f}"
              f"{cpu:>8.1f}", flush=True)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
