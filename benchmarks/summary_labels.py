"""Learners trained on a summary's distributions (soft) and on its most probable items (hard).

    python benchmarks/summary_labels.py RUN_DIR [RUN_DIR ...] [--teacher-table BEST_PT]
        [--models sasrec,gru4rec] [--soft record|retrain] [--threads 1]

A learner evaluating a summary trains on S itself: each position's input is the expectation
of the item table under S[a, b, :] and each target the distribution S[a, b, :] (docs/method.md,
"Using a summary"). The summary's exported ``summary.inter`` keeps the most probable item per
position, which is what a library that reads item ids would train on. This script measures
what the soft labels are worth: for each distillation run directory (a record with its
``summary.pt``), every learner of the run's ``evaluation.models`` (or ``--models``) is trained
on S made one-hot at its argmax, with the run's own evaluation settings and seeds and the same
loss, ALT and BERT4Rec loss, and its test NDCG@10 (recbole100) is set beside the soft figure:
the record's own (``--soft record``, the default: the run's evaluation, possibly by an earlier
commit) or trained again now (``--soft retrain``, twice the time). Then, per learner, the
paired difference over the runs with a paired t-test.

A Tucker summary file that references the teacher's item table needs the teacher's
``best.pt`` (``--teacher-table``), as in benchmarks/bidirectional_loss.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bidirectional_loss import load_summary  # noqa: E402
from td3.config import dataset_options, learner_options, model_options  # noqa: E402
from td3.data import load_dataset  # noqa: E402
from td3.summary_training import train_on_summary  # noqa: E402


def hard(S: torch.Tensor) -> torch.Tensor:
    """S (μ, ζ, |V|) one-hot at each position's most probable item."""
    return torch.nn.functional.one_hot(S.argmax(-1), S.shape[-1]).to(S.dtype)


def ndcg10(S: torch.Tensor, data, name: str, cfg: dict, seed: int) -> tuple[float, int, float]:
    """Test NDCG@10 (recbole100), best epoch and seconds of learner ``name`` trained on S."""
    start = time.perf_counter()
    result = trained_on(S, data, name, cfg, seed)
    return result.test.metrics["recbole100"]["NDCG@10"], result.best_epoch, time.perf_counter() - start


def trained_on(S: torch.Tensor, data, name: str, cfg: dict, seed: int):
    """Learner ``name`` trained on S with the run's evaluation settings (``cfg``) and ``seed``:
    its ``td3.summary_training.SummaryTrainingResult``, scored under recbole100."""
    ev, inner = cfg["evaluation"], cfg["distill"]["inner"]
    return train_on_summary(
        S, data, name, model_options(learner_options(name)), epochs=ev["epochs"], batch_size=ev["batch_size"],
        lr=ev["lr"], weight_decay=ev["weight_decay"], alt=inner["alt"], alt_low=inner["alt_low"],
        alt_weight=inner.get("alt_weight", 1.0), bidirectional_loss=inner.get("bidirectional_loss", "cloze"),
        seed=seed, max_len=cfg["max_len"], select=ev["select"], eval_every=ev.get("eval_every", 1),
        eval_protocols=("recbole100",))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--teacher-table", type=Path, default=None)
    parser.add_argument("--models", default=None, help="comma-separated; default: each run's evaluation.models")
    parser.add_argument("--soft", choices=("record", "retrain"), default="record")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    diffs: dict[str, list[float]] = {}
    for run_dir in args.runs:
        record = json.loads((run_dir / "record.json").read_text())
        cfg = record["config"]
        if cfg["evaluation"]["protocol"] != "scratch":
            raise SystemExit(f"{run_dir}: evaluated under protocol {cfg['evaluation']['protocol']!r}; "
                             f"this script trains from scratch only")
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
        S = load_summary(run_dir, args.teacher_table)
        H = hard(S)
        models = args.models.split(",") if args.models else cfg["evaluation"]["models"]
        for evaluation in record["evaluations"]:
            name, seed = evaluation["model"], evaluation["seed"]
            if name not in models:
                continue
            if args.soft == "record":
                soft = (evaluation["metrics"]["test"]["recbole100"]["NDCG@10"], evaluation["best_epoch"], None)
            else:
                soft = ndcg10(S, data, name, cfg, seed)
            hard_result = ndcg10(H, data, name, cfg, seed)
            diffs.setdefault(name, []).append(100 * (hard_result[0] - soft[0]))
            print(f"{run_dir.name}  {name} seed {seed}: soft NDCG@10 {soft[0]:.4f} (best epoch {soft[1]}"
                  + ("" if soft[2] is None else f", {soft[2]:.0f} s") + f")  hard {hard_result[0]:.4f} "
                  f"(best epoch {hard_result[1]}, {hard_result[2]:.0f} s)  hard - soft {diffs[name][-1]:+.2f}",
                  flush=True)
    for name, d in diffs.items():
        line = (f"{name}: hard - soft, NDCG@10 points, over {len(d)} summaries: mean {sum(d) / len(d):+.2f}, "
                f"min {min(d):+.2f}, max {max(d):+.2f}")
        if len(d) > 1:
            from scipy.stats import ttest_1samp
            line += f", paired t-test p = {ttest_1samp(d, 0.0).pvalue:.4g}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
