"""Dataset distillation through the real command line (``python -m td3.distill``).

A small synthetic problem (200 users, 300 items, a 10×10 summary, a handful of outer
steps): each run takes a few seconds, most of it the interpreter and the teacher.
Tests that only read complete runs share one results directory (one teacher for all);
tests that look at what a run leaves behind get their own.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import IMPORT_LOG, assert_no_compiler_import, assert_one_clear_error, files_under, kill_when, run_cli
import torch

from td3.errors import TrainingError

REPO = Path(__file__).resolve().parents[1]
MU, ZETA, USERS, ITEMS, D3 = 10, 10, 200, 300, 32
SMALL = [f"dataset.num_users={USERS}", f"dataset.num_items={ITEMS}", f"summary.mu={MU}", f"summary.zeta={ZETA}",
         "distill.steps=6", "distill.window=3", "distill.inner.batch_size=5", "distill.inner.alt_low=2",
         "distill.outer.epochs=1", "distill.outer.batch_size=1000", "distill.validate_every=3",
         "distill.validate_epochs=3", "distill.checkpoint_every=2", "evaluation.epochs=5",
         "evaluation.batch_size=5", "train.epochs=8", "train.pool_epochs=[2,6]", "progress=false", "threads=1",
         # the reference settings, where the synthetic preset picks others for speed
         "distill.init_from=pool", "distill.inner.embedding=frozen", "distill.outer.fsa_weight=1.0"]
METRICS = {f"{n}@{k}" for n in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("td3.distill", *args, **kwargs)


def record_of(proc: subprocess.CompletedProcess) -> tuple[Path, dict]:
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.name == "record.json" and path.is_file(), proc.stdout
    return path, json.loads(path.read_text())


def make_env(root: Path) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TD3_")}
    (root / "mirror").mkdir(parents=True, exist_ok=True)  # empty: the synthetic data is generated
    e.update(TD3_DATA_DIR=str(root / "data"), TD3_RESULTS_DIR=str(root / "runs"),
             TD3_DATA_MIRROR=str(root / "mirror"), PYTHONPATH=str(REPO))
    return e


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One results directory for the tests that only read complete runs (one teacher)."""
    root = tmp_path_factory.mktemp("shared")
    return make_env(root)


@pytest.fixture(scope="module")
def td3_run(shared):
    """The default td3 run in the shared directory: (record path, record, the process)."""
    proc = run(*SMALL, env={**shared, **IMPORT_LOG}, check=True)
    return (*record_of(proc), proc)


@pytest.fixture(scope="module")
def dataset(shared):
    """The same synthetic dataset the runs read, loaded here to recompute what they report."""
    from td3.data import load_dataset
    return load_dataset("synthetic", shared["TD3_DATA_DIR"] + "-test", num_users=USERS, num_items=ITEMS)





def history_of(record: dict, summary_dir: Path | None = None) -> list[dict]:
    """The outer steps' history: in the summary's distill.json (the run record keeps it small)."""
    directory = summary_dir or Path(record["summary"]["dir"])
    return json.loads((directory / "distill.json").read_text())["history"]


def teacher_V(record: dict) -> torch.Tensor:
    """The teacher's item table (without padding) a distillation record's summary references."""
    best = torch.load(Path(record["teacher"]["run"]) / "best.pt", weights_only=True)
    return best["item_embedding.weight"][1:]


def assert_metrics(metrics: dict) -> None:
    assert set(metrics) == {"valid", "test"}
    for split in ("valid", "test"):
        assert set(metrics[split]) == {"recbole100", "unseen100", "full"}
        for m in metrics[split].values():
            assert set(m) == METRICS
            assert all(0.0 <= v <= 1.0 for v in m.values())
            assert m["HR@5"] <= m["HR@10"] <= m["HR@20"] and m["MRR@10"] <= m["NDCG@10"] <= m["HR@10"]


def inter_sequences(path: Path) -> dict[str, list[str]]:
    from td3.data.formats import read_interactions
    df = read_interactions(path, "atomic")
    return {u: g.sort_values("timestamp")["item"].tolist() for u, g in df.groupby("user", sort=False)}


# ---------------------------------------------------------------- 1. a td3 run
def test_td3_run_record_summary_and_teacher_reuse(shared, dataset, td3_run):
    from td3.data import training_windows
    from td3.summary import Summary, TuckerSummary

    path, record, proc = td3_run
    run_dir = path.parent
    # teacher training, the outer loop and the evaluation learner, without torch's compiler
    assert_no_compiler_import(proc)
    # the headline figures, then the record's path last
    out = proc.stdout.strip().splitlines()
    test = record["metrics"]["test"]
    assert out[-2] == (f"td3 sasrec: recbole100 NDCG@10 {test['recbole100']['NDCG@10']:.4f} HR@10 "
                       f"{test['recbole100']['HR@10']:.4f}, full NDCG@10 {test['full']['NDCG@10']:.4f} "
                       f"HR@10 {test['full']['HR@10']:.4f}") and out[-1] == str(path)
    assert record["status"] == "complete" and record["kind"] == "distill" and record["method"] == "td3"
    assert run_dir.name == f"synthetic-td3-{MU}x{ZETA}-{record['signature']}"
    assert run_dir.parent == Path(shared["TD3_RESULTS_DIR"]) / "distill"
    assert record["config"]["summary"]["mu"] == MU and record["config"]["max_len"] == ZETA
    assert record["dataset"]["sha256"] == dataset.sha256

    # Teacher: a complete full-data run under results/train, pool epochs 2..6.
    teacher_dir = Path(record["teacher"]["run"])
    assert teacher_dir.parent == Path(shared["TD3_RESULTS_DIR"]) / "train"
    teacher = json.loads((teacher_dir / "record.json").read_text())
    assert teacher["status"] == "complete" and teacher["signature"] == record["teacher"]["signature"]
    assert teacher["signature"] in teacher_dir.name
    assert record["teacher"]["pool_size"] == 5 == len(teacher["checkpoints"]["pool"])
    assert record["teacher"]["pool_note"] is None
    assert record["teacher"]["test"] == teacher["metrics"]["test"]

    # Summary accounting: U (μ×d1) + T (ζ×d2) + G (d1×d2×d3), float32; V is the teacher's.
    d1 = d2 = 8
    numbers = MU * d1 + ZETA * d2 + d1 * d2 * D3
    assert record["summary"]["kind"] == "tucker"
    assert record["summary"]["parameters"] == numbers == 2208
    assert record["summary"]["storage"] == {"numbers": numbers, "bytes": 4 * numbers, "shared_numbers": ITEMS * D3}

    # Distillation: outer steps = epochs × ceil(windows / windows_per_batch), one history entry each.
    info = record["distill"]
    x, y = training_windows(dataset.train, ZETA)
    per_window = float((y != 0).sum()) / len(y)
    assert info["windows_per_batch"] == max(1, round(1000 / per_window))
    assert info["batches_per_epoch"] == math.ceil(len(x) / info["windows_per_batch"])
    steps = info["outer_steps"]
    assert steps == info["batches_per_epoch"] >= 6
    assert abs(info["targets_per_batch"] - 1000) <= per_window
    assert "history" not in info
    history = history_of(record)
    assert [h["step"] for h in history] == list(range(1, steps + 1))
    for h in history:
        assert 0 < h["ce"] < 2 * math.log(ITEMS) and h["fsa"] >= 0 and 0 < h["grad_norm"] < 1e3
        assert 3 <= h["M"] <= 6 and 0 <= h["init"] < 5
    assert len({h["init"] for h in history}) > 1  # per-step init draws from the pool
    expected_val_steps = sorted({s for s in range(3, steps + 1, 3)} | {steps})
    assert [v["step"] for v in info["validations"]] == expected_val_steps
    scores = [v["valid_MRR@10"] for v in info["validations"]]
    assert info["best_valid_MRR@10"] == max(scores)
    assert info["best_step"] == info["validations"][scores.index(max(scores))]["step"]
    assert info["seconds_per_outer_step"] > 0

    # Metrics: one evaluation learner, one seed.
    assert_metrics(record["metrics"])
    assert [(e["model"], e["seed"], e["protocol"]) for e in record["evaluations"]] == [("sasrec", 0, "scratch")]
    assert record["evaluations"][0]["metrics"] == record["metrics"] == record["metrics_by_model"]["sasrec"]
    assert 1 <= record["evaluations"][0]["best_epoch"] <= 5
    per_user = pd.read_parquet(run_dir / record["per_user"])
    assert len(per_user) == USERS * 3 * 9 * 2  # users × protocols × metrics × splits
    assert set(per_user["model"]) == {"sasrec"} and set(per_user["seed"]) == {0}
    ndcg = per_user.query("split == 'test' and protocol == 'full' and metric == 'NDCG@10'")["value"].mean()
    assert ndcg == pytest.approx(record["metrics"]["test"]["full"]["NDCG@10"])
    # The summary is a cached artifact of its own; the run directory holds copies.
    summary_dir = Path(record["summary"]["dir"])
    assert summary_dir.parent == Path(shared["TD3_RESULTS_DIR"]) / "summaries"
    assert record["summary"]["signature"] in summary_dir.name and not record["distill"]["cached"]
    assert (summary_dir / "distill.json").is_file() and not (summary_dir / "state.pt").exists()
    assert (summary_dir / "summary.pt").read_bytes() == (run_dir / "summary.pt").read_bytes()
    assert record["distill"]["seconds"] > 0

    # summary.pt: the best summary, V = the teacher's item table; summary.inter: its argmax.
    # V is the teacher's, referenced by the file (shape and digest), not stored in it
    best = torch.load(teacher_dir / "best.pt", weights_only=True)
    V = best["item_embedding.weight"][1:]
    assert "V" not in torch.load(run_dir / "summary.pt", weights_only=True)["tensors"]
    with pytest.raises(TrainingError, match="references the teacher's V"):
        Summary.load(run_dir / record["summary"]["file"])
    with pytest.raises(TrainingError, match="is not the one the summary was distilled with"):
        Summary.load(run_dir / record["summary"]["file"], shared={"V": V + 1e-3})
    summary = Summary.load(run_dir / record["summary"]["file"], shared={"V": V})
    assert isinstance(summary, TuckerSummary) and (summary.mu, summary.zeta, summary.num_items) == (MU, ZETA, ITEMS)
    assert summary.num_parameters() == numbers
    assert torch.equal(summary.V, V)
    S = summary.distributions().detach()
    assert S.shape == (MU, ZETA, ITEMS) and torch.allclose(S.sum(-1), torch.ones(MU, ZETA))
    seqs = inter_sequences(run_dir / record["summary"]["inter"])
    assert list(seqs) == [f"s{a}" for a in range(MU)] and all(len(s) == ZETA for s in seqs.values())
    tokens = np.asarray(dataset.item_ids)[summary.hard_sequences().numpy()]
    assert [seqs[f"s{a}"] for a in range(MU)] == tokens.tolist()
    # the record says how peaked the kept summary is (its hard sequences' distinct items...)
    stats = record["summary"]["statistics"]
    assert stats["argmax_items"] == len(np.unique(tokens))
    assert stats["entropy"] == pytest.approx(float(-(S * S.log()).sum(-1).mean()), rel=1e-5)

    # A second method reuses the teacher: no retraining, one train run only.
    teacher_mtime = (teacher_dir / "record.json").stat().st_mtime_ns
    best_mtime = (teacher_dir / "best.pt").stat().st_mtime_ns
    _, farzi = record_of(run(*SMALL, "method=farzi", env=shared, check=True))
    assert farzi["status"] == "complete" and farzi["teacher"]["run"] == str(teacher_dir)
    assert (teacher_dir / "record.json").stat().st_mtime_ns == teacher_mtime
    assert (teacher_dir / "best.pt").stat().st_mtime_ns == best_mtime
    assert [p.name for p in (Path(shared["TD3_RESULTS_DIR"]) / "train").iterdir()] == [teacher_dir.name]
    # Farzi: latent D (μ×ζ×d) and decoder M (d×|V|), d = summary.latent_dim = 32.
    assert farzi["summary"]["kind"] == "farzi"
    assert farzi["summary"]["parameters"] == MU * ZETA * 32 + 32 * ITEMS
    assert farzi["distill"]["outer_steps"] == steps

    # Another evaluation of the same summary (longer budget) reuses it: no distillation.
    longer_path, longer = record_of(run(*SMALL, "evaluation.epochs=6", env=shared, check=True))
    assert longer_path != path and longer["distill"]["cached"] and longer["summary"]["dir"] == str(summary_dir)
    assert longer["distill"]["validations"] == record["distill"]["validations"] and "distill" not in longer["timings"]
    assert (longer_path.parent / "summary.pt").read_bytes() == (run_dir / "summary.pt").read_bytes()
    # Validating every 2nd epoch is another evaluation of it, choosing among epochs 2, 4 and the last.
    _, sparse = record_of(run(*SMALL, "evaluation.eval_every=2", env=shared, check=True))
    assert sparse["distill"]["cached"] and sparse["signature"] != record["signature"]
    (every,), (second,) = ([e["valid_curve"] for e in r["evaluations"]] for r in (record, sparse))
    assert [epoch for epoch, _ in every] == [1, 2, 3, 4, 5] and [epoch for epoch, _ in second] == [2, 4, 5]
    assert second == [every[1], every[3], every[4]]  # the same learner, validated less often
    assert sparse["evaluations"][0]["best_epoch"] == max(second, key=lambda point: point[1])[0]

    # Relaunching the same td3 config does nothing and points at the same record.
    mtime = path.stat().st_mtime_ns
    before = {p: p.stat().st_mtime_ns for p in files_under(Path(shared["TD3_RESULTS_DIR"]))}
    again = run(*SMALL, "threads=2", env=shared, check=True)  # threads do not change the signature
    assert record_of(again)[0] == path and path.stat().st_mtime_ns == mtime
    assert {p: p.stat().st_mtime_ns for p in files_under(Path(shared["TD3_RESULTS_DIR"]))} == before


