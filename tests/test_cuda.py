"""The GPU path (docs/gpu.md): each piece run on CUDA, compared with the same computation on
the CPU, and checked to keep its tensors on the GPU. Every test here is marked ``cuda`` and
skips, saying why, where torch sees no GPU (tests/conftest.py). On a GPU machine:

    python -m pytest -n 1 -m cuda -rs tests/test_cuda.py

Tolerances. The CPU and the GPU do the same float32 arithmetic in different orders (blocked
matrix products, parallel reductions, fused multiply-adds), so they differ by rounding, and
how far float32 rounding moves each result was measured on the CPU, float32 against
float64, on these very problems (docs/gpu.md):

- losses (a forward pass): at most 7e-7 relative; compared to 1e-5;
- a learner's parameters after an epoch of Adam, on the full data or on a summary: at most
  3e-7 in relative norm; compared to 1e-5;
- one outer step's meta-gradient (the summary's gradient through W unrolled inner steps),
  for M ≥ W + 20 inner steps: at most 4e-5 in relative norm; compared to 1e-3. Nearer the
  start of inner Adam the meta-gradient is ill-conditioned (at M = W float32 alone moves it
  by 1.5e-3, README "Distillation"), so the step compared draws M ≥ W + 20 (asserted);
- elementwise arithmetic (the inner loop's Adam): a few units in the last place; 1e-6.

Each tolerance is 15 to 40 times the largest error measured (8 units in the last place for
the elementwise one), and two float32 results are at most the sum of their distances from
the exact one apart: a margin of 7 times or more. Matrix products must be true float32 for
these bounds (no TF32): the tests pin ``highest`` precision.

Dropout (and BERT4Rec's masks) draw from the device's own generator, which on CUDA is not the
CPU's: CPU-vs-GPU comparisons switch dropout off, and runs with dropout are compared with
themselves on the GPU, to the bit.
"""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from cli_helpers import REPO, kill_when, run_cli
from test_distill import KILL, history_of, make_env, record_of

pytestmark = pytest.mark.cuda

GPU = torch.device("cuda")
CPU = torch.device("cpu")
USERS, ITEMS = 200, 300
#: tolerances (module docstring): relative, 15-40 times the measured float32 error
LOSS, PARAMETERS, META_GRADIENT, ELEMENTWISE = 1e-5, 1e-5, 1e-3, 1e-6
#: the learners without dropout (CPU-vs-GPU comparisons)
NO_DROPOUT = {"sasrec": {"hidden_dropout": 0.0, "attn_dropout": 0.0}, "gru4rec": {"dropout": 0.0},
              "narm": {"emb_dropout": 0.0, "ct_dropout": 0.0}}


# ------------------------------------------------------------------ helpers
class DeviceCrossings(TorchDispatchMode):
    """Every tensor operation run while active (backward passes included) whose tensors are
    not all on one device: data moved between the CPU and the GPU.

    By design some things cross. Row indices, ALT positions and permutations are drawn from
    CPU generators (the same draws on every device) and index GPU tensors; the host reads
    scalars and an epoch's losses back for its logs. What must never happen is GPU work
    reading floating-point data from the CPU: an operation involving the GPU that takes as
    input a CPU floating-point tensor of more than one element (a parameter, an activation,
    a summary, a teacher's feature left on the CPU, moved at every use)."""

    def __init__(self):
        super().__init__()
        self.crossings: list[tuple[str, list, list]] = []  # (operation, its inputs, its outputs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs, outputs = ([(t.device.type, t.dtype, tuple(t.shape)) for t in pytree.tree_leaves(x)
                            if isinstance(t, torch.Tensor)] for x in ((args, kwargs), out))
        if len({device for device, _, _ in inputs + outputs}) > 1:
            self.crossings.append((str(func), inputs, outputs))
        return out

    def data_crossings(self) -> list:
        """The crossings that feed CPU floating-point data to the GPU (see above)."""
        return [c for c in self.crossings
                if any(dev == "cpu" and dtype.is_floating_point and math.prod(shape) > 1 for dev, dtype, shape in c[1])]



