"""How much the one stored draw of sampled negatives moves a trained model's figure.

    TD3_DATA_MIRROR=../shared/datasets python benchmarks/negative_draws.py RUN_DIR [RUN_DIR ...] [--draws 20]

For each full-data training run (``<results>/train/<run>``), scores its best checkpoint on
the test users once, then ranks the targets against the dataset's stored ``recbole100``
negatives and against ``--draws`` fresh draws of the same sampler (other seeds), and prints
NDCG@10 and HR@10 on the stored draw beside the mean ± sd over the fresh ones. Every run of
a dataset ranks against the same stored draw, so its luck moves every model alike; this
says by how much.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from td3.data import load_dataset  # noqa: E402
from td3.data.prepare import sample_recbole_negatives  # noqa: E402
from td3.metrics import metrics_from_ranks, sampled_ranks  # noqa: E402
from td3.models import build_model  # noqa: E402
from td3.config import dataset_options, model_options  # noqa: E402


def figures(scores, targets, negatives) -> tuple[float, float]:
    m = metrics_from_ranks(sampled_ranks(scores, targets, torch.as_tensor(negatives)))
    return float(m["NDCG@10"].mean()), float(m["HR@10"].mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="full-data training run directories (with best.pt)")
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_args()
    stored_all, drawn_all = [], []
    for run in map(Path, args.runs):
        cfg = json.loads((run / "record.json").read_text())["config"]
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
        model = build_model(cfg["model"]["name"], data.num_items, max_len=cfg["max_len"], **model_options(cfg["model"]))
        model.load_state_dict(torch.load(run / "best.pt", map_location="cpu", weights_only=True))
        model.eval()
        inputs, lengths, targets = data.eval_inputs("test", cfg["max_len"])
        with torch.no_grad():
            scores = model.score_next(torch.as_tensor(inputs), torch.as_tensor(lengths))
        targets = torch.as_tensor(targets)
        stored = figures(scores, targets, data.negatives_for("recbole100", "test"))
        drawn = np.array([figures(scores, targets, sample_recbole_negatives(
            targets.numpy(), data.num_items, data.negatives.shape[1], 1000 + k)) for k in range(args.draws)])
        stored_all.append(stored)
        drawn_all.append(drawn.mean(axis=0))
        print(f"{run.name} (seed {cfg['seed']}): stored draw NDCG@10 {stored[0]:.4f} HR@10 {stored[1]:.4f}; "
              f"{args.draws} fresh draws NDCG@10 {drawn[:, 0].mean():.4f} ± {drawn[:, 0].std(ddof=1):.4f} "
              f"HR@10 {drawn[:, 1].mean():.4f} ± {drawn[:, 1].std(ddof=1):.4f}")
    if len(args.runs) > 1:
        s, d = np.array(stored_all), np.array(drawn_all)
        sd = lambda a: a.std(ddof=1)  # noqa: E731
        print(f"over the {len(args.runs)} runs: stored draw NDCG@10 {s[:, 0].mean():.4f} ± {sd(s[:, 0]):.4f} "
              f"HR@10 {s[:, 1].mean():.4f} ± {sd(s[:, 1]):.4f}; fresh draws NDCG@10 {d[:, 0].mean():.4f} "
              f"HR@10 {d[:, 1].mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