# ----------------------------------------------------------- 2. the other methods
def test_baseline_methods(shared, dataset):
    from td3.baselines import longest_sequences, random_sequences

    tokens = np.asarray(dataset.item_ids)
    expected = {"random": random_sequences(dataset.train, MU, ZETA, 0),
                "longest": longest_sequences(dataset.train, MU, ZETA)}
    for method in ("random", "longest"):
        path, record = record_of(run(*SMALL, f"method={method}", env=shared, check=True))
        assert record["status"] == "complete" and record["method"] == method
        assert f"-{method}-{MU}x{ZETA}-" in path.parent.name
        assert "teacher" not in record and "distill" not in record  # no teacher needed (scratch)
        total = record["summary"]["interactions"]
        # μ·ζ exactly, or μ·ζ − 1 when a one-item remainder is dropped (td3.baselines)
        assert total == MU * ZETA or (total == MU * ZETA - 1)
        seqs = inter_sequences(path.parent / "summary.inter")
        assert sum(len(s) for s in seqs.values()) == total and len(seqs) == record["summary"]["sequences"]
        assert list(seqs.values()) == [tokens[s].tolist() for s in expected[method]]
        assert_metrics(record["metrics"])
    assert [s.tolist() for s in expected["random"]] != [s.tolist() for s in expected["longest"]]

    path, naive = record_of(run(*SMALL, "method=naive", env=shared, check=True))
    assert naive["status"] == "complete" and naive["summary"]["kind"] == "naive"
    assert naive["summary"]["parameters"] == MU * ZETA * ITEMS
    assert_metrics(naive["metrics"])

    # Full data: a full-data training run per seed; seed 0 is the teacher run itself.
    path, full = record_of(run(*SMALL, "method=full", "evaluation.seeds=[0,1]", env=shared, check=True))
    assert full["status"] == "complete" and "summary" not in full and "teacher" not in full
    train_dir = Path(shared["TD3_RESULTS_DIR"]) / "train"
    records = [json.loads(p.read_text()) for p in train_dir.glob("*/record.json")]
    trains = {r["seed"]: r for r in records}
    assert len(records) == 2 and set(trains) == {0, 1}  # seed 0 is the teacher's run: not trained twice
    for e in full["evaluations"]:
        assert e["metrics"] == trains[e["seed"]]["metrics"] and e["best_epoch"] == trains[e["seed"]]["best_epoch"]
    for split in ("valid", "test"):
        for protocol in ("recbole100", "unseen100", "full"):
            for m in METRICS:
                mean = (trains[0]["metrics"][split][protocol][m] + trains[1]["metrics"][split][protocol][m]) / 2
                assert full["metrics"][split][protocol][m] == pytest.approx(mean, rel=1e-12)
    per_user = pd.read_parquet(path.parent / "per_user.parquet")
    assert len(per_user) == 2 * USERS * 3 * 9 * 2 and set(per_user["seed"]) == {0, 1}