def off_gpu(tree, path: str = "") -> list[str]:
    """Where in a nested dict / list / module state the tensors are that are not on the GPU.
    Optimiser step counters are CPU tensors by design (torch.optim's layout), so not listed."""
    if isinstance(tree, torch.Tensor):
        return [] if tree.device.type == GPU.type or path.endswith(".step") else [path]
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in off_gpu(v, f"{path}.{k}")]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in off_gpu(v, f"{path}[{i}]")]
    return []


def relative(a, b) -> float:
    """‖a − b‖ / ‖b‖ over tensors (or lists of tensors), in float64 on the CPU."""
    flat = [torch.cat([t.detach().double().cpu().reshape(-1) for t in (x if isinstance(x, (list, tuple)) else [x])])
            for x in (a, b)]
    return ((flat[0] - flat[1]).norm() / flat[1].norm()).item()


def nondeterminism_warnings(caught) -> list[str]:
    """Warnings torch gives for an operation without a deterministic CUDA kernel (or cuBLAS
    without its fixed workspace) while deterministic algorithms are on."""
    return [str(w.message) for w in caught if "determinis" in str(w.message)]


@pytest.fixture(autouse=True)
def runtime():
    """What every run sets (td3.train.setup_runtime: deterministic algorithms, cuBLAS's fixed
    workspace), true float32 matrix products, and the process left as it was."""
    from td3.device import setup_runtime

    deterministic, precision = torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision()
    threads = torch.get_num_threads()
    setup_runtime("cuda", threads=1)
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_float32_matmul_precision(precision)
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from td3.data import load_dataset
    return load_dataset("synthetic", tmp_path_factory.mktemp("data"), num_users=USERS, num_items=ITEMS)


# ------------------------------------------------------ 1. full-data training
def one_epoch(model, windows, device, seed: int = 0):
    """One epoch of full-data training (td3.train.train_epoch) of ``model`` on ``device``:
    (mean loss, the model, its optimiser)."""
    from td3.optim import Adam
    from td3.train import train_epoch

    model = model.to(device)
    inputs, targets = (t.to(device) for t in windows)
    optimizer = Adam(model.parameters(), lr=1e-3)
    loss = train_epoch(model, optimizer, inputs, targets, 32, torch.Generator().manual_seed(seed), epoch=1)
    return loss, model, optimizer


@pytest.fixture(scope="module")
def windows(dataset):
    from td3.data import training_windows
    x, y = training_windows(dataset.train, 20)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize("name", sorted(NO_DROPOUT))
def test_a_full_data_epoch_on_cuda_matches_the_cpu_and_stays_on_the_gpu(dataset, windows, name):
    from td3.models import build_model

    torch.manual_seed(0)
    model = build_model(name, dataset.num_items, max_len=20, **NO_DROPOUT[name])
    cpu_loss, cpu_model, _ = one_epoch(copy.deepcopy(model), windows, CPU)
    with DeviceCrossings() as crossings, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpu_loss, gpu_model, optimizer = one_epoch(copy.deepcopy(model), windows, GPU)

    assert abs(gpu_loss - cpu_loss) <= LOSS * abs(cpu_loss), (gpu_loss, cpu_loss)
    gap = relative(list(gpu_model.parameters()), list(cpu_model.parameters()))
    assert gap <= PARAMETERS, gap
    assert not off_gpu({"model": gpu_model.state_dict(), "grads": [p.grad for p in gpu_model.parameters()],
                        "optimizer": optimizer.state_dict()})
    assert not crossings.data_crossings(), crossings.data_crossings()[:5]
    assert not nondeterminism_warnings(caught), nondeterminism_warnings(caught)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "narm", "bert4rec"])
