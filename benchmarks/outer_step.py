"""Median seconds per outer step and peak memory of TD3 distillation (ML-100K unless told).

    TD3_DATA_MIRROR=../shared/datasets python benchmarks/outer_step.py [--steps 12] [overrides...]

At the reference settings (docs/method.md, "Settings per dataset"; issue 3; ``tuning=none``:
the inner item table frozen): μ×ζ = 30×50, d1 = d2 = 8, SASRec hidden 32, learner batch 15,
N = 200, W = 40, real batch 4096 next-item examples. M ~ U(W, N) varies per step, so the median over ≥10 steps is reported (seeded:
the same Ms every time).
The speed of a step does not depend on the values of the teacher's weights, so the teacher
and the one-checkpoint init pool are freshly initialised SASRecs: no full-data training
is needed to benchmark. Extra arguments are Hydra overrides of conf/distill.yaml, e.g.
``distill.inner.embedding=trainable`` or ``distill.inner.backend=higher``; with
``distill.learners=[...]`` each inner learner gets a fresh teacher of its own and the script
prints what a step of each costs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from td3.data import load_dataset
from td3.config import RunConfig, compose_config, dataset_options, model_options
from td3.engine import BilevelEngine
from td3.models import build_model
from td3.records import peak_rss_mb


class RandomTeacher:
    """A freshly initialised teacher of the config's learner (or of the inner learner
    ``name``, ``distill.learners``) and a one-checkpoint init pool, on ``device`` (the engine
    reads both where it computes, as it reads a real teacher's)."""

    def __init__(self, cfg, num_items, device="cpu", name=None):
        options = cfg["model"] if name is None else RunConfig.of(cfg).learner(name)

        def fresh():
            return build_model(options["name"], num_items, max_len=cfg["max_len"], **model_options(options))

        self.model = fresh().to(device).eval()
        self.pool = [{k: v.to(device) for k, v in fresh().state_dict().items()}]

    @property
    def item_embedding(self):
        return self.model.item_embedding.weight.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_config(["dataset=ml-100k", "tuning=none", *args.overrides])  # the reference settings
    RunConfig.of(cfg).check()
    data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
    torch.manual_seed(0)
    others = {name: RandomTeacher(cfg, data.num_items, name=name) for name in RunConfig.of(cfg).inner_learners[1:]}
    engine = BilevelEngine(cfg, data, RandomTeacher(cfg, data.num_items), torch.device("cpu"), teachers=others)
    s, d = cfg["summary"], cfg["distill"]
    print(f"{data.name} outer step: {s['mu']}x{s['zeta']}, d1=d2={s['d1']}, hidden {cfg['model']['hidden_size']}, "
          f"learner batch {d['inner']['batch_size']}, N={d['steps']}, W={d['window']}, real batch "
          f"{engine.windows_per_batch} windows = {round(engine.windows_per_batch * engine.targets_per_window)} "
          f"examples, embedding {d['inner']['embedding']}, backend {d['inner']['backend']}, {args.threads} threads")
    seconds, cpu, Ms, learners = [], [], [], []
    for step in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = engine.step(step)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        Ms.append(out["M"])
        learners.append(out.get("learner", cfg["model"]["name"]))
        print(f"  step {step + 1:3d}: M={out['M']:3d}  {seconds[-1]:6.2f} s  (CPU {cpu[-1]:6.2f} s)  "
              f"ce={out['ce']:.3f} fsa={out['fsa']:.3f}  {learners[-1]}", flush=True)
    per_inner = [t / m for t, m in zip(seconds, Ms)]
    # CPU seconds: at one thread they equal the wall time of a quiet machine, and other
    # processes sharing the cores inflate them far less than the wall time
    print(f"median {statistics.median(seconds):.2f} s per outer step, CPU {statistics.median(cpu):.2f} s "
          f"(mean M {statistics.mean(Ms):.0f}; {1000 * statistics.median(per_inner):.1f} ms per inner step), "
          f"peak RSS {peak_rss_mb():.0f} MB")
    if len(set(learners)) > 1:  # several inner learners: what a step of each costs
        for name in dict.fromkeys(learners):
            mine = [i for i, n in enumerate(learners) if n == name]
            print(f"  {name}: {len(mine)} steps, median CPU {statistics.median(cpu[i] for i in mine):.2f} s, "
                  f"{1000 * statistics.median(cpu[i] / Ms[i] for i in mine):.1f} CPU ms per inner step")


if __name__ == "__main__":
    main()