# -------------------------------------------------------------- 7. higher backend
def test_higher_backend_matches_func_through_the_cli(shared):
    """The same run through either backend, from the command line, in float32.

    With SGD (and momentum) the two backends follow the same trajectory. Inner Adam is left
    to test_inner's float64 comparison: when RaT-BPTT's window holds Adam's first step
    (M = W), the update lr·g/(|g| + eps) has a derivative up to lr/eps for gradients near
    eps, so float32 rounding that the backends order differently is amplified and their
    trajectories part. In float64 they agree there too (test_inner, M = W)."""
    pytest.importorskip("higher")
    sgd = ["distill.inner.optimizer=sgd", "distill.inner.momentum=0.9"]
    func, higher = (record_of(run(*SMALL, *sgd, f"distill.inner.backend={backend}", env=shared, check=True))[1]
                    for backend in ("func", "higher"))
    assert higher["status"] == "complete" and higher["signature"] != func["signature"]
    a, b = history_of(func), history_of(higher)
    assert len(a) == len(b) > 0 and any(h["M"] == 3 for h in a)  # some windows hold the first step
    assert [(h["step"], h["M"], h["init"]) for h in a] == [(h["step"], h["M"], h["init"]) for h in b]
    for x, y in zip(a, b):  # the history keeps 5 significant digits: one rounding step apart at most
        for key in ("ce", "fsa", "grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=0), (key, x, y)


# ------------------------------------------------------- 3. kill and resume bitwise
KILL = [*SMALL, "distill.outer.batch_size=400", "distill.steps=16", "distill.window=4"]  # ~19 outer steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The KILL config run to its end once: (results env, record) to compare resumed runs with."""
    root = tmp_path_factory.mktemp("uninterrupted")
    env = make_env(root)
    path, record = record_of(run(*KILL, env=env, check=True))
    return env, record


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_run_checkpoints_at_its_next_step_and_resumes_bitwise(tmp_path, uninterrupted, signum):
    """SIGTERM or Ctrl-C: the run finishes its outer step, saves it, says so in one line and
    exits 128 + the signal; rerun, it ends exactly as the uninterrupted run."""
    _, a = uninterrupted
    env = make_env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "td3.distill", *KILL], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    summaries = tmp_path / "runs" / "summaries"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not list(summaries.glob("*/state.pt")):
            time.sleep(0.02)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"td3: stopped by {signal.Signals(signum).name} after outer step ") and "Traceback" not in err
    stopped_at = int(last.split("after outer step ")[1].split()[0])
    state = next(summaries.glob("*/state.pt"))
    assert torch.load(state, weights_only=False)["state"]["step"] == stopped_at >= 2
    assert not list((tmp_path / "runs" / "distill").glob("*/record.json"))   # no failed record
    path, b = record_of(run(*KILL, env=env, check=True))
    assert b["status"] == "complete" and b["metrics"] == a["metrics"]
    assert history_of(b) == history_of(a)
    # its distillation time counts both attempts: the two are written in its record
    assert b["distill"]["attempts"] == 2 and a["distill"]["attempts"] == 1 and b["distill"]["seconds"] > 0
    assert b["distill"]["validations"] == a["distill"]["validations"]


@pytest.mark.parametrize("damaged", ["summary.pt", "distill.json"])
def test_a_damaged_cached_summary_is_distilled_again_to_the_same_bytes(tmp_path, uninterrupted, damaged):
    """A run evaluating a summary another run distilled finds the cache truncated: it says so
    in one warning, distils the summary again and ends with the uninterrupted run's bytes."""
    env_a, a = uninterrupted
    shutil.copytree(Path(env_a["TD3_RESULTS_DIR"]).parent, tmp_path / "copy", symlinks=True)
    env = make_env(tmp_path / "copy")
    runs = Path(env["TD3_RESULTS_DIR"])
    summary_dir = runs / "summaries" / Path(a["summary"]["dir"]).name
    original = {name: (summary_dir / name).read_bytes() for name in ("summary.pt", "summary.inter")}
    (evaluating,) = (runs / "distill").iterdir()
    shutil.rmtree(evaluating)  # the run that evaluated the summary goes; the cache stays
    target = summary_dir / damaged
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])

    proc = run(*KILL, env=env, check=True)
    path, b = record_of(proc)
    said = [line for line in proc.stderr.splitlines() if "distilling it again" in line]
    assert len(said) == 1 and str(target) in said[0] and "cannot be read" in said[0], proc.stderr[-2000:]
    assert b["status"] == "complete" and b["distill"]["cached"] is False and a["distill"]["cached"] is False
    assert {name: (summary_dir / name).read_bytes() for name in original} == original
    assert (path.parent / "summary.pt").read_bytes() == original["summary.pt"]
    assert b["metrics"] == a["metrics"] and history_of(b) == history_of(a)


def test_killed_run_resumes_bitwise(tmp_path, dataset):
    """Run A uninterrupted, then (same results dir, so the teacher is reused; A's run moved
    aside) run B killed with SIGKILL after a checkpoint at step >= 4 and relaunched."""
    env = make_env(tmp_path)
    path, a = record_of(run(*KILL, env=env, check=True))
    assert a["distill"]["outer_steps"] >= 15
    done = tmp_path / "a-done"
    path.parent.rename(done)
    summary_dir = Path(a["summary"]["dir"])  # B distils again: move A's cached summary aside too
    summary_dir.rename(tmp_path / "a-summary")

    proc = subprocess.Popen([sys.executable, "-m", "td3.distill", *KILL], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state_path = summary_dir / "state.pt"
    kill_when(proc, lambda: torch.load(state_path, weights_only=False)["state"]["step"] >= 4, timeout=240)
    assert proc.returncode == -signal.SIGKILL, "run finished before it could be killed"
    killed_at = torch.load(state_path, weights_only=False)["state"]["step"]
    assert 4 <= killed_at < a["distill"]["outer_steps"]
    assert not path.exists()

    assert record_of(run(*KILL, env=env, check=True))[0] == path
    b = json.loads(path.read_text())
    assert b["status"] == "complete"
    assert history_of(b) == history_of(a, tmp_path / "a-summary")
    assert b["distill"]["validations"] == a["distill"]["validations"]
    assert b["distill"]["best_step"] == a["distill"]["best_step"]
    assert b["metrics"] == a["metrics"] and b["evaluations"][0]["metrics"] == a["evaluations"][0]["metrics"]
    sa = torch.load(done / "summary.pt", weights_only=True)["tensors"]
    sb = torch.load(path.parent / "summary.pt", weights_only=True)["tensors"]
    assert set(sa) == set(sb) == {"U", "T", "G"}   # V: the teacher's, referenced
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (done / "summary.inter").read_bytes() == (path.parent / "summary.inter").read_bytes()
    assert not state_path.exists()

    # summary.pt is the best validated summary (not the last one): validating it again
    # reproduces the best score exactly.
    from td3.summary import Summary
    from td3.summary_training import train_on_summary

    info, cfg = b["distill"], b["config"]
    assert info["best_step"] < info["outer_steps"]  # (so that best and last differ here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_on_summary(
            Summary.load(path.parent / "summary.pt", shared={"V": teacher_V(b)}).distributions().detach(),
            dataset, "sasrec",
            {k: v for k, v in cfg["model"].items() if k != "name"}, epochs=cfg["distill"]["validate_epochs"],
            batch_size=cfg["evaluation"]["batch_size"], lr=cfg["evaluation"]["lr"],
            weight_decay=cfg["evaluation"]["weight_decay"], alt=True, alt_low=2, seed=0, max_len=ZETA,
            select="last", eval_protocols=("recbole100",))
    finally:
        torch.set_num_threads(threads)
    assert result.valid.metrics["recbole100"]["MRR@10"] == info["best_valid_MRR@10"]


def compose_config(overrides: list[str], results: Path) -> dict:
    """The resolved config the command line would build, for in-process runs."""
    from td3.config import compose_config as compose

    return compose([*overrides, f"results_dir={results}"])