def test_full_data_training_with_dropout_repeats_bitwise_on_cuda(dataset, windows, name):
    """Each learner as configured (dropout on; BERT4Rec's cloze masks): two identical epochs
    on the GPU give the same bits, and keep every tensor there."""
    from td3.models import build_model

    states = []
    for _ in range(2):
        torch.manual_seed(0)  # seeds the GPU's generator too: dropout and the cloze masks
        with DeviceCrossings() as crossings:
            _, model, optimizer = one_epoch(build_model(name, dataset.num_items, max_len=20), windows, GPU)
        states.append(model.state_dict())
        assert not off_gpu({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
        assert not crossings.data_crossings(), crossings.data_crossings()[:5]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_killed_full_data_run_resumes_bitwise_on_cuda(tmp_path):
    """SIGKILL after an epoch's checkpoint, relaunch: the run ends as the uninterrupted one,
    to the bit (the checkpoint's CPU generator states load on the CPU, the GPU's own random
    state, which dropout draws from there, is saved and restored)."""
    args = [f"dataset.num_users={USERS}", f"dataset.num_items={ITEMS}", "max_len=20", "train.epochs=6",
            "train.patience=100", "train.pool_epochs=[2,4]", "progress=false", "threads=1", f"device={GPU.type}"]
    reference_env = make_env(tmp_path / "reference")
    reference_path = Path(run_cli("td3.train", *args, env=reference_env, check=True).stdout.strip().splitlines()[-1])
    reference = json.loads(reference_path.read_text())
    assert reference["environment"]["device"] == GPU.type

    env = make_env(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "td3.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = tmp_path / "killed" / "runs" / "train"
    kill_when(proc, lambda: (lasts := list(runs.glob("*/last.pt"))) and
              torch.load(lasts[0], weights_only=False)["state"]["epoch"] >= 2, timeout=300)
    saved = torch.load(next(runs.glob("*/last.pt")), weights_only=False)
    assert "cuda" in saved["rng"], "the GPU's random state is not in the checkpoint"

    path = Path(run_cli("td3.train", *args, env=env, check=True).stdout.strip().splitlines()[-1])
    resumed = json.loads(path.read_text())
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in reference["history"]]
    assert resumed["metrics"] == reference["metrics"]
    best, ref_best = (torch.load(p.parent / "best.pt", weights_only=True) for p in (path, reference_path))
    assert all(torch.equal(best[k], ref_best[k]) for k in ref_best)


# ------------------------------------------------------------ 2. distillation
#: N = 60 inner steps at most, W = 4 of them differentiated; no dropout in the inner loop
OUTER = [f"dataset.num_users={USERS}", f"dataset.num_items={ITEMS}", "summary.mu=10", "summary.zeta=10",
         "distill.steps=60", "distill.window=4", "distill.inner.batch_size=5", "distill.inner.alt_low=2",
         "distill.outer.batch_size=400", "distill.inner.dropout=false", "distill.init_from=pool"]


class Teacher:
    """A freshly initialised teacher and one-checkpoint init pool (as benchmarks/outer_step.py
    uses: a step's arithmetic does not depend on the teacher's values), copied to a device."""

    def __init__(self, model, device):
        self.model = copy.deepcopy(model).to(device).eval()
        self.pool = [{k: v.to(device) for k, v in model.state_dict().items()}]

    @property
    def item_embedding(self):
        return self.model.item_embedding.weight.detach()


def engines(cfg, data):
    """The same BilevelEngine (same teacher, same summary) on the CPU and on the GPU."""
    from td3.engine import BilevelEngine, teacher_features
    from td3.models import build_model
    from td3.config import model_options

    torch.manual_seed(0)
    teacher = build_model(cfg["model"]["name"], data.num_items, max_len=cfg["max_len"], **model_options(cfg["model"]))
    built = []
    for device in (CPU, GPU):
        torch.manual_seed(0)
        built.append(BilevelEngine(cfg, data, Teacher(teacher, device), device))
    return built


@pytest.mark.parametrize("model, embedding", [("sasrec", "frozen"), ("sasrec", "trainable"), ("gru4rec", "frozen")])
def test_an_outer_step_on_cuda_matches_the_cpu_and_stays_on_the_gpu(dataset, model, embedding):
    """One outer step of td3.engine.BilevelEngine: the inner loop (the hand-written Adam, W
    unrolled steps), the outer loss and the meta-gradient. GRU4Rec's GRU must keep cuDNN out:
    cuDNN's RNN backward can neither be differentiated again nor run in eval mode."""
    from td3.config import compose_config

    cfg = compose_config([*OUTER, f"model={model}", f"distill.inner.embedding={embedding}"])
    on_cpu, on_gpu = engines(cfg, dataset)
    a = on_cpu.step(0)
    with DeviceCrossings() as crossings, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = on_gpu.step(0)

    W = cfg["distill"]["window"]
    assert a["M"] == b["M"] and a["init"] == b["init"]  # drawn from CPU generators: the same everywhere
    assert a["M"] >= W + 20, f"the step compared must be past inner Adam's ill-conditioned start (M={a['M']})"
    for key in ("ce", "fsa"):  # rounded to 5 decimals in the step's log
        assert abs(a[key] - b[key]) <= 2e-5 + LOSS * abs(a[key]), (key, a[key], b[key])
    assert abs(a["grad_norm"] - b["grad_norm"]) <= 2e-5 + META_GRADIENT * a["grad_norm"], (a, b)
    gap = relative([p.grad for p in on_gpu.summary.parameters()], [p.grad for p in on_cpu.summary.parameters()])
    assert gap <= META_GRADIENT, gap

    assert not off_gpu({"summary": on_gpu.summary.state_dict(), "grads": [p.grad for p in on_gpu.summary.parameters()],
                        "engine": on_gpu.state_dict(), "learner": on_gpu.learner.state_dict(),
                        "data": [on_gpu.x, on_gpu.y, teacher_features(on_gpu.learners[0].teacher.model, on_gpu.x[:4])],
                        "teacher": list(on_gpu.learners[0].teacher.model.parameters())})
    assert not crossings.data_crossings(), crossings.data_crossings()[:5]
    assert not nondeterminism_warnings(caught), nondeterminism_warnings(caught)


def test_the_inner_adam_on_cuda_matches_the_cpu():
    """td3.inner.FunctionalOptimizer on GPU tensors: its graph-free steps, its differentiable
    step and the derivative through that step, against the CPU's, element by element; its
    state lives beside the parameters."""
    from td3.inner import FunctionalOptimizer
    from test_inner import inner_settings

    g = torch.Generator().manual_seed(0)
    p0, grads = torch.randn(1000, generator=g), [torch.randn(1000, generator=g) * 10 ** -k for k in range(4)]
    results = {}
    for device in (CPU, GPU):
        p = p0.to(device).clone()
        opt = FunctionalOptimizer(inner_settings(), {"flat": p})
        for grad in grads[:3]:  # graph-free, in place
            opt.step_({"flat": p}, {"flat": grad.to(device)})
        last = grads[3].to(device).requires_grad_(True)
        new = opt.step({"flat": p}, {"flat": last})["flat"]  # differentiable
        (d_grad,) = torch.autograd.grad(new.pow(2).sum(), last)
        results[device] = (new.detach(), d_grad, opt.m["flat"].detach(), opt.v["flat"].detach())
    assert not off_gpu(list(results[GPU]))
    for gpu, cpu in zip(results[GPU], results[CPU]):
        # relative to the tensor's scale: p − step where the two nearly cancel keeps an absolute error
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=ELEMENTWISE, atol=ELEMENTWISE * cpu.abs().max().item())


def test_a_killed_distillation_resumes_bitwise_on_cuda(tmp_path):
    """As tests/test_distill.py::test_killed_run_resumes_bitwise, on the GPU: run A to its
    end; run B killed (SIGKILL) after a checkpoint at outer step >= 4 and relaunched ends with
    A's history, validations, metrics and summary, to the bit."""
    args = [*KILL, f"device={GPU.type}"]
    env = make_env(tmp_path)
    path, a = record_of(run_cli("td3.distill", *args, env=env, check=True, timeout=900))
    assert a["environment"]["device"] == GPU.type and a["distill"]["outer_steps"] >= 15
    done = tmp_path / "a-done"
    path.parent.rename(done)
    summary_dir = Path(a["summary"]["dir"])  # B distils again: A's cached summary moves aside too
    summary_dir.rename(tmp_path / "a-summary")

    proc = subprocess.Popen([sys.executable, "-m", "td3.distill", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state_path = summary_dir / "state.pt"
    kill_when(proc, lambda: state_path.exists() and
              torch.load(state_path, weights_only=False)["state"]["step"] >= 4, timeout=600)
    killed_at = torch.load(state_path, weights_only=False)["state"]["step"]
    assert 4 <= killed_at < a["distill"]["outer_steps"] and not path.exists()

    assert record_of(run_cli("td3.distill", *args, env=env, check=True, timeout=900))[0] == path
    b = json.loads(path.read_text())
    assert b["status"] == "complete" and b["environment"]["device"] == GPU.type
    assert history_of(b) == history_of(a, tmp_path / "a-summary")
    assert b["distill"]["validations"] == a["distill"]["validations"]
    assert b["metrics"] == a["metrics"]
    sa = torch.load(done / "summary.pt", weights_only=True)["tensors"]
    sb = torch.load(path.parent / "summary.pt", weights_only=True)["tensors"]
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (done / "summary.inter").read_bytes() == (path.parent / "summary.inter").read_bytes()


# ------------------------------------------------------ 3. training on a summary
def on_summary(dataset, device, options, name="sasrec"):
    """td3.summary_training.train_on_summary of a fixed random summary (20×10) on ``device``."""
    from td3.summary_training import train_on_summary

    S = torch.randn(20, 10, dataset.num_items, generator=torch.Generator().manual_seed(3)).mul(3).softmax(-1)
    result = train_on_summary(S, dataset, name, options, epochs=4, batch_size=5, lr=1e-3, weight_decay=0.0,
                              alt=True, alt_low=2, seed=0, max_len=10, select="last",
                              eval_protocols=("recbole100",), device=device)
    return result


def test_training_on_a_summary_on_cuda_matches_the_cpu(dataset):
    cpu = on_summary(dataset, CPU, NO_DROPOUT["sasrec"])
    with DeviceCrossings() as crossings, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpu = on_summary(dataset, GPU, NO_DROPOUT["sasrec"])

    for x, y in zip(gpu.history, cpu.history):
        assert abs(x["loss"] - y["loss"]) <= LOSS * abs(y["loss"]), (x, y)
    gap = relative(list(gpu.model.parameters()), list(cpu.model.parameters()))
    assert gap <= PARAMETERS, gap
    # A rank moves only where two items' scores are within rounding of each other, and one
    # user's move changes MRR@10 over 200 users by 1/400 at most: 0.01 allows four.
    for split in ("valid", "test"):
        x, y = (r.metrics["recbole100"]["MRR@10"] for r in (getattr(gpu, split), getattr(cpu, split)))
        assert abs(x - y) <= 0.01, (split, x, y)
    assert not off_gpu(gpu.model.state_dict())
    assert not crossings.data_crossings(), crossings.data_crossings()[:5]
    assert not nondeterminism_warnings(caught), nondeterminism_warnings(caught)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "narm", "bert4rec"])
def test_training_on_a_summary_with_dropout_repeats_bitwise_on_cuda(dataset, name):
    """Each learner as configured (BERT4Rec: its soft cloze loss) on the GPU, twice: the same bits."""
    one, two = (on_summary(dataset, GPU, {}, name) for _ in range(2))
    assert not off_gpu(one.model.state_dict())
    assert [h["loss"] for h in one.history] == [h["loss"] for h in two.history]
    assert all(torch.equal(x, y) for x, y in zip(one.model.state_dict().values(), two.model.state_dict().values()))
