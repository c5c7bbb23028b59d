"""How long ``analysis/make_tables.py`` takes on 10,000 run records.

    python benchmarks/make_tables.py [--runs 10000] [--keep DIR]

Writes N generated records in the layout ``td3.distill`` writes (a real record's config,
nine metrics × two splits × two rankings, timings; the numbers drawn at random around
plausible means), then times the table build: reading the records, and everything
(tables 2-6 under both rankings and both summary protocols, Figure 4, the CSV/LaTeX/
Markdown files). Prints wall and CPU seconds (CPU: this process and the one that draws the
figures, the figure that does not grow when other jobs share the cores); asserts nothing.
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "analysis"))
METRICS = [f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)]
MEANS = {"td3": 0.40, "farzi": 0.35, "random": 0.25, "longest": 0.27, "full": 0.46}


def generate(root: Path, n: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    datasets = ["ml-100k", "magazine-2018", "epinions", "ml-1m"]
    sizes = ["10x10", "15x30", "30x50", "50x50", "25x150"]
    methods = list(MEANS)
    written = 0
    for seed_, dataset, size, method, protocol in itertools.product(range(10_000), datasets, sizes, methods,
                                                                    ("scratch", "paper")):
        if written >= n:
            break
        if method not in ("td3", "farzi") and protocol == "paper":
            continue
        mu, zeta = map(int, size.split("x"))
        name = f"{dataset}-{method}-{size}-{protocol}-{seed_:05d}"
        run_dir = root / "distill" / name
        run_dir.mkdir(parents=True)
        base = MEANS[method] + (0.05 if protocol == "paper" else 0.0)
        metrics = {split: {p: {m: float(np.clip(base * (0.2 if p == "full" else 1) + rng.normal(0, 0.01), 0, 1))
                               for m in METRICS} for p in ("recbole100", "unseen100", "full")} for split in ("valid", "test")}
        cfg = {"method": method, "seed": seed_, "teacher_seed": 0, "max_len": zeta,
               "dataset": {"name": dataset}, "model": {"name": "sasrec", "hidden_size": 32},
               "summary": {"mu": mu, "zeta": zeta, "d1": 8, "d2": 8, "latent_dim": 32},
               "distill": {"steps": 200, "window": 40, "init": "per_step", "init_from": "pool",
                           "inner": {"lr": 0.005, "alt": True, "embedding": "frozen", "batch_size": 15},
                           "outer": {"lr": 0.03, "epochs": 30, "fsa": True, "batch_size": 4096}},
               "evaluation": {"models": ["sasrec"], "seeds": [seed_], "epochs": 200, "protocol": protocol}}
        record = {"schema": 1, "kind": "distill", "status": "complete", "signature": name, "config": cfg,
                  "method": method, "seed": seed_, "git": {"sha": "0" * 40, "dirty": False},
                  "packages": {"torch": "2.13.0"}, "dataset": {"name": dataset, "sha256": "f" * 64},
                  "evaluations": [{"model": "sasrec", "seed": seed_, "protocol": protocol, "metrics": metrics,
                                   "best_epoch": 100, "seconds": 14.0}],
                  "metrics": metrics, "timings": {"total": 4000.0}, "peak_memory_mb": 760.0,
                  "distill": {"seconds": 3600.0, "cached": False, "seconds_per_outer_step": 5.0,
                              "validations": [{"step": s, "valid_MRR@10": 0.3} for s in range(50, 750, 50)]}}
        (run_dir / "record.json").write_text(json.dumps(record, indent=2))
        written += 1
    return written


def _children_cpu() -> float:
    """CPU seconds of the child processes waited for (make_tables' figure process)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--keep", default=None, help="write the records here and keep them")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="td3-bench-tables-"))
    try:
        t0 = time.perf_counter()
        n = generate(root / "runs", args.runs)
        t_gen = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in (root / "runs").rglob("record.json")) / 2**20

        from load import load
        t0, c0 = time.perf_counter(), time.process_time()
        runs, values = load(root / "runs", splits=("test",))  # as make_tables reads them
        t_load, c_load = time.perf_counter() - t0, time.process_time() - c0

        import make_tables
        t0, c0, children0 = time.perf_counter(), time.process_time(), _children_cpu()
        make_tables.main(["--results", str(root / "runs"), "--out", str(root / "tables")])
        t_all, c_all = time.perf_counter() - t0, time.process_time() - c0 + _children_cpu() - children0
        print(f"{n} records ({size_mb:.0f} MB of JSON, generated in {t_gen:.1f} s): read into "
              f"{len(runs)} runs × {len(values)} test values in {t_load:.2f} s ({c_load:.2f} s CPU); "
              f"all tables and figures in {t_all:.1f} s ({c_all:.1f} s CPU)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