def test_per_epoch_init_resumes_bitwise(tmp_path, monkeypatch):
    """distill.init=per_epoch: a run resumed mid-epoch keeps the epoch's pool checkpoint.

    In-process (an exception injected at outer step 6 stands in for the kill): the state
    after step 4 is on disk, the next launch resumes from it.
    """
    import td3.distill as distill_module
    from td3.engine import BilevelEngine

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_config([*SMALL, "distill.init=per_epoch", "distill.outer.epochs=2"], tmp_path / "runs")
    threads = torch.get_num_threads()
    try:
        path = distill_module.distill(cfg)
        a = json.loads(path.read_text())
        path.parent.rename(tmp_path / "a-done")
        Path(a["summary"]["dir"]).rename(tmp_path / "a-summary")
        bpe = a["distill"]["batches_per_epoch"]
        assert bpe >= 6
        for epoch in range(2):  # one pool checkpoint per epoch
            assert len({h["init"] for h in history_of(a, tmp_path / "a-summary")[epoch * bpe:(epoch + 1) * bpe]}) == 1

        original = BilevelEngine.step

        def interrupted(self, step):
            if step == 5:
                raise KeyboardInterrupt("killed")
            return original(self, step)

        monkeypatch.setattr(BilevelEngine, "step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            distill_module.distill(cfg)
        monkeypatch.setattr(BilevelEngine, "step", original)
        assert torch.load(Path(a["summary"]["dir"]) / "state.pt", weights_only=False)["state"]["step"] == 4
        b = json.loads(distill_module.distill(cfg).read_text())
    finally:
        torch.set_num_threads(threads)
    assert history_of(b) == history_of(a, tmp_path / "a-summary")
    assert b["metrics"] == a["metrics"]


@pytest.mark.parametrize("section,key,others", [("evaluation", "eval_every", (2, True, 1.0)),
                                                ("distill", "sampled_items", (1, False, 0.0)),
                                                ("distill", "learners", (["sasrec", "gru4rec"],)),
                                                ("distill.outer", "min_steps", (450, False)),
                                                ("distill.inner", "learn_lr", (True, 0))])
def test_a_setting_added_later_keeps_earlier_signatures_at_its_neutral_value(section, key, others):
    """Runs made before a setting existed keep their signature (records.NEUTRAL_VALUES;
    distill.inner.bidirectional_loss: test_bert4recs_loss_is_in_the_signature_only_when_bert4rec_is_trained)."""
    from td3 import records

    cfg = compose_config(SMALL, Path("runs"))
    before = copy.deepcopy(cfg)

    def group(c):
        for part in section.split("."):
            c = c[part]
        return c
    del group(before)[key]
    assert records.signature(cfg) == records.signature(before)
    for other in others:  # another value, or another type, computes something else
        group(cfg)[key] = other
        assert records.signature(cfg) != records.signature(before), other


def test_the_meta_learning_rate_is_in_the_signature_only_when_the_rate_is_learned():
    """distill.inner.lr_lr moves nothing with a fixed η (records.INERT_UNLESS): a sweep over it
    then names one run; with a learned η each value is a run of its own."""
    from td3 import records

    cfg = compose_config(SMALL, Path("runs"))
    assert cfg["distill"]["inner"]["learn_lr"] is False
    fixed = {records.signature(_with(cfg, "distill.inner.lr_lr", v)) for v in (0.01, 0.02, 1)}
    assert len(fixed) == 1 and fixed == {records.signature(cfg)}
    learned = _with(cfg, "distill.inner.learn_lr", True)
    signatures = {records.signature(_with(learned, "distill.inner.lr_lr", v)) for v in (0.01, 0.02, 1)}
    assert len(signatures) == 3 and records.signature(cfg) not in signatures


def test_bert4recs_loss_is_in_the_signature_only_when_bert4rec_is_trained():
    """distill.inner.bidirectional_loss computes nothing unless BERT4Rec distils the summary
    (the run's model or one of its learners) or is trained on it (records.INERT_UNLESS); the
    cloze, what every run before the key computed, leaves it out (NEUTRAL_VALUES)."""
    from td3 import records

    cfg = compose_config(SMALL, Path("runs"))
    assert "bert4rec" not in [cfg["model"]["name"], *cfg["evaluation"]["models"], *cfg["distill"]["learners"]]
    assert records.signature(_with(cfg, "distill.inner.bidirectional_loss", "prefix")) == records.signature(cfg)
    for key, value in (("evaluation.models", ["sasrec", "bert4rec"]), ("distill.learners", ["sasrec", "bert4rec"]),
                       ("model.name", "bert4rec")):
        with_bert = _with(cfg, key, value)
        cloze = records.signature(_with(with_bert, "distill.inner.bidirectional_loss", "cloze"))
        prefix = records.signature(_with(with_bert, "distill.inner.bidirectional_loss", "prefix"))
        assert cloze != prefix, key
        without_key = copy.deepcopy(with_bert)
        del without_key["distill"]["inner"]["bidirectional_loss"]
        assert cloze == records.signature(without_key), key


def _with(cfg: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(cfg)
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def test_min_steps_adds_whole_outer_epochs(tmp_path, monkeypatch):
    """distill.outer.min_steps: a dataset with few real batches per epoch gets whole epochs
    added until it reaches that many outer steps; one that has them already is unchanged,
    and the cosine schedule spans the steps actually run."""
    from td3.config import dataset_options
    from td3.data import load_dataset
    from td3.engine import BilevelEngine

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))

    def engine(*extra):
        cfg = compose_config([*SMALL, "distill.outer.epochs=2", *extra], tmp_path / "runs")
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
        return BilevelEngine(cfg, data, _RandomTeacher(cfg, data.num_items), torch.device("cpu"))

    plain = engine()
    bpe = plain.batches_per_epoch
    assert bpe >= 2 and plain.total_steps == 2 * bpe and plain.outer_epochs == 2
    assert engine(f"distill.outer.min_steps={2 * bpe}").total_steps == 2 * bpe   # reached already
    longer = engine(f"distill.outer.min_steps={3 * bpe + 1}")                      # rounded up to an epoch
    assert (longer.outer_epochs, longer.total_steps) == (4, 4 * bpe)
    assert longer.sched.total_steps == 4 * bpe


class _RandomTeacher:
    """A teacher and a pool of freshly initialised learners (SASRecs by default): an outer
    step's arithmetic does not need a trained one."""

    def __init__(self, cfg, num_items, name: str = "sasrec", pool: int = 1):
        from td3.models import build_model
        from td3.config import RunConfig, model_options

        torch.manual_seed(0)
        opts = dict(max_len=cfg["max_len"], **model_options(RunConfig.of(cfg).learner(name)))
        self.model = build_model(name, num_items, **opts).eval()
        self.pool = [build_model(name, num_items, **opts).state_dict() for _ in range(pool)]

    @property
    def item_embedding(self):
        return self.model.item_embedding.weight.detach()


@pytest.mark.parametrize("embedding", ["frozen", "trainable"])
def test_sampled_items_covering_the_catalog_give_the_exact_step(tmp_path, monkeypatch, embedding):
    """distill.sampled_items >= |V| puts every item in the subset at weight 1: the outer step
    (losses and meta-gradient) is the full softmax's, up to the order of the items; a small
    subset gives a different but finite meta-gradient and an outer loss near the exact one."""
    from td3.data import load_dataset
    from td3.config import dataset_options
    from td3.engine import BilevelEngine

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    out = {}
    for k in (0, 10**6, 64):
        cfg = compose_config([*SMALL, f"distill.sampled_items={k}", f"distill.inner.embedding={embedding}",
                              "distill.outer.batch_size=100"], tmp_path / "runs")  # ~70 distinct targets
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
        torch.manual_seed(0)
        engine = BilevelEngine(cfg, data, _RandomTeacher(cfg, data.num_items), torch.device("cpu"))
        steps = [engine.step(0)]
        grads = [p.grad.clone() for p in engine.summary.parameters()]  # the first meta-gradient
        steps.append(engine.step(1))
        out[k] = (steps, grads)
    (full, full_g), (every, every_g), (few, few_g) = out[0], out[10**6], out[64]
    for a, b in zip(full, every):
        assert a["M"] == b["M"] and a["init"] == b["init"]
        for key in ("ce", "fsa", "grad_norm"):
            # (after step 0 the summaries differ by rounding, which Adam's first step, lr·g/|g|,
            # amplifies where g is about 0: step 1 agrees less closely than step 0)
            assert b[key] == pytest.approx(a[key], rel=1e-5 if a["step"] == 1 else 1e-3), key
    for a, b in zip(full_g, every_g):
        torch.testing.assert_close(b, a, rtol=5e-3, atol=1e-4 * a.abs().max().item())  # float32 rounding
    assert all(math.isfinite(s["grad_norm"]) and s["grad_norm"] > 0 for s in few)
    assert any(not torch.allclose(a, b, rtol=1e-2) for a, b in zip(full_g, few_g))
    assert few[0]["ce"] == pytest.approx(full[0]["ce"], rel=0.05)


LEARNERS = ("sasrec", "gru4rec", "narm", "bert4rec")


def multi_learner_engine(tmp_path, monkeypatch, *extra, outer_batch: int = 100):
    from td3.config import dataset_options
    from td3.data import load_dataset
    from td3.engine import BilevelEngine

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_config([*[o for o in SMALL if not o.startswith("distill.outer.batch_size=")],
                          f"distill.outer.batch_size={outer_batch}", f"distill.learners=[{','.join(LEARNERS)}]",
                          *extra], tmp_path / "runs")
    data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
    teachers = {name: _RandomTeacher(cfg, data.num_items, name, pool=3) for name in LEARNERS}

    def make():
        return BilevelEngine(cfg, data, teachers["sasrec"], torch.device("cpu"),
                             teachers={n: t for n, t in teachers.items() if n != "sasrec"})
    return make


def test_several_inner_learners_each_shape_the_summary(tmp_path, monkeypatch):
    """distill.learners: each outer step trains one architecture, drawn per step, from its own
    teacher's pool and item table, aligned with its own teacher's features; every one gives a
    finite, non-zero meta-gradient. BERT4Rec's outer loss is on the item after each window
    (a [MASK] there): at every position it would read the very item it is asked for."""
    from td3.engine import outer_targets

    make = multi_learner_engine(tmp_path, monkeypatch)
    engine = make()
    assert [lr.name for lr in engine.learners] == list(LEARNERS)
    from td3.engine import teacher_features
    # per outer step, a real batch's features are exactly the rows of all windows' features
    # (what the engine kept before it computed them per step: docs/performance.md §6)
    batch = torch.randperm(len(engine.x), generator=torch.Generator().manual_seed(0))[:7]
    for learner, shape in ((engine.learners[0], (7, engine.x.shape[1], engine.learners[0].module.hidden_size)),
                           (engine.learners[3], (7, engine.learners[3].module.hidden_size))):
        whole = teacher_features(learner.teacher.model, engine.x)
        part = teacher_features(learner.teacher.model, engine.x[batch])
        assert part.shape == shape and torch.equal(part, whole[batch])
    assert outer_targets(engine.learners[3].module, engine.x, engine.y).shape == (len(engine.x),)
    entries = [engine.step(i) for i in range(12)]
    assert {e["learner"] for e in entries} == set(LEARNERS)
    assert all(math.isfinite(e["ce"]) and math.isfinite(e["fsa"]) and e["grad_norm"] > 0 for e in entries)
    # a fresh learner's outer loss is near log |V| whatever the architecture: nothing leaks
    for e in entries[:4]:
        assert 0.8 * math.log(engine.learner.num_items) < e["ce"] < 1.5 * math.log(engine.learner.num_items), e
    # the draw depends on (seed, step) alone: another engine draws the same learners
    again = make()
    assert [again.learner_at(i).name for i in range(12)] == [e["learner"] for e in entries]


