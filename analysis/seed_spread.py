"""How much of a figure's spread over seeds is the summary's, and how much the learner's.

    python analysis/seed_spread.py --results results/evaluation-seeds [--where KEY=VALUE ...]
        [--metric NDCG@10] [--protocol recbole100]

A run distils one summary (its seed) and trains each evaluation learner on it at every seed
of ``evaluation.seeds``. With several summary seeds each evaluated at several learner seeds
(``sweeps/evaluation_seeds.yaml``), this prints per learner the table of test figures
(summary seed × learner seed, in points) and splits their spread:
- learner: the standard deviation over learner seeds on one summary (pooled over summaries);
- summary: the standard deviation over summaries of their mean over learner seeds, less
  what the learners' own spread puts into those means (a one-way random-effects estimate,
  0 when the learners explain it all);
- one learner per summary (the tables' protocol: learner seed = summary seed): the spread
  of a seed's figure, √(summary² + learner²), beside the spread of the figures the runs
  made that way (the table's diagonal).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import load, matching  # noqa: E402


def figures(runs: pd.DataFrame, metric: str, protocol: str) -> pd.DataFrame:
    """One row per (model, summary seed, learner seed): the test figure in points."""
    rows = []
    for run_dir, seed in zip(runs.run_dir, runs.seed):
        record = json.loads((Path(run_dir) / "record.json").read_text())
        for e in record["evaluations"]:
            rows.append({"model": e["model"], "summary_seed": int(seed), "learner_seed": int(e["seed"]),
                         "value": 100 * e["metrics"]["test"][protocol][metric]})
    return pd.DataFrame(rows)


def spread(table: pd.DataFrame) -> dict:
    """table: summary seeds × learner seeds. The components of the spread (see the module's doc)."""
    k = table.shape[1]
    within = float(np.sqrt(table.var(axis=1, ddof=1).mean()))
    between_means = float(table.mean(axis=1).var(ddof=1)) if len(table) > 1 else math.nan
    summary = math.sqrt(max(0.0, between_means - within ** 2 / k))
    diagonal = [table.loc[s, s] for s in table.index if s in table.columns]
    return {"learner": within, "summary": summary, "one_per_summary": math.sqrt(summary ** 2 + within ** 2),
            "diagonal_sd": float(np.std(diagonal, ddof=1)) if len(diagonal) > 1 else math.nan,
            "mean_all": float(table.to_numpy().mean()), "mean_diagonal": float(np.mean(diagonal))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--where", nargs="*", default=[], help="KEY=VALUE conditions on the runs")
    ap.add_argument("--metric", default="NDCG@10")
    ap.add_argument("--protocol", default="recbole100")
    args = ap.parse_args(argv)

    runs, _ = load(args.results, splits=("test",))
    runs = runs[(runs.status == "complete") & matching(runs, args.where)]
    if runs.empty:
        raise SystemExit(f"no complete run of {args.results} matches {' '.join(args.where)}")
    if runs.seed.duplicated().any() or runs.dataset.nunique() != 1:
        raise SystemExit(f"the selection must hold one run per seed of one dataset; it holds "
                         f"{', '.join(Path(d).name for d in runs.run_dir)}")
    values = figures(runs, args.metric, args.protocol)
    for model, of_model in values.groupby("model", sort=False):
        table = of_model.pivot(index="summary_seed", columns="learner_seed", values="value").sort_index()
        if table.isna().any().any() or table.shape[1] < 2:
            raise SystemExit(f"{model}: every summary needs the same two or more learner seeds")
        s = spread(table)
        print(f"{model}: test {args.metric} ({args.protocol}, points), summary seed × learner seed")
        print(table.round(2).to_string())
        print(f"  sd over learner seeds on one summary {s['learner']:.2f}; over summaries {s['summary']:.2f}; "
              f"a seed's figure, one learner per summary, {s['one_per_summary']:.2f} (the runs' diagonal: "
              f"{s['diagonal_sd']:.2f}); mean of all {s['mean_all']:.2f}, of the diagonal {s['mean_diagonal']:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
