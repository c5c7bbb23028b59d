"""BERT4Rec trained on distilled summaries with its soft cloze and with the prefix loss.

    python benchmarks/bidirectional_loss.py RUN_DIR [RUN_DIR ...] [--teacher-table BEST_PT] [--threads 1]
        [--losses cloze,prefix] [--epochs N] [--lr LR]

``distill.inner.bidirectional_loss`` decides how a bidirectional learner trains on a summary,
both inside the distillation's inner loop and when a summary is evaluated (docs/method.md,
"The inner loss and ALT"). This script measures the second part alone: for each distillation
run directory (a record with its ``summary.pt``), it trains a fresh BERT4Rec (conf/model/
bert4rec.yaml's settings) on the run's summary under both losses, with the run's own
evaluation settings and seed, and prints test NDCG@10 / HR@10 (recbole100) for each, then the
paired difference over the runs with a paired t-test. ``--epochs`` and ``--lr`` replace the
runs' evaluation budget and learning rate (is BERT4Rec's shortfall its training budget?);
``--losses cloze`` trains with one loss only. The summaries are the runs' own, so
any difference is the evaluation's, not the distillation's.

A Tucker summary file made before td3 stopped storing the teacher's item table V holds it;
a newer one references it by digest: pass the teacher's ``best.pt`` (``--teacher-table``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from td3.config import dataset_options, learner_options, model_options  # noqa: E402
from td3.data import load_dataset  # noqa: E402
from td3.summary import Summary  # noqa: E402
from td3.summary_training import train_on_summary  # noqa: E402

LOSSES = ("cloze", "prefix")


def load_summary(run_dir: Path, teacher_table: Path | None) -> torch.Tensor:
    payload = torch.load(run_dir / "summary.pt", map_location="cpu", weights_only=True)
    shared = None
    if "V" in payload.get("shared", {}) and "V" not in payload["tensors"]:
        if teacher_table is None:
            raise SystemExit(f"{run_dir}: the summary references the teacher's item table; "
                             f"pass the teacher's best.pt with --teacher-table")
        table = torch.load(teacher_table, map_location="cpu", weights_only=True)["item_embedding.weight"]
        shared = {"V": table[1:]}
    return Summary.load(run_dir / "summary.pt", shared=shared).distributions().detach()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--teacher-table", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated: cloze, prefix")
    parser.add_argument("--epochs", type=int, default=None, help="instead of the run's evaluation.epochs")
    parser.add_argument("--lr", type=float, default=None, help="instead of the run's evaluation.lr")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    losses = [loss for loss in args.losses.split(",") if loss]
    if not losses or set(losses) - set(LOSSES):
        parser.error(f"--losses: choose from {', '.join(LOSSES)}")
    rows = []
    for run_dir in args.runs:
        record = json.loads((run_dir / "record.json").read_text())
        cfg = record["config"]
        ev, inner = cfg["evaluation"], cfg["distill"]["inner"]
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
        S = load_summary(run_dir, args.teacher_table)
        options = model_options(learner_options("bert4rec"))
        row = {"run": run_dir.name, "seed": cfg["seed"]}
        for loss in losses:
            start = time.perf_counter()
            result = train_on_summary(
                S, data, "bert4rec", options, epochs=args.epochs or ev["epochs"], batch_size=ev["batch_size"], lr=args.lr or ev["lr"],
                weight_decay=ev["weight_decay"], alt=inner["alt"], alt_low=inner["alt_low"],
                alt_weight=inner.get("alt_weight", 1.0), bidirectional_loss=loss, seed=cfg["seed"],
                max_len=cfg["max_len"], select=ev["select"], eval_protocols=("recbole100",))
            test = result.test.metrics["recbole100"]
            row[loss] = (test["NDCG@10"], test["HR@10"], result.best_epoch, time.perf_counter() - start)
        rows.append(row)
        print(f"{row['run']}  seed {row['seed']}  " + "  ".join(
            f"{loss}: NDCG@10 {row[loss][0]:.4f} HR@10 {row[loss][1]:.4f} (best epoch {row[loss][2]}, "
            f"{row[loss][3]:.0f} s)" for loss in losses), flush=True)
    if losses != list(LOSSES):
        return 0
    diffs = [100 * (r["prefix"][0] - r["cloze"][0]) for r in rows]
    mean = sum(diffs) / len(diffs)
    print(f"prefix - cloze, NDCG@10 points, over {len(diffs)} summaries: mean {mean:+.2f}, "
          f"min {min(diffs):+.2f}, max {max(diffs):+.2f}, prefix ahead in {sum(d > 0 for d in diffs)}")
    if len(diffs) > 1:
        from scipy.stats import ttest_1samp
        print(f"paired t-test: p = {ttest_1samp(diffs, 0.0).pvalue:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