def test_teachers_being_made_elsewhere_are_taken_last(tmp_path, monkeypatch):
    """Two jobs starting together need the same teachers: a job takes the teachers no other
    process is making first, so that it trains one while another job trains another, instead
    of waiting on each in turn. Here "another job" holds the GRU4Rec teacher's lock until the
    NARM teacher exists: taken in the listed order, the call would wait on GRU4Rec for good."""
    import threading

    from td3 import layout, records
    from td3.config import RunConfig
    from td3.teacher import teachers_of

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_config([*SMALL, "train.epochs=2", "train.pool_epochs=[1,2]",
                          "distill.learners=[sasrec,gru4rec,narm]"], tmp_path / "runs")
    run = RunConfig.of(cfg)
    place = {n: layout.training({**run.teacher(), "model": run.learner(n)}) for n in ("gru4rec", "narm")}
    held, seen = threading.Event(), {}

    def other_job():
        with records.exclusive(place["gru4rec"].dir):
            held.set()
            deadline = time.monotonic() + 120
            while not place["narm"].is_done() and time.monotonic() < deadline:
                time.sleep(0.05)
            seen["narm made while gru4rec was held"] = place["narm"].is_done()
            seen["held_elsewhere"] = records.held_elsewhere(place["gru4rec"].dir)

    holder = threading.Thread(target=other_job)
    holder.start()
    assert held.wait(60)
    assert not records.held_elsewhere(place["narm"].dir)  # nobody makes it; nothing created by asking
    assert not place["narm"].dir.exists()
    teachers = teachers_of(run, torch.device("cpu"), ITEMS, ["gru4rec", "narm"])
    holder.join(60)
    assert seen == {"narm made while gru4rec was held": True, "held_elsewhere": True}
    assert list(teachers) == ["gru4rec", "narm"]
    assert [t.name for t in teachers.values()] == ["gru4rec", "narm"]
    assert all(place[n].is_done() for n in place) and not records.held_elsewhere(place["gru4rec"].dir)


def test_every_inner_learner_can_validate_the_summary(tmp_path, monkeypatch, caplog):
    """distill.validate_learners=all: each validation trains every inner learner on S and
    scores their mean MRR@10 (each learner's kept beside it); the outer steps are those of
    the run whose model validates alone, so only the step picked as the best can differ.
    With distill.snapshots=true each validated S is kept (the same path): any selection rule
    can be applied afterwards, and the rule's own pick is the summary returned."""
    from td3.config import RunConfig, dataset_options
    from td3.data import load_dataset
    from td3.engine import learn_summary

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    infos = {}
    caplog.set_level(logging.INFO, logger="td3.engine")
    for who in ("model", "all"):
        cfg = compose_config([*[o for o in SMALL if not o.startswith("distill.outer.batch_size=")],
                              "distill.outer.batch_size=200", f"distill.learners=[{','.join(LEARNERS)}]",
                              f"distill.validate_learners={who}", f"distill.snapshots={who == 'all'}"],
                             tmp_path / who)
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
        teachers = {name: _RandomTeacher(cfg, data.num_items, name, pool=2) for name in LEARNERS}
        summary, infos[who] = learn_summary(RunConfig.of(cfg), data, teachers["sasrec"], tmp_path / who / "summary",
                                            torch.device("cpu"),
                                            teachers={n: t for n, t in teachers.items() if n != "sasrec"})
    alone, every = infos["model"], infos["all"]
    assert not (tmp_path / "model" / "summary" / "snapshots").exists()
    from td3.layout import snapshot_path
    from td3.summary import Summary
    snapshots = sorted((tmp_path / "all" / "summary" / "snapshots").iterdir())
    assert snapshots == [snapshot_path(tmp_path / "all" / "summary", v["step"]) for v in every["validations"]]
    for path, validation in zip(snapshots, every["validations"]):
        kept = Summary.load(path, shared={"V": teachers["sasrec"].item_embedding[1:]})
        assert json.loads(torch.load(path, weights_only=True)["meta"])["validation"] == validation
        same = all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), summary.state_dict().values()))
        assert same == (validation["step"] == every["best_step"])
    assert len(alone["validations"]) >= 2
    assert [h["ce"] for h in every["history"]] == [h["ce"] for h in alone["history"]]  # the same path
    for a, b in zip(alone["validations"], every["validations"], strict=True):
        assert "by_learner" not in a and list(b["by_learner"]) == list(LEARNERS)
        assert b["by_learner"]["sasrec"] == a["valid_MRR@10"]  # the same learner on the same S
        assert b["valid_MRR@10"] == pytest.approx(sum(b["by_learner"].values()) / len(LEARNERS), abs=1e-12)
        assert len(set(b["by_learner"].values())) == len(LEARNERS)  # four learners, four scores
    assert every["best_valid_MRR@10"] == max(v["valid_MRR@10"] for v in every["validations"])
    # each validation logs where the run stands (run.log and the job's log say it without a bar)
    lines = [r.getMessage() for r in caplog.records if r.name == "td3.engine" and "valid MRR@10" in r.getMessage()]
    assert len(lines) == len(alone["validations"]) + len(every["validations"])
    total = every["outer_steps"]
    for line, validation in zip(lines[len(alone["validations"]):], every["validations"]):
        assert line.startswith("summary: outer step %d of %d, valid MRR@10 %.4f (" % (validation["step"], total,
                                                                                       validation["valid_MRR@10"]))
        for name, value in validation["by_learner"].items():
            assert f"{name} {value:.4f}" in line
        assert ("left" in line) == (validation["step"] < total)
    assert lines[-1].endswith(" s per step") and f"best {every['best_valid_MRR@10']:.4f} at step {every['best_step']};" in lines[-1]


def test_the_progress_line_prices_the_steps_left_at_this_attempts_pace():
    """A resumed run's pace counts only the steps it made since it resumed."""
    from td3.engine import Pace, duration

    now = [100.0]
    pace = Pace(start_step=600, total_steps=2160, clock=lambda: now[0])
    now[0] += 50 * 20.0   # 50 steps at 20 s each, since the resume
    state = {"best_score": 0.2791, "best_step": 650}
    line = pace.line(650, {"step": 650, "valid_MRR@10": 0.2791}, state)
    assert line == "outer step 650 of 2160, valid MRR@10 0.2791, best 0.2791 at step 650; 20.0 s per step, about 8 h 23 min left"
    assert [duration(x) for x in (0, 59.4, 60, 719, 3599, 3600, 3629, 3631, 86400)] == \
        ["0 s", "59 s", "1 min", "12 min", "1 h 00 min", "1 h 00 min", "1 h 00 min", "1 h 01 min", "24 h 00 min"]


def test_the_last_validated_summaries_can_be_averaged_and_the_average_resumes(tmp_path, monkeypatch):
    """distill.average_last: the summary kept is the mean of the learned tensors of those
    validated in the last fraction of the outer loop (the snapshots' mean, to float
    rounding), validated once more; the shared V stays the teacher's, bit for bit. A run
    stopped after some of them and resumed keeps the same mean; an impossible fraction is
    refused before any work."""
    from td3.config import ConfigError, RunConfig, dataset_options
    from td3.data import load_dataset
    from td3.engine import BilevelEngine, averaged_steps, learn_summary
    from td3.layout import snapshot_path

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_config([*[o for o in SMALL if not o.startswith(("distill.outer.batch_size=", "distill.validate_every="))],
                          "distill.outer.batch_size=200", "distill.outer.epochs=2", "distill.validate_every=2",
                          "distill.average_last=0.5", "distill.snapshots=true"], tmp_path / "runs")
    data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
    teacher = _RandomTeacher(cfg, data.num_items, pool=2)
    summary, info = learn_summary(RunConfig.of(cfg), data, teacher, tmp_path / "whole", torch.device("cpu"))
    steps = [v["step"] for v in info["validations"]]
    kept = averaged_steps(steps, info["outer_steps"], 0.5)
    assert len(kept) >= 2 and kept == [s for s in steps if s > info["outer_steps"] / 2] == info["average"]["steps"]
    assert info["kept"] == "average" and 0 < info["average"]["valid_MRR@10"] < 1
    snapshots = [torch.load(snapshot_path(tmp_path / "whole", s), weights_only=True)["tensors"] for s in kept]
    for name, value in summary.named_parameters():
        mean = torch.stack([t[name] for t in snapshots]).mean(0)
        assert torch.allclose(value, mean, atol=1e-6) and not torch.equal(value, snapshots[-1][name])
    assert torch.equal(summary.V, teacher.item_embedding[1:].to(summary.V.dtype))

    original = BilevelEngine.step
    stop_at = kept[0] + 1  # after the first averaged validation's checkpoint

    def interrupted(self, step):
        if step == stop_at:
            raise KeyboardInterrupt("killed")
        return original(self, step)

    monkeypatch.setattr(BilevelEngine, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        learn_summary(RunConfig.of(cfg), data, teacher, tmp_path / "part", torch.device("cpu"))
    monkeypatch.setattr(BilevelEngine, "step", original)
    saved = torch.load(tmp_path / "part" / "state.pt", weights_only=False)["state"]
    assert [s for s, _ in saved["averaged"]] == [kept[0]]
    resumed, again = learn_summary(RunConfig.of(cfg), data, teacher, tmp_path / "part", torch.device("cpu"))
    assert again["average"] == info["average"]
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), summary.state_dict().values()))

    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match="distill.average_last"):
            RunConfig.of(compose_config([*SMALL, f"distill.average_last={bad}"], tmp_path / "runs")).check()


