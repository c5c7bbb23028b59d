"""How an outer step's time and memory grow with |V|, μ, ζ, the real batch and the window W.

    python benchmarks/cost_model.py [--steps 3] [--threads 1] [--factors items,mu,zeta,batch,window]

One factor at a time is varied around a reference point (a generated catalog of 2,000 items
and 2,000 users, μ×ζ = 30×50, real batch 4096 examples, N = 200, W = 40, SASRec hidden 32,
frozen inner item table), each point in a fresh process (so that its peak RSS is its own)
through ``benchmarks/outer_step.py``. For each point: the median CPU seconds per outer step
(at one thread, what a quiet machine's wall clock shows) and the peak RSS. For each factor:
the exponent of a power-law fit, time ∝ factor^b, over its points (b = 1: linear), and an
affine fit, time ≈ a + b·factor (a: what does not grow with it; b: the cost per unit). The
same seeded M ~ U(W, N) sequence is drawn at every point except where N or W change.
Prints a Markdown table; asserts nothing.
"""
from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = ["dataset=synthetic", "preset=ml-100k", "dataset.num_users=2000", "dataset.num_items=2000",
        "summary.mu=30", "summary.zeta=50", "distill.outer.batch_size=4096", "distill.window=40"]
FACTORS = {  # name: (override key, values; the reference value is the one in BASE)
    "items": ("dataset.num_items", [1000, 2000, 4000, 8000, 16000]),
    "mu": ("summary.mu", [15, 30, 60, 120]),
    "zeta": ("summary.zeta", [25, 50, 100]),
    "batch": ("distill.outer.batch_size", [1024, 4096, 16384]),
    "window": ("distill.window", [10, 20, 40, 80]),
}
LINE = re.compile(r"CPU ([\d.]+) s .* peak RSS (\d+) MB")


def measure(overrides: list[str], steps: int, threads: int) -> tuple[float, int]:
    cmd = [sys.executable, str(REPO / "benchmarks" / "outer_step.py"), "--steps", str(steps),
           "--threads", str(threads), *overrides]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    match = LINE.search(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "")
    if out.returncode != 0 or not match:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return float(match.group(1)), int(match.group(2))


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def affine(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares a, b of y = a + b·x: the fixed part and the cost per unit of the factor."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--factors", default=",".join(FACTORS))
    args = ap.parse_args()
    print(f"outer step cost, {args.threads} thread(s), median of {args.steps} steps; reference: "
          f"{' '.join(BASE)}\n")
    print("| factor | value | CPU s / outer step | peak RSS MB |\n|---|---|---|---|")
    fits = []
    for name in args.factors.split(","):
        key, values = FACTORS[name]
        times, mems = [], []
        for value in values:
            if name == "window":  # N must stay >= W
                extra = [f"{key}={value}", f"distill.steps={max(200, value)}"]
            else:
                extra = [f"{key}={value}"]
            cpu, rss = measure([*BASE, *extra], args.steps, args.threads)
            times.append(cpu)
            mems.append(rss)
            print(f"| {name} | {value} | {cpu:.2f} | {rss} |", flush=True)
        fits.append((name, slope(values, times), slope(values, mems), affine(values, times), affine(values, mems)))
    print("\n| factor | time ∝ factor^b | CPU s ≈ a + b·factor | peak RSS ∝ factor^b | MB ≈ a + b·factor |\n"
          "|---|---|---|---|---|")
    for name, bt, bm, (ta, tb), (ma, mb) in fits:
        print(f"| {name} | b = {bt:.2f} | {ta:.2f} + {tb:.2e}·x | b = {bm:.2f} | {ma:.0f} + {mb:.3g}·x |")


if __name__ == "__main__":
    main()
