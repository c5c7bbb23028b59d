"""Seconds per epoch and peak memory of SASRec full-data training on ML-100K.

    TD3_DATA_MIRROR=../shared/datasets python benchmarks/train_epoch.py [--epochs 5] [--threads 2]

Times only the optimisation pass (no evaluation), with the reference scripts' SASRec
(docs/method.md, "The learners": hidden 32, 1 layer, 1 head, inner 64), max length 50 and
batch 128 windows, for two ways of cutting the data:
- windows (ours, stride = max length): one forward pass per window of 50 items, every
  training interaction a target once;
- prefixes (stride 1): each target with exactly RecBole's context (its last ≤50 items).
  That still needs fewer forward passes than RecBole's one sequence per target (ML-100K:
  59,352 windows against 97,171 sequences), because the targets within a user's first 50
  items share one window.
CPU seconds are printed beside wall seconds: with other processes on the cores they are
inflated far less. Peak memory is the process's peak RSS (torch and the data included), measured in a fresh
subprocess per variant so that one variant's peak does not hide the other's.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def measure(stride: int | None, epochs: int, threads: int, batch_size: int) -> dict:
    import numpy as np
    import torch

    from td3.data import load_dataset, training_windows
    from td3.models import build_model
    from td3.records import peak_rss_mb
    from td3.train import train_epoch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = load_dataset("ml-100k")
    x, y = (torch.from_numpy(a) for a in training_windows(data.train, 50, stride))
    model = build_model("sasrec", data.num_items, max_len=50, hidden_size=32, num_layers=1, num_heads=1,
                        inner_size=64, hidden_dropout=0.2, attn_dropout=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    seconds, cpu = [], []
    for epoch in range(1, epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        train_epoch(model, opt, x, y, batch_size, gen, epoch)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"stride": stride or 50, "windows": len(x), "targets": int((y > 0).sum()),
            "median_s_per_epoch": round(float(np.median(seconds)), 3),
            "median_cpu_s_per_epoch": round(float(np.median(cpu)), 3), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--variant", choices=["windows", "prefixes"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:  # child process: measure one variant, print JSON
        stride = None if args.variant == "windows" else 1
        print(json.dumps(measure(stride, args.epochs, args.threads, args.batch_size)))
        return
    print(f"SASRec full-data training on ML-100K, {args.threads} threads, batch {args.batch_size}, "
          f"median of {args.epochs} epochs")
    rows = {}
    for variant in ("windows", "prefixes"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--epochs", str(args.epochs),
                              "--threads", str(args.threads), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True).stdout
        rows[variant] = json.loads(out.strip().splitlines()[-1])
        r = rows[variant]
        print(f"  {variant:9s} stride={r['stride']:<3d} windows={r['windows']:<7d} targets={r['targets']:<7d} "
              f"{r['median_s_per_epoch']:7.2f} s/epoch (CPU {r['median_cpu_s_per_epoch']:.2f} s)  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    speedup = rows["prefixes"]["median_s_per_epoch"] / rows["windows"]["median_s_per_epoch"]
    print(f"  one pass per window is {speedup:.1f}x faster per epoch than one pass per prefix "
          f"(compare RecBole's SASRec epoch time on the same machine)")


if __name__ == "__main__":
    main()
