"""Which validated step a distillation keeps: its learners trained on the step each rule picks.

    python benchmarks/selection_rules.py RUN_DIR [RUN_DIR ...] [--rules all,sasrec,...]
        [--epochs N] [--teacher-table BEST_PT] [--out FILE.csv] [--threads 1]
    python benchmarks/selection_rules.py FILE.csv [FILE.csv ...]   # the summary of saved rows

A distillation validates its summary every ``distill.validate_every`` outer steps and keeps the
best one (docs/method.md, "Several learners"): by the run's model's validation MRR@10
(``distill.validate_learners=model``) or by the mean over every inner learner's (``all``). A
run made with ``distill.validate_learners=all`` records each learner's score at every
validation, and with ``distill.snapshots=true`` keeps each validated summary
(``snapshots/step-NNNNN.pt`` in its summary directory). For each such run directory this script
applies each rule to the recorded validations: ``all`` (the mean, what the run kept) and each
inner learner's own score (``sasrec`` is what ``validate_learners=model`` would have kept,
on the same outer path); the first step with the best score, as the distillation picks it;
``last``, the outer loop's last step, which no validation picks (what choosing among
the validated steps is worth: each choice also fits the validation users' noise); and
``average``, the mean of the summaries validated in the last ``--average-last`` fraction of
the outer loop (``distill.average_last``, which computes the same mean inside the run).
Every learner of the run's ``evaluation.models`` is trained on the summary each rule picks,
with the run's own evaluation settings and seeds (a step the run kept gives the record's own
figures, not trained again), or for ``--epochs`` epochs instead of the run's
``evaluation.epochs`` (every rule then trains, the run's own included: what a longer training
on each summary gives). It prints test NDCG@10 (recbole100, %; and the validation's) per run,
rule and learner, then per rule and learner the mean over the runs and its paired difference from the
run's own rule (paired t-test over the runs when there are several); ``--out`` writes the
rows as CSV. Given CSV files instead of run directories (runs scored by separate processes,
one per core), it prints the summary of their rows together.

A summary that references the teacher's item table is loaded with the table of the run's
recorded teacher (``record["teacher"]["run"]/best.pt``), or ``--teacher-table``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from summary_labels import trained_on  # noqa: E402
from td3.config import dataset_options  # noqa: E402
from td3.data import load_dataset  # noqa: E402
from td3.engine import averaged_steps, load_average  # noqa: E402
from td3.files import atomic_path  # noqa: E402
from td3.layout import snapshot_path  # noqa: E402
from td3.summary import Summary  # noqa: E402

OWN = "all"  # the rule the runs this script reads were made with
LAST = "last"  # no choice: the summary at the outer loop's end
AVERAGE = "average"  # no choice either: the mean of the last validated summaries (distill.average_last)


def picks(validations: list[dict], rules: list[str]) -> dict[str, int]:
    """Each rule's step: the first validation with the rule's best score (``last``: the last
    validation's, made at the outer loop's end)."""
    chosen = {}
    for rule in rules:
        if rule == AVERAGE:
            continue
        if rule == LAST:
            chosen[rule] = validations[-1]["step"]
            continue
        def score(v: dict) -> float:
            return v["valid_MRR@10"] if rule == OWN else v["by_learner"][rule]
        best = max(score(v) for v in validations)
        chosen[rule] = next(v["step"] for v in validations if score(v) == best)
    return chosen


def teacher_table(record: dict, given: Path | None) -> torch.Tensor:
    path = given or Path(record["teacher"]["run"]) / "best.pt"
    if not path.is_file():
        raise SystemExit(f"the teacher's item table {path} is missing: pass --teacher-table BEST_PT")
    return torch.load(path, map_location="cpu", weights_only=True)["item_embedding.weight"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--rules", default=None,
                        help=f"comma-separated: {OWN} (the mean), inner learners, {LAST}, {AVERAGE}; default: every one")
    parser.add_argument("--average-last", type=float, default=0.33,
                        help=f"the {AVERAGE} rule's fraction of the outer loop (as distill.average_last)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train each learner this many epochs (default: the run's evaluation.epochs)")
    parser.add_argument("--teacher-table", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="the rows as CSV")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: a learner trains at least one epoch")
    torch.set_num_threads(args.threads)

    rows = []
    if all(path.suffix == ".csv" for path in args.runs):
        for path in args.runs:
            with open(path, newline="") as f:
                rows += [{**r, "NDCG@10": float(r["NDCG@10"]), "valid_NDCG@10": float(r["valid_NDCG@10"]),
                          "epochs": r.get("epochs") or "the run's"}  # (rows saved before the column)
                         for r in csv.DictReader(f)]
        summarise(rows)
        return 0
    for run_dir in args.runs:
        record = json.loads((run_dir / "record.json").read_text())
        cfg, info = record["config"], record["distill"]
        if cfg["distill"].get("validate_learners") != OWN or cfg["evaluation"]["protocol"] != "scratch":
            raise SystemExit(f"{run_dir}: this script reads runs made with distill.validate_learners={OWN} "
                             f"and evaluation.protocol=scratch")
        epochs = cfg["evaluation"]["epochs"] if args.epochs is None else args.epochs
        retrain = epochs != cfg["evaluation"]["epochs"]  # the record's figures are another budget's
        cfg = {**cfg, "evaluation": {**cfg["evaluation"], "epochs": epochs}}
        validations = info["validations"]
        learners = list(validations[0]["by_learner"])
        rules = args.rules.split(",") if args.rules else [OWN, *learners, LAST, AVERAGE]
        unknown = set(rules) - {OWN, *learners, LAST, AVERAGE}
        if unknown:
            raise SystemExit(f"--rules: {', '.join(sorted(unknown))} validated no summary of {run_dir}")
        chosen = picks(validations, rules)
        best = picks(validations, [OWN])[OWN]  # (whichever rules were asked for)
        if best != info["best_step"]:
            raise SystemExit(f"{run_dir}: its validations pick step {best}, its record kept {info['best_step']}")
        if AVERAGE in rules:
            steps = averaged_steps([v["step"] for v in validations], info["outer_steps"], args.average_last)
            if not steps:
                raise SystemExit(f"--average-last {args.average_last}: no validation of {run_dir} falls in it")
            chosen[AVERAGE] = tuple(steps)
        # what the record's evaluations trained on: the best step's summary, or the run's own average
        own = tuple(info["average"]["steps"]) if info.get("kept") == AVERAGE else info["best_step"]
        own = None if retrain else own  # (no step's figures are in the record)
        summary_dir = Path(record["summary"]["dir"])
        table = None
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))

        def snapshot(step: int) -> Summary:
            nonlocal table
            path = snapshot_path(summary_dir, step)
            if not path.is_file():
                raise SystemExit(f"{path} is missing: the run kept no snapshots of its validations "
                                 f"(distill.snapshots=true)")
            table = teacher_table(record, args.teacher_table) if table is None else table
            return Summary.load(path, shared={"V": table[1:]})

        scored: dict = {}  # (step(s), learner, seed) -> (metrics, best epoch): rules that agree train once
        for rule, step in chosen.items():
            label = f"{step[0]}-{step[-1]}" if isinstance(step, tuple) else step
            print(f"{run_dir.name}: {rule} keeps step {label}", flush=True)
            S = None
            if step != own and isinstance(step, tuple):  # the mean of the snapshots' learned tensors
                summaries = [snapshot(s) for s in step]
                load_average(summaries[-1], [dict(m.named_parameters()) for m in summaries])
                S = summaries[-1].distributions().detach()
            elif step != own:
                S = snapshot(step).distributions().detach()
            for evaluation in record["evaluations"]:
                name, seed = evaluation["model"], evaluation["seed"]
                if S is None:
                    metrics, epoch = evaluation["metrics"], evaluation["best_epoch"]
                elif (step, name, seed) in scored:
                    metrics, epoch = scored[step, name, seed]
                else:
                    result = trained_on(S, data, name, cfg, seed)
                    metrics, epoch = {"test": result.test.metrics, "valid": result.valid.metrics}, result.best_epoch
                    scored[step, name, seed] = metrics, epoch
                ndcg, valid = (metrics[split]["recbole100"]["NDCG@10"] for split in ("test", "valid"))
                rows.append({"run": run_dir.name, "rule": rule, "step": label, "model": name, "seed": seed,
                             "NDCG@10": round(100 * ndcg, 4), "valid_NDCG@10": round(100 * valid, 4),
                             "best_epoch": epoch, "epochs": epochs})
                print(f"  {name} seed {seed}: test NDCG@10 {100 * ndcg:.2f}, valid {100 * valid:.2f} "
                      f"(best epoch {epoch})", flush=True)

    if args.out:  # whole or not at all: the rows of hours of training
        with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    summarise(rows)
    return 0


def summarise(rows: list[dict]) -> None:
    """Per rule and learner: the mean over the runs (and seeds), and the paired difference from OWN
    (at the same training budget when the rows hold several)."""
    budgets = len({str(r["epochs"]) for r in rows}) > 1

    def label(rule: str, epochs) -> str:  # with several budgets, a rule at each is a row of its own
        return f"{rule} ({epochs} epochs)" if budgets else rule

    own_of = {label(r["rule"], r["epochs"]): label(OWN, r["epochs"]) for r in rows}
    rows = [{**r, "rule": label(r["rule"], r["epochs"])} for r in rows]

    def mean_by_run(rule: str, model: str, column: str = "NDCG@10") -> dict[str, float]:
        by_run: dict[str, list[float]] = {}
        for r in rows:
            if r["rule"] == rule and r["model"] == model:
                by_run.setdefault(r["run"], []).append(r[column])
        return {run: sum(v) / len(v) for run, v in by_run.items()}

    rules = list(dict.fromkeys(r["rule"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        for rule in rules:
            own = mean_by_run(own_of[rule], model)
            figures = mean_by_run(rule, model)
            valid = mean_by_run(rule, model, "valid_NDCG@10")
            line = (f"{model}, kept by {rule}: mean {sum(figures.values()) / len(figures):.2f} over {len(figures)} "
                    f"runs (valid {sum(valid.values()) / len(valid):.2f})")
            d = [figures[run] - own[run] for run in figures if run in own]
            if rule != own_of[rule] and d:
                line += f"; {rule} - {own_of[rule]} {sum(d) / len(d):+.2f}"
                if len(d) > 1 and any(d):
                    from scipy.stats import ttest_1samp
                    line += f" (paired t-test p = {ttest_1samp(d, 0.0).pvalue:.3g})"
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