def test_several_inner_learners_resume_bitwise(tmp_path, monkeypatch):
    """A multi-learner run stopped after step 5 and resumed from its state and history ends
    exactly as the uninterrupted one (per-epoch inits: each learner keeps its own)."""
    make = multi_learner_engine(tmp_path, monkeypatch, "distill.init=per_epoch", "distill.outer.epochs=3",
                                outer_batch=1000)
    whole = make()
    history = [whole.step(i) for i in range(9)]
    assert 5 < whole.batches_per_epoch < 9  # resumed mid-epoch; the run crosses an epoch: inits drawn again
    part = make()
    first = [part.step(i) for i in range(5)]
    state = {k: v for k, v in part.state_dict().items()}
    resumed = make()
    resumed.load_state_dict(state)
    resumed.resume(first, 5)
    rest = [resumed.step(i) for i in range(5, 9)]
    assert first + rest == history
    for a, b in zip(whole.summary.parameters(), resumed.summary.parameters()):
        assert torch.equal(a, b)


def test_bert4rec_prefix_loss_shapes_the_summary_its_own_way(tmp_path, monkeypatch):
    """distill.inner.bidirectional_loss=prefix: BERT4Rec's inner steps train on the summary's
    prefixes (a [MASK] after each), which gives a finite, non-zero meta-gradient other than
    the cloze's from the same outer step; the causal learners' steps are untouched by it."""
    engines = {loss: multi_learner_engine(tmp_path / loss, monkeypatch,
                                          f"distill.inner.bidirectional_loss={loss}")()
               for loss in ("cloze", "prefix")}
    bert = [i for i in range(40) if engines["cloze"].learner_at(i).name == "bert4rec"][:2]
    causal = next(i for i in range(40) if engines["cloze"].learner_at(i).name == "sasrec")
    assert engines["prefix"].learners[3].inner.prefixes and not engines["cloze"].learners[3].inner.prefixes
    for step in (causal, *bert):
        out = {loss: engine.step(step) for loss, engine in engines.items()}
        grads = {loss: [p.grad.clone() for p in engine.summary.parameters()] for loss, engine in engines.items()}
        assert all(math.isfinite(o["ce"]) and o["grad_norm"] > 0 for o in out.values())
        same = all(torch.equal(a, b) for a, b in zip(grads["cloze"], grads["prefix"]))
        assert same == (step == causal), (step, out)


