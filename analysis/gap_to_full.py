"""How far a summary's learners stand from the full data, and how sure that figure is.

    python analysis/gap_to_full.py --results results/learners-tuned --where method=td3 outer_epochs=60
        [--full-results ROOT] [--against KEY=VALUE ...] [--metric NDCG@10] [--protocol recbole100]
        [--goal -2] [--resamples 9999] [--split valid]

Selects the complete summary runs of a results root whose ``analysis/load.py`` columns match
every ``--where KEY=VALUE`` (one run per seed, one dataset), and the Full-Data runs of that
dataset in the same root, or in ``--full-results``; ``--against`` selects other reference runs
there instead (e.g. ``--against method=td3 outer_epochs=30``: one summary against another;
``KEY=`` selects the runs without a setting, e.g. ``learners=`` the single-learner summaries;
``KEY=A,B`` any of the values, e.g. ``seed=3,4,5``). For each learner both sides evaluated,
the gap is mean over seeds of the summary's test figure minus the full data's (in points, as
the tables give it), with two
intervals (95%) that answer two questions:
- over seeds: the paired t interval of the per-seed differences (would other seeds of the
  summary and of the full-data run give another gap?), when both sides ran the same seeds;
- over users: a percentile bootstrap of the users' mean over seeds of the difference (would
  another draw of test users give another gap?). The figure is the mean over the same test
  users on both sides; which users those are is chance, the same for every seed.
``--goal G`` adds the share of user resamples in which the gap is at least G (a goal of
"within 2 points" is ``--goal -2``). With several learners on seeds both sides ran, a last
line pools them: the mean gap over every (learner, seed) pair with its paired t-test, the
same over the seeds' means across the learners (the learners of one seed share a summary, so
its pairs are not independent), and with ``--goal G`` the one-sided p-value that the mean gap
exceeds G (e.g. ``--goal 1`` for "at least one point above"). ``--split valid`` compares the validation figures
instead, e.g. to choose between two settings without looking at the test users.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load import load, matching  # noqa: E402
from stats import above, bootstrap_mean, paired  # noqa: E402
from td3 import records  # noqa: E402  (light: per-user files are read with pandas)


def per_user(runs: pd.DataFrame, metric: str, protocol: str, split: str = "test") -> pd.Series:
    """(model, run seed, user) -> the ``split`` figure of the given runs, averaged over a run's
    learner seeds (``evaluation.seeds``) as its record's figures are."""
    frames = []
    for run_dir, seed in zip(runs.run_dir, runs.seed):
        frame = records.read_per_user(run_dir)
        frame = frame[(frame.split == split) & (frame.protocol == protocol) & (frame.metric == metric)]
        if frame.empty:
            raise SystemExit(f"{run_dir}: no per-user {split} {metric} under {protocol}")
        frames.append(frame.groupby(["model", "user"], sort=False)["value"].mean().reset_index()
                      .assign(run_seed=int(seed)))
    out = pd.concat(frames, ignore_index=True)
    if out.duplicated(["model", "run_seed", "user"]).any():
        raise SystemExit("several runs per (learner, seed): narrow the selection with --where")
    return out.set_index(["model", "run_seed", "user"])["value"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--where", nargs="*", default=[],
                    help="KEY=VALUE conditions on the summary runs (KEY=A,B: any of them)")
    ap.add_argument("--full-results", type=Path, default=None, help="the Full-Data runs' root (default: --results)")
    ap.add_argument("--against", nargs="*", default=["method=full"],
                    help="KEY=VALUE conditions on the reference runs (default: method=full)")
    ap.add_argument("--metric", default="NDCG@10")
    ap.add_argument("--protocol", default="recbole100")
    ap.add_argument("--goal", type=float, default=None, help="points: the share of resamples with a gap at least this")
    ap.add_argument("--resamples", type=int, default=9999)
    ap.add_argument("--split", choices=("test", "valid"), default="test")
    args = ap.parse_args(argv)

    runs, _ = load(args.results, splits=(args.split,))
    runs = runs[runs.status == "complete"]
    selected = matching(runs, args.where)
    chosen = runs[selected & ~matching(runs, args.against)]
    if chosen.empty:
        # the reference runs are never compared with themselves: a --where that --against also
        # matches selects nothing (a missing setting is KEY= , e.g. learners= for one learner)
        problem = f"no complete summary run of {args.results} matches {' '.join(args.where)}"
        if selected.any():
            problem += (f" (every run it matches is also matched by --against {' '.join(args.against)}: "
                        "narrow --against, e.g. KEY= for runs without the setting)")
        raise SystemExit(problem)
    if chosen.dataset.nunique() != 1 or chosen.seed.duplicated().any():
        raise SystemExit(f"the selection must hold one run per seed of one dataset; it holds "
                         f"{len(chosen)} runs: {', '.join(Path(d).name for d in chosen.run_dir)}")
    full_root = args.full_results or args.results
    if args.full_results is not None:
        runs, _ = load(full_root, splits=(args.split,))
        runs = runs[runs.status == "complete"]
    name = "full data" if args.against == ["method=full"] else "reference"
    full = runs[matching(runs, args.against) & (runs.dataset == chosen.dataset.iloc[0])]
    if full.empty:
        raise SystemExit(f"{full_root} holds no complete run of {chosen.dataset.iloc[0]} with {' '.join(args.against)}")
    if full.seed.duplicated().any():
        raise SystemExit(f"several reference runs of one seed: {', '.join(Path(d).name for d in full.run_dir)}")

    summary = per_user(chosen, args.metric, args.protocol, args.split)
    reference = per_user(full, args.metric, args.protocol, args.split)
    print(f"{len(chosen)} summary runs ({', '.join(Path(d).name for d in chosen.run_dir)}) against "
          f"{len(full)} {' '.join(args.against)} runs; {args.split} {args.metric} under {args.protocol}, points")
    models = [m for m in dict.fromkeys(summary.index.get_level_values("model"))
              if m in set(reference.index.get_level_values("model"))]
    pairs = {}   # (model, seed) -> the summary's and the reference's mean over users
    for model in models:
        s, f = summary.loc[model].unstack("run_seed"), reference.loc[model].unstack("run_seed")
        users = s.index.intersection(f.index)
        if len(users) != len(s.index) or len(users) != len(f.index):
            raise SystemExit(f"{model}: the summary's and the reference's {args.split} users differ")
        s, f = 100 * s.loc[users], 100 * f.loc[users]
        gap = s.mean(axis=1) - f.mean(axis=1)          # each user's difference of the means over seeds
        low, high, resampled = bootstrap_mean(gap.to_numpy(), n_resamples=args.resamples)
        line = (f"{model}: summary {s.mean().mean():.2f} over seeds {sorted(s.columns)}, {name} "
                f"{f.mean().mean():.2f} over seeds {sorted(f.columns)}; gap {gap.mean():+.2f}")
        if sorted(s.columns) == sorted(f.columns) and len(s.columns) >= 2:
            seeds = sorted(s.columns)
            over_seeds = paired(s[seeds].mean().to_numpy(), f[seeds].mean().to_numpy())
            line += f"; 95% over seeds [{over_seeds.ci_low:+.2f}, {over_seeds.ci_high:+.2f}]"
            pairs.update({(model, seed): (s[seed].mean(), f[seed].mean()) for seed in seeds})
        line += f"; 95% over {len(users)} users [{low:+.2f}, {high:+.2f}]"
        if args.goal is not None:
            line += f"; gap >= {args.goal:g} in {100 * float(np.mean(resampled >= args.goal)):.0f}% of user resamples"
        print(line, flush=True)
    if len({model for model, _ in pairs}) > 1:
        print(pooled(pairs, args.goal), flush=True)
    return 0


def pooled(pairs: dict, goal: float | None) -> str:
    """The line pooling every learner: paired t-tests over the (learner, seed) pairs and over
    the seeds' means across the learners, and the one-sided test of the goal."""
    frame = pd.DataFrame([(m, seed, a - b) for (m, seed), (a, b) in pairs.items()], columns=["model", "seed", "gap"])
    seeds = frame.groupby("seed")["gap"].mean()
    over_pairs, over_seeds = paired(frame.gap, np.zeros(len(frame))), paired(seeds, np.zeros(len(seeds)))
    line = (f"every learner: gap {frame.gap.mean():+.2f} over {len(frame)} (learner, seed) pairs, "
            f"paired t-test p = {over_pairs.p:.2g}; over the seeds' means across the learners "
            f"({' / '.join(f'{g:+.2f}' for g in seeds)}) p = {over_seeds.p:.2g}")
    if goal is not None:
        line += f"; gap > {goal:g}: one-sided p = {above(frame.gap, goal):.2g} over the pairs"
    return line


if __name__ == "__main__":
    sys.exit(main())
