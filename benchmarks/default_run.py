"""Wall time of `python -m td3.distill` with no arguments, and whether it beats Random.

    python benchmarks/default_run.py [--seeds 0]

Runs the embedded default exactly as a new user would (a fresh results and data directory,
so the teacher is trained too), times the whole command, then runs `method=random` at the
same interaction budget (μ·ζ real interactions) in the same directory, and prints both
runs' test NDCG@10 and HR@10 under the ranking protocols (recbole100, unseen100, full). The target is under two minutes
for the default run on 2 CPU cores, and TD3 above Random.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(root: Path, *overrides: str) -> tuple[float, dict]:
    env = {**os.environ, "TD3_RESULTS_DIR": str(root / "runs"), "TD3_DATA_DIR": str(root / "data")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "td3.distill", "progress=false", *overrides], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"td3.distill {' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    record = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    return seconds, record


def figures(record: dict) -> str:
    test = record["metrics"]["test"]
    return "  ".join(f"{p} NDCG@10 {test[p]['NDCG@10']:.4f} HR@10 {test[p]['HR@10']:.4f}"
                     for p in ("recbole100", "unseen100", "full") if p in test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="td3-default-") as tmp:
            root = Path(tmp)
            extra = [] if seed == 0 else [f"seed={seed}"]
            seconds, td3 = run(root, *extra)
            random_seconds, random = run(root, "method=random", *extra)
            print(f"seed {seed}: python -m td3.distill {' '.join(extra)}: {seconds:.1f} s wall "
                  f"(teacher {td3['timings'].get('teacher', float('nan')):.1f} s, "
                  f"distillation {(td3.get('distill') or {}).get('seconds', float('nan')):.1f} s, "
                  f"evaluation {td3['timings'].get('evaluation', float('nan')):.1f} s)")
            print(f"  td3    {figures(td3)}")
            print(f"  random {figures(random)}  ({random_seconds:.1f} s)")


if __name__ == "__main__":
    main()
