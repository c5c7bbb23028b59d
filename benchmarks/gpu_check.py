"""TD3's outer step on the GPU: median seconds per outer step and peak GPU memory, at the
reference settings of ML-100K and of the ML-1M slice (benchmarks/outer_step.py measures
the same steps on the CPU; docs/gpu.md).

    TD3_DATA_MIRROR=../shared/datasets python benchmarks/gpu_check.py [--steps 12] [--warmup 2]
        [--only ml-100k] [overrides...]

Settings: ML-100K 30×50, d1 = d2 = 8, real batch 4096 examples; the ML-1M slice 200×50,
d1 = d2 = 16, real batch 32,768 (``dataset=ml-1m-slice summary.mu=200``, as in
docs/performance.md); SASRec hidden 32, N = 200, W = 40. The teacher and its init pool are
freshly initialised (a step's speed does not depend on their values), so nothing is trained
first. Runs are set up as real ones are (deterministic algorithms, a fixed cuBLAS
workspace). The first ``--warmup`` steps (CUDA's start, cuBLAS's workspace, the caching
allocator's growth) are run but not counted. Peak memory is
``torch.cuda.max_memory_allocated`` over building the engine and every step: what the
tensors needed, without the allocator's cache (``reserved`` is printed beside it).
Extra arguments are Hydra overrides of conf/distill.yaml for both settings.

Without a GPU it prints one line saying so and exits with status 2.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # outer_step's RandomTeacher
from outer_step import RandomTeacher  # noqa: E402

from td3.device import prepare_cuda  # noqa: E402

SETTINGS = {
    "ml-100k": ["dataset=ml-100k", "tuning=none"],
    "ml-1m-slice": ["dataset=ml-1m-slice", "summary.mu=200", "tuning=none"],
}
EXIT_NO_GPU = 2
MB = 2 ** 20


def measure(overrides: list[str], device: torch.device, steps: int, warmup: int, echo=print) -> dict:
    """Outer steps of TD3 for the config of ``overrides`` on ``device``: the median seconds of
    the ``steps`` counted, the Ms drawn, and (on CUDA) the peak memory."""
    from td3.data import load_dataset
    from td3.config import RunConfig, compose_config, dataset_options
    from td3.engine import BilevelEngine

    cfg = compose_config(overrides)
    RunConfig.of(cfg).check()
    data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    engine = BilevelEngine(cfg, data, RandomTeacher(cfg, data.num_items, device), device)
    s, d = cfg["summary"], cfg["distill"]
    echo(f"{data.name} outer step on {torch.cuda.get_device_name(device) if cuda else 'cpu'}: "
         f"{s['mu']}x{s['zeta']}, d1=d2={s['d1']}, hidden {cfg['model']['hidden_size']}, learner batch "
         f"{d['inner']['batch_size']}, N={d['steps']}, W={d['window']}, real batch {engine.windows_per_batch} "
         f"windows = {round(engine.windows_per_batch * engine.targets_per_window)} examples, "
         f"embedding {d['inner']['embedding']}, backend {d['inner']['backend']}")
    seconds, Ms = [], []
    for step in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize(device)  # time this step's kernels, not the queue before it
        t0 = time.perf_counter()
        out = engine.step(step)
        if cuda:
            torch.cuda.synchronize(device)
        took = time.perf_counter() - t0
        counted = step >= warmup
        if counted:
            seconds.append(took)
            Ms.append(out["M"])
        echo(f"  step {step + 1:3d}: M={out['M']:3d}  {took:7.3f} s  ce={out['ce']:.3f} fsa={out['fsa']:.3f}"
             + ("" if counted else "  (warm-up, not counted)"))
    figures = {"dataset": data.name, "median_seconds": statistics.median(seconds), "mean_M": statistics.mean(Ms),
               "ms_per_inner_step": 1000 * statistics.median(t / m for t, m in zip(seconds, Ms)),
               "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / MB if cuda else None,
               "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / MB if cuda else None}
    del engine
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()  # the next setting's peak is its own
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="outer steps counted per setting")
    ap.add_argument("--warmup", type=int, default=2, help="outer steps run first and not counted")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the CPU side of a step)")
    ap.add_argument("--only", choices=sorted(SETTINGS), action="append", help="one setting (repeatable)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no GPU visible to torch (torch.cuda.is_available() is False): nothing to measure",
              file=sys.stderr)
        return EXIT_NO_GPU
    prepare_cuda()  # before the first CUDA operation, as a run does it

    from td3.device import setup_runtime

    device = setup_runtime("cuda", threads=args.threads)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(device)}, "
          f"{args.threads} CPU thread(s)", flush=True)
    results = []
    for name in args.only or list(SETTINGS):
        results.append(measure([*SETTINGS[name], *args.overrides], device, args.steps, args.warmup,
                               echo=lambda line: print(line, flush=True)))
        r = results[-1]
        print(f"median {r['median_seconds']:.3f} s per outer step (mean M {r['mean_M']:.0f}; "
              f"{r['ms_per_inner_step']:.2f} ms per inner step), peak GPU memory {r['peak_allocated_mb']:.0f} MB "
              f"allocated, {r['peak_reserved_mb']:.0f} MB reserved", flush=True)
    print("\n| setting | median s / outer step | peak GPU MB (allocated) |\n|---|---|---|")
    for r in results:
        print(f"| {r['dataset']} | {r['median_seconds']:.3f} | {r['peak_allocated_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