def test_a_learned_inner_lr_moves_is_recorded_and_resumes_bitwise(tmp_path, monkeypatch):
    """distill.inner.learn_lr: η starts at distill.inner.lr, each outer step logs the η it
    used and moves it (log η, its own Adam); the summary's steps differ from a fixed η's
    after the first; a run resumed from the engine's state ends exactly as an uninterrupted one."""
    from td3.config import dataset_options
    from td3.data import load_dataset
    from td3.engine import BilevelEngine

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    common = [*SMALL, "distill.outer.batch_size=100", "distill.outer.epochs=3"]
    learned = compose_config([*common, "distill.inner.learn_lr=true", "distill.inner.lr_lr=0.05"], tmp_path / "runs")
    data = load_dataset(learned["dataset"]["name"], **dataset_options(learned["dataset"]))
    teacher = _RandomTeacher(learned, data.num_items, pool=2)

    def make(cfg=learned):
        return BilevelEngine(cfg, data, teacher, torch.device("cpu"))

    whole = make()
    history = [whole.step(i) for i in range(8)]
    rates = [e["inner_lr"] for e in history]
    assert rates[0] == learned["distill"]["inner"]["lr"] and len(set(rates)) == 8         # from distill.inner.lr, moved at every step
    assert all(abs(math.log(b / a)) <= 0.05 * 1.01 for a, b in zip(rates, rates[1:]))  # Adam: about lr_lr per step
    fixed = make(compose_config(common, tmp_path / "runs"))
    plain = [fixed.step(i) for i in range(8)]
    assert "inner_lr" not in plain[0] and plain[0]["ce"] == history[0]["ce"]  # the same first step
    assert [e["ce"] for e in plain[1:]] != [e["ce"] for e in history[1:]]

    part = make()
    first = [part.step(i) for i in range(5)]
    resumed = make()
    resumed.load_state_dict(part.state_dict())
    resumed.resume(first, 5)
    assert first + [resumed.step(i) for i in range(5, 8)] == history
    assert resumed.inner_lr == whole.inner_lr
    for a, b in zip(whole.summary.parameters(), resumed.summary.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(TrainingError, match="no learned inner learning rate"):
        make().load_state_dict(fixed.state_dict())


# ----------------------------------------------------- 4. impossible configs refused
IMPOSSIBLE = {
    "window": (["distill.window=50", "distill.steps=10"], "distill.window"),
    "window_zero": (["distill.window=0"], "distill.window W=0 must be in [1,"),  # no meta-gradient at all
    "d1": (["summary.d1=11"], "d1"),
    "alt_low": (["distill.inner.alt_low=9"], "alt_low"),
    "batch_size": (["distill.inner.batch_size=11"], "distill.inner.batch_size"),
    "method": (["method=nope"], "method"),
    "protocol": (["evaluation.protocol=nope"], "evaluation.protocol"),
    "backend": (["distill.inner.backend=nope"], "backend"),
    # how the result is evaluated, or validated: refused before the distillation, not after it
    "eval_model": (["evaluation.models=[sasrec,nope]"], "evaluation.models=['sasrec', 'nope']: unknown 'nope'"),
    "eval_epochs": (["evaluation.epochs=0"], "evaluation.epochs=0"),
    "eval_every": (["evaluation.eval_every=0"], "evaluation.eval_every=0"),
    "validate_lr": (["distill.validate_lr=0"], "distill.validate_lr=0"),
    "validate_every": (["distill.validate_every=0"], "distill.validate_every=0"),
    # the teacher's item table (32 wide) cannot start a GRU4Rec (64)
    "paper_cross_arch": (["evaluation.protocol=paper", "evaluation.models=[sasrec,gru4rec]"],
                         "which gru4rec (64) cannot take"),
    "sampled_items": (["distill.sampled_items=-1"], "distill.sampled_items=-1 must be an integer >= 0"),
    "sampled_bert4rec": (["model=bert4rec", "distill.sampled_items=8"], "needs a causal learner"),
    "sampled_learners": (["distill.learners=[sasrec,bert4rec]", "distill.sampled_items=8"],
                         "needs a causal learner: bert4rec"),
    "learners_unknown": (["distill.learners=[sasrec,nope]"], "distill.learners=['sasrec', 'nope']: unknown 'nope'"),
    "learners_without_model": (["distill.learners=[gru4rec,narm]"], "must include the run's model 'sasrec'"),
    "min_steps": (["distill.outer.min_steps=-1"], "distill.outer.min_steps=-1: must be >= 0"),
    "learn_lr_higher": (["distill.inner.learn_lr=true", "distill.inner.backend=higher"],
                        "distill.inner.learn_lr=true needs distill.inner.backend=func"),
    "bidirectional_loss": (["distill.inner.bidirectional_loss=mlm"],
                           "distill.inner.bidirectional_loss='mlm': expected cloze or prefix"),
    # the teacher's full-data run, trained on demand: refused with the run, not after the data
    "teacher_pool": (["train.pool_epochs=[2]"], "train.pool_epochs=[2] must be [first, last]"),
    "teacher_lr": (["train.lr=0"], "train.lr=0 must be > 0"),
    "rank_zero": (["summary.d1=0"], "Tucker ranks d1=0, d2=8 must be >= 1"),
    "outer_lr": (["distill.outer.lr=0"], "distill.outer.lr=0 must be > 0"),
    "clip": (["distill.outer.clip=0"], "distill.outer.clip=0 must be > 0"),
    "validate_protocol": (["distill.validate_protocol=papr"], "distill.validate_protocol='papr': expected scratch"),
    "validate_learners": (["distill.validate_learners=every"], "distill.validate_learners='every': expected model or all"),
    "negative_seed": (["seed=-1"], "seed=-1 must be an integer >= 0"),  # numpy's SeedSequence, mid-run
    "learner_option": (["model.num_layers=0"], "model 'sasrec': num_layers must be a positive integer"),
    "inner_decay": (["distill.inner.weight_decay=-0.1"], "distill.inner.weight_decay=-0.1 must be >= 0"),
}
THROUGH_CLI = ("window", "d1", "backend")  # the others in-process: a launch is mostly importing torch


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """The command-line cases, launched at once, each with its own results dir."""
    procs = {}
    for key in THROUGH_CLI:
        root = tmp_path_factory.mktemp(f"refused-{key}")
        procs[key] = (root, subprocess.Popen([sys.executable, "-m", "td3.distill", *SMALL, *IMPOSSIBLE[key][0]],
                                             cwd=REPO, env=make_env(root), stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))
    done = {}
    for key, (root, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        done[key] = (root, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.parametrize("key", THROUGH_CLI)
def test_impossible_config_exits_2_with_one_line(refused, key):
    root, proc = refused[key]
    assert_one_clear_error(proc, IMPOSSIBLE[key][1])
    assert files_under(root / "runs") == []  # neither results/distill nor results/train
    assert not (root / "runs").exists() and not (root / "data").exists()


@pytest.mark.parametrize("key", list(IMPOSSIBLE))
def test_impossible_config_is_refused_before_any_work(tmp_path, monkeypatch, key):
    from td3.distill import distill
    from td3.errors import ConfigError

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_config([*SMALL, *IMPOSSIBLE[key][0]], tmp_path / "runs")
    with pytest.raises(ConfigError) as info:
        distill(cfg)
    assert IMPOSSIBLE[key][1] in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no results, no data


@pytest.mark.parametrize("method", ["random", "longest", "full"])
def test_bilevel_settings_do_not_bind_methods_that_do_not_distil(method):
    """A grid sharing one inner batch across sizes (15 > μ = 10) refuses TD3, not the baselines."""
    from td3.config import RunConfig
    from td3.errors import ConfigError

    overrides = [*SMALL, *IMPOSSIBLE["batch_size"][0], *IMPOSSIBLE["window"][0], *IMPOSSIBLE["alt_low"][0]]
    RunConfig.of(compose_config([*overrides, f"method={method}"], Path("runs"))).check()
    with pytest.raises(ConfigError, match="distill.window.*alt_low.*distill.inner.batch_size"):
        RunConfig.of(compose_config([*overrides, "method=td3"], Path("runs"))).check()


# ---------------------------------------------------------------- 5. non-finite
DIVERGING = {
    # α huge: step 1 is fine, its update wrecks the summary, the next inner loss is NaN.
    "inner-loss": [*SMALL, "distill.outer.lr=1e30"],
    # η huge and M = W = 1: one inner step wrecks the learner, the outer loss is NaN.
    "outer-loss": [*SMALL, "distill.inner.lr=1e30", "distill.steps=1", "distill.window=1"],
}


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    """Both diverging runs, launched at once: {case: (env, proc, {record path: record})}."""
    procs = {}
    for case, args in DIVERGING.items():
        env = make_env(tmp_path_factory.mktemp(f"diverged-{case}"))
        procs[case] = (env, subprocess.Popen([sys.executable, "-m", "td3.distill", *args], cwd=REPO, env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = {}
    for case, (env, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        records = {p: json.loads(p.read_text())
                   for p in (Path(env["TD3_RESULTS_DIR"]) / "distill").glob("*/record.json")}
        done[case] = (env, subprocess.CompletedProcess(proc.args, proc.returncode, out, err), records)
    return done


@pytest.mark.parametrize("case, needle", [("inner-loss", "non-finite inner loss"),
                                          ("outer-loss", "non-finite outer loss")])
def test_diverging_distillation_fails_with_a_record(diverged, case, needle):
    _, proc, records = diverged[case]
    error = assert_one_clear_error(proc, needle, "step")
    assert len(records) == 1
    (record,) = records.values()
    assert record["status"] == "failed" and record["method"] == "td3"
    assert needle in record["error"] and record["error"] in error
    assert {"teacher", "distill", "total"} <= set(record["timings"])
    if case == "outer-loss":
        assert "at outer step 1" in record["error"]


def test_diverging_inner_loss_names_the_outer_step(diverged):
    _, _, records = diverged["inner-loss"]
    assert "outer step 2" in list(records.values())[0]["error"]


# ------------------------------------------------------------- 6. missing / corrupt
def test_corrupt_state_and_missing_pool_checkpoint(diverged):
    """In the diverged run's directory (a complete teacher, a failed distillation)."""
    env, _, records = diverged["inner-loss"]
    args = DIVERGING["inner-loss"]
    (path,) = records
    from td3.layout import summary_dir_for

    run_dir = summary_dir_for(records[path]["config"])[0]  # where the resume state lives
    teacher_dir = Path(records[path]["teacher"]["run"])

    assert not run_dir.exists()  # the failed run wrote nothing there, not even its lock
    run_dir.mkdir(parents=True)
    (run_dir / "state.pt").write_bytes(b"not a checkpoint")
    proc = run(*args, env=env)
    assert_one_clear_error(proc, str(run_dir / "state.pt"))
    failed = json.loads(path.read_text())
    assert failed["status"] == "failed" and "state.pt" in failed["error"] and "cannot be read" in failed["error"]

    path.unlink()
    (run_dir / "state.pt").unlink()
    teacher = json.loads((teacher_dir / "record.json").read_text())
    damaged = teacher_dir / teacher["checkpoints"]["pool"][0]
    damaged.write_bytes(damaged.read_bytes()[:100])  # a truncated pool checkpoint
    proc = run(*args, env=env)
    error = assert_one_clear_error(proc, str(damaged), "cannot be read", "train it again")
    # refused while loading the teacher, before any distillation: the command line keeps the
    # error in a failed record, and the attempt's log beside it, as a sweep's run would
    failed = json.loads(path.read_text())
    assert failed["status"] == "failed" and failed["error"] in error and "traceback" not in failed
    assert str(damaged) in (path.parent / "run.log").read_text()
    missing = teacher_dir / teacher["checkpoints"]["pool"][1]
    missing.unlink()
    proc = run(*args, env=env)
    error = assert_one_clear_error(proc, str(missing), "missing")
    failed = json.loads(path.read_text())  # this attempt's error, not the one before
    assert failed["status"] == "failed" and str(missing) in failed["error"] and str(damaged) not in failed["error"]

    (teacher_dir / "best.pt").write_bytes(b"\x00" * 64)  # the teacher itself, overwritten
    proc = run(*args, env=env)
    assert_one_clear_error(proc, str(teacher_dir / "best.pt"), "cannot be read")


def test_a_run_taking_every_core_on_a_busy_machine_is_warned(monkeypatch, caplog):
    """torch's default threads (one per core) beside busy processes: a warning naming the
    threads that fit; none on a quiet machine, with one thread, or with threads given."""
    from td3 import device

    assert device.crowded(2, 2, 0.3) is None and device.crowded(1, 2, 3.0) is None
    assert "pass threads=4 " in device.crowded(8, 8, 3.6)   # the load rounds to the busy cores
    assert "pass threads=4 " in device.crowded(8, 8, 4.4) and "about 4.4 of the 8 cores" in device.crowded(8, 8, 4.4)
    assert "pass threads=1 " in device.crowded(2, 2, 1.2) and "pass threads=1 " in device.crowded(2, 2, 9.0)
    monkeypatch.setattr(device.os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    monkeypatch.setattr(device.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with caplog.at_level("WARNING", logger="td3.device"):
            device.setup_runtime("cpu")
        assert [r.getMessage() for r in caplog.records if "pass threads=1" in r.getMessage()]
        caplog.clear()
        with caplog.at_level("WARNING", logger="td3.device"):
            device.setup_runtime("cpu", threads=1)
        assert torch.get_num_threads() == 1 and not caplog.records
    finally:
        torch.set_num_threads(threads)


def test_two_thread_meta_gradients_repeat_bitwise(tmp_path, monkeypatch):
    """With 2 torch threads, one outer step of the synthetic default computed twice gives the
    same meta-gradient to the bit (before deterministic algorithms were turned on, the
    backward pass through the inner loop differed by ~1e-10 at every try)."""
    from td3.data import load_dataset
    from td3.config import RunConfig, dataset_options
    from td3.device import setup_runtime
    from td3.engine import BilevelEngine
    from td3.teacher import Teacher

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_config(["train.epochs=1", "threads=2"], tmp_path / "runs")  # the embedded default
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        device = setup_runtime(cfg["device"], cfg["threads"])
        assert torch.get_num_threads() == 2 and torch.are_deterministic_algorithms_enabled()
        data = load_dataset(cfg["dataset"]["name"], **dataset_options(cfg["dataset"]))
        teacher = Teacher(RunConfig.of(cfg), device, data.num_items)
        grads = []
        for _ in range(2):
            torch.manual_seed(cfg["seed"])
            engine = BilevelEngine(cfg, data, teacher, device)
            engine.step(0)
            grads.append([p.grad.clone() for p in engine.summary.parameters()])
    finally:  # setup_runtime sets process-wide state: leave the worker as it was
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert len(grads[0]) == 3 and all(g.abs().sum() > 0 for g in grads[0])  # U, T, G
    for a, b in zip(*grads):
        assert torch.equal(a, b), (a - b).abs().max().item()


@pytest.mark.slow
def test_sigkills_at_random_moments_resume_to_identical_files():
    """benchmarks/kill_resume.py with a few kills (the closing figure is its 20-kill run)."""
    proc = subprocess.run([sys.executable, "benchmarks/kill_resume.py", "--kills", "3", "--seed", "7"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    identical, kills = proc.stdout.strip().splitlines()[-1].split()[0].split("/")
    assert int(kills) >= 1 and identical == kills, proc.stdout


def test_summary_labels_benchmark_retrains_the_records_figure_and_the_hard_one(shared, td3_run):
    """benchmarks/summary_labels.py --soft retrain: the soft learner trained again from the
    summary file gives the record's test NDCG@10 to the digit (the same evaluation from
    another entry point); the hard one trains on S's argmax, and its difference is printed."""
    path, record, _ = td3_run
    teacher = Path(record["teacher"]["run"]) / "best.pt"
    proc = subprocess.run([sys.executable, "benchmarks/summary_labels.py", str(path.parent), "--teacher-table",
                           str(teacher), "--soft", "retrain"], cwd=REPO, env=shared, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if " sasrec seed " in x]
    words = line.split()
    soft, hard = float(words[words.index("soft") + 2]), float(words[words.index("hard") + 1])
    assert f"{soft:.4f}" == f"{record['metrics']['test']['recbole100']['NDCG@10']:.4f}"
    assert 0.0 <= hard <= 1.0 and hard != soft
    assert abs(float(words[-1]) - 100 * (hard - soft)) <= 0.011  # printed from the unrounded figures


def test_selection_rules_benchmark_trains_the_learners_on_each_rules_snapshot(shared, tmp_path):
    """benchmarks/selection_rules.py on a four-learner run validated by all (distill.snapshots):
    each rule keeps the first step of its best score (``last`` the last step); the run's own rule gives the record's
    figures, a rule that keeps the same step gives them too, one that keeps another step
    trains the learners on that step's snapshot; a run without what it needs is refused."""
    import csv

    proc = run(*[o for o in SMALL if not o.startswith("distill.outer.batch_size=")], "distill.outer.batch_size=200",
               f"distill.learners=[{','.join(LEARNERS)}]", "distill.validate_learners=all", "distill.snapshots=true",
               "evaluation.models=[sasrec,gru4rec]", env=shared, check=True)
    path, record = record_of(proc)
    validations = record["distill"]["validations"]

    def bench(*args):
        return subprocess.run([sys.executable, "benchmarks/selection_rules.py", *map(str, args)], cwd=REPO,
                              env=shared, capture_output=True, text=True, timeout=600)

    done = bench(path.parent, "--out", tmp_path / "rows.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "rows.csv")))
    figures = {}
    for rule in ("all", *LEARNERS):
        score = (lambda v: v["valid_MRR@10"]) if rule == "all" else (lambda v, r=rule: v["by_learner"][r])
        best = max(map(score, validations))
        step = next(v["step"] for v in validations if score(v) == best)
        mine = [r for r in rows if r["rule"] == rule]
        assert {int(r["step"]) for r in mine} == {step} and [r["model"] for r in mine] == ["sasrec", "gru4rec"]
        figures[rule] = (step, [float(r["NDCG@10"]) for r in mine])
    last = [r for r in rows if r["rule"] == "last"]
    assert {int(r["step"]) for r in last} == {validations[-1]["step"]} == {record["distill"]["outer_steps"]}
    figures["last"] = (validations[-1]["step"], [float(r["NDCG@10"]) for r in last])
    # average: the mean of the summaries validated in the last 33 %, trained on as one
    from td3.engine import averaged_steps
    kept = averaged_steps([v["step"] for v in validations], record["distill"]["outer_steps"], 0.33)
    average = [r for r in rows if r["rule"] == "average"]
    assert len(kept) >= 2 and {r["step"] for r in average} == {f"{kept[0]}-{kept[-1]}"}
    # ... which is the summary a run averaging inside the distillation keeps (the same outer
    # path): its record's figures are the rule's, and on that run the rule reads them
    averaging = run(*[o for o in SMALL if not o.startswith("distill.outer.batch_size=")], "distill.outer.batch_size=200",
                    f"distill.learners=[{','.join(LEARNERS)}]", "distill.validate_learners=all", "distill.snapshots=true",
                    "distill.average_last=0.33", "evaluation.models=[sasrec,gru4rec]", env=shared, check=True)
    averaged_path, averaged = record_of(averaging)
    assert averaged["distill"]["kept"] == "average" and averaged["distill"]["average"]["steps"] == kept
    assert [float(r["NDCG@10"]) for r in average] == [
        round(100 * e["metrics"]["test"]["recbole100"]["NDCG@10"], 4) for e in averaged["evaluations"]]
    assert [float(r["NDCG@10"]) for r in average] != figures["last"][1]
    reread = bench(averaged_path.parent, "--rules", "average,last", "--out", tmp_path / "averaged.csv")
    assert reread.returncode == 0, reread.stderr[-3000:]
    assert [r["NDCG@10"] for r in csv.DictReader(open(tmp_path / "averaged.csv")) if r["rule"] == "average"] == \
        [r["NDCG@10"] for r in average]
    own_step, own = figures["all"]
    assert own_step == record["distill"]["best_step"]
    assert own == [round(100 * e["metrics"]["test"]["recbole100"]["NDCG@10"], 4) for e in record["evaluations"]]
    assert [float(r["valid_NDCG@10"]) for r in rows if r["rule"] == "all"] == [
        round(100 * e["metrics"]["valid"]["recbole100"]["NDCG@10"], 4) for e in record["evaluations"]]
    others = {rule: f for rule, (step, f) in figures.items() if step != own_step}
    assert others, figures  # (the settings give one rule another step)
    assert all(f == own for rule, (step, f) in figures.items() if step == own_step)
    assert any(f != own for f in others.values()) and all(0 <= x <= 100 for f in others.values() for x in f)

    again = bench(tmp_path / "rows.csv")   # the saved rows' summary, without training
    assert again.returncode == 0, again.stderr[-3000:]
    summary = [line for line in done.stdout.splitlines() if ", kept by " in line]
    assert summary and [line for line in again.stdout.splitlines() if ", kept by " in line] == summary

    # --epochs: every rule trains again at that budget, the run's own step too (not the record's figures)
    assert {r["epochs"] for r in rows} == {"5"}  # (SMALL's evaluation.epochs)
    short = bench(path.parent, "--rules", "all,last", "--epochs", 1, "--out", tmp_path / "short.csv")
    assert short.returncode == 0, short.stderr[-3000:]
    one = list(csv.DictReader(open(tmp_path / "short.csv")))
    assert [(r["rule"], r["model"], r["epochs"], r["best_epoch"]) for r in one] == [
        (rule, model, "1", "1") for rule in ("all", "last") for model in ("sasrec", "gru4rec")]
    longer = [e for e in record["evaluations"] if e["best_epoch"] > 1]
    assert longer  # (so the one-epoch figures must differ from the record's)
    assert all(float(r["NDCG@10"]) != round(100 * e["metrics"]["test"]["recbole100"]["NDCG@10"], 4)
               for r, e in zip(one, record["evaluations"]) if e in longer)
    both = bench(tmp_path / "rows.csv", tmp_path / "short.csv")  # two budgets: each rule against its own
    assert both.returncode == 0, both.stderr[-3000:]
    assert "sasrec, kept by last (1 epochs)" in both.stdout and "last (1 epochs) - all (1 epochs)" in both.stdout
    assert "last (5 epochs) - all (5 epochs)" in both.stdout and "all (1 epochs) - " not in both.stdout
    # rows saved before the epochs column: read as the run's own budget, beside another budget's
    with open(tmp_path / "rows.csv", newline="") as f:
        saved = list(csv.DictReader(f))
    with open(tmp_path / "old.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [k for k in saved[0] if k != "epochs"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k != "epochs"} for r in saved)
    old = bench(tmp_path / "old.csv")
    assert old.returncode == 0 and [line for line in old.stdout.splitlines() if ", kept by " in line] == summary
    mixed = bench(tmp_path / "old.csv", tmp_path / "short.csv")
    assert mixed.returncode == 0, mixed.stderr[-3000:]
    assert "last (the run's epochs) - all (the run's epochs)" in mixed.stdout, mixed.stdout
    zero = bench(path.parent, "--epochs", 0)
    assert zero.returncode != 0 and "--epochs 0" in zero.stderr

    refused = bench(path.parent, "--rules", "sasrec,fm")
    assert refused.returncode != 0 and "fm validated no summary" in refused.stderr
    missing = Path(record["summary"]["dir"]) / "snapshots" / f"step-{figures[next(iter(others))][0]:05d}.pt"
    missing.unlink()
    refused = bench(path.parent)
    assert refused.returncode != 0 and str(missing) in refused.stderr and "distill.snapshots=true" in refused.stderr


def test_a_failure_replaces_an_earlier_attempts_failed_record_not_this_attempts(tmp_path, monkeypatch):
    """td3.run.record_failure (a lost SLURM job, the command line's error): the record the
    attempt started from (``before``) gives way to the new error; a failed record the attempt
    wrote itself (anything else) is kept, being the more precise."""
    from td3 import records
    from td3.run import record_failure

    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_config(SMALL, tmp_path / "runs")
    run_dir = record_failure(cfg, "the first attempt's error")
    first = records.read_record(run_dir)
    assert first["status"] == "failed" and first["error"] == "the first attempt's error"
    record_failure(cfg, "the second attempt's error", before=first)  # started from the first's record
    second = records.read_record(run_dir)
    assert second["error"] == "the second attempt's error" and second["signature"] == first["signature"]
    record_failure(cfg, "a lost job's error", before=first)  # the record changed since: the attempt's own
    assert records.read_record(run_dir) == second
    assert json.loads((run_dir / "config.json").read_text()) == json.loads(records.canonical_json(cfg))
