"""Sweeps through the real command line: ``python -m td3.sweep -m +sweep=smoke ...``.

The grid expansion is checked directly; the launchers run for real: Hydra's basic
launcher in-process, and Submitit on the project's local SLURM (slurmctld, slurmd, munge,
slurmdbd with MariaDB), where a job is preempted (requeued mid-run, then resumes) and
another is cancelled (its run gets a failed record, the rest of the array completes,
and the sweep ends instead of waiting forever).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import IMPORT_LOG, REPO, run_cli
from submitit.core.utils import DelayedSubmission

import slurm_cluster
from td3.grid import expand

SMOKE = ["+sweep=smoke", "threads=1"]


def make_env(root: Path, **extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TD3_")}
    (root / "mirror").mkdir(parents=True, exist_ok=True)
    e.update(TD3_DATA_DIR=str(root / "data"), TD3_RESULTS_DIR=str(root / "runs"),
             TD3_DATA_MIRROR=str(root / "mirror"), PYTHONPATH=str(REPO), **extra)
    return e


def records_under(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (root / "runs" / "distill").glob("*/record.json")}


def last_summary(root: Path, name: str = "smoke") -> dict:
    sweeps = sorted((root / "runs" / "sweeps" / name).iterdir())
    return json.loads((sweeps[-1] / "summary.json").read_text())


def sweep_configs(name: str, where: list[str] = ()) -> list[dict]:
    """The composed config of every job of sweeps/<name>.yaml, narrowed by ``where`` overrides."""
    from omegaconf import OmegaConf
    from td3.config import compose_config
    sweeper = OmegaConf.load(REPO / "sweeps" / f"{name}.yaml").hydra.sweeper
    return [compose_config(job) for job in expand(sweeper.get("params"), sweeper.get("grid"), list(where))]


# ------------------------------------------------------------------ the grid
def test_grid_is_a_union_of_cartesian_blocks():
    jobs = expand({"seed": "0,1"}, [{"dataset": "a", "summary.mu": "10,20"}, {"dataset": "b", "method": "full"}], [])
    assert [sorted(j) for j in jobs] == [sorted(j) for j in [
        ["seed=0", "dataset=a", "summary.mu=10"], ["seed=0", "dataset=a", "summary.mu=20"],
        ["seed=1", "dataset=a", "summary.mu=10"], ["seed=1", "dataset=a", "summary.mu=20"],
        ["seed=0", "dataset=b", "method=full"], ["seed=1", "dataset=b", "method=full"]]]


def test_command_line_replaces_params_and_selects_among_block_keys():
    params, grid = {"seed": "0,1,2"}, [{"dataset": "a", "method": "td3,farzi"}, {"dataset": "b", "method": "td3"}]
    jobs = expand(params, grid, ["seed=7", "dataset=b", "+sweep=x"])
    assert jobs == [["seed=7", "dataset=b", "method=td3", "+sweep=x"]]
    # a selection that matches nothing gives no jobs; duplicates across blocks collapse
    assert expand(params, grid, ["dataset=c"]) == []
    assert len(expand({}, [{"m": "1,2"}, {"m": "2,3"}], [])) == 3


def test_every_sweep_file_expands():
    from omegaconf import OmegaConf
    sizes = {}
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        sweeper = OmegaConf.load(path).hydra.sweeper
        jobs = expand(sweeper.get("params"), sweeper.get("grid"), [])
        sizes[path.stem] = len(jobs)
        assert all(any(o.startswith("seed=") for o in job) for job in jobs), f"{path.name}: a job without a seed"
    assert sizes["table3"] == 3 * 3 * (2 * 2 + 3)  # datasets × seeds × (td3, farzi × 2 protocols + 3 baselines)
    assert sizes["figure4"] == 3 * (4 + 3) * (2 + 2 * 2)  # seeds × sizes × (random, longest + td3, farzi × 2)
    assert sizes["table6"] == 3 * 2 * 2 * 2
    assert sizes["ranks"] == 3 * 3 * 2
    assert sizes["learned_lr"] == 3 * 2 * 2  # seeds × (td3, farzi) × (fixed, learned η)
    assert sizes["magazine_farzi_learners"] == 3 * 3  # seeds × (td3, farzi, full)
    assert sizes["magazine_learners_trainable"] == 3 * 3
    assert sizes["magazine_validate_learners"] == 3 * 3
    assert sizes["magazine_ranks"] == 3  # seeds × td3 at full ranks; the rest is magazine_learners_trainable's
    assert sizes["magazine_confirm"] == 3 * 2  # new seeds × (td3 at full ranks, farzi)


def test_a_sweep_evaluating_more_learners_reuses_the_summaries_it_names():
    """magazine_farzi_learners says it trains four learners on learned_lr's fixed-η summaries:
    its distillations compose to the same summary directories, so nothing is distilled again."""
    from td3.layout import summary_dir_for

    def summaries(name, where):
        return {summary_dir_for({**cfg, "results_dir": "/results"})[0].name for cfg in sweep_configs(name, where)}

    fixed = summaries("learned_lr", ["distill.inner.learn_lr=false"])
    assert len(fixed) == 3 * 2   # seeds × (td3, farzi)
    assert summaries("magazine_farzi_learners", ["method=td3,farzi"]) == fixed


@pytest.mark.parametrize("name, base, settings", [
    ("magazine_learners_trainable", "magazine_farzi_learners", {"learners": ([], ["sasrec", "gru4rec", "narm", "bert4rec"])}),
    ("magazine_validate_learners", "magazine_learners_trainable",
     {"validate_learners": ("model", "all"), "snapshots": (False, True)}),
])
def test_a_magazine_sweep_differs_from_the_one_it_is_set_beside_in_its_settings_alone(name, base, settings):
    """magazine_learners_trainable is set beside magazine_farzi_learners, and
    magazine_validate_learners beside magazine_learners_trainable: the same full-data runs (and
    so teachers), and distillations whose configs differ in the named distill settings only."""
    def configs(sweep):
        return {(c["method"], c["seed"]): c for c in sweep_configs(sweep)}

    new, old = configs(name), configs(base)
    assert new.keys() == old.keys() and len(new) == 9
    for key in new:
        a, b = dict(new[key]), dict(old[key])
        if key[0] == "full":
            assert a == b
            continue
        assert {k: (b["distill"][k], a["distill"][k]) for k in settings} == settings
        a["distill"] = {k: v for k, v in a["distill"].items() if k not in settings}
        b["distill"] = {k: v for k, v in b["distill"].items() if k not in settings}
        assert a == b


def test_magazine_ranks_differs_from_the_td3_runs_it_is_set_beside_in_the_ranks_alone():
    """magazine_ranks is compared with magazine_learners_trainable's TD3 and Farzi runs: its TD3
    runs are theirs but for the Tucker ranks, the largest 30x20 allows, and the summary stores
    fewer numbers than Farzi's at the same size."""
    import torch
    from td3.summary import TuckerSummary

    new = {c["seed"]: c for c in sweep_configs("magazine_ranks")}
    old = {c["seed"]: c for c in sweep_configs("magazine_learners_trainable", ["method=td3"])}
    assert new.keys() == old.keys() == {0, 1, 2}
    for seed in new:
        a, b = dict(new[seed]), dict(old[seed])
        assert (b["summary"]["d1"], b["summary"]["d2"], a["summary"]["d1"], a["summary"]["d2"]) == (16, 16, 30, 20)
        a["summary"] = {k: v for k, v in a["summary"].items() if k not in ("d1", "d2")}
        b["summary"] = {k: v for k, v in b["summary"].items() if k not in ("d1", "d2")}
        assert a == b
    sizes = {ranks: sum(p.numel() for p in TuckerSummary(30, 20, 3_000, torch.zeros(3_000, 32), *ranks).parameters())
             for ranks in ((16, 16), (30, 20))}
    assert sizes == {(16, 16): 8_992, (30, 20): 20_500}


def test_magazine_confirm_repeats_the_ranks_comparison_on_new_seeds_alone():
    """magazine_confirm checks magazine_ranks' TD3 against magazine_learners_trainable's Farzi:
    each of its runs is one of theirs but for the seed (3, 4, 5, none of theirs), with the
    same teachers."""
    confirm = sweep_configs("magazine_confirm")
    assert sorted((c["method"], c["seed"]) for c in confirm) == [(m, s) for m in ("farzi", "td3") for s in (3, 4, 5)]
    checked = {"td3": sweep_configs("magazine_ranks", ["seed=0"]),
               "farzi": sweep_configs("magazine_learners_trainable", ["method=farzi", "seed=0"])}
    for cfg in confirm:
        (ref,) = checked[cfg["method"]]
        assert cfg["evaluation"]["seeds"] == [cfg["seed"]]   # the learners trained on it draw anew too
        assert {**cfg, "seed": 0, "evaluation": {**cfg["evaluation"], "seeds": [0]}} == ref
        assert cfg["teacher_seed"] == ref["teacher_seed"] == 0


def test_jobs_sharing_a_summary_start_after_every_distinct_one():
    from td3.grid import spread_shared

    # two protocols per summary, as a table's grid lists them: a, a', b, b', then two runs
    # sharing nothing
    jobs = ["a-scratch", "a-paper", "b-scratch", "b-paper", "random", "full"]
    keys = ["A", "A", "B", "B", None, None]
    assert spread_shared(jobs, keys) == ["a-scratch", "b-scratch", "random", "full", "a-paper", "b-paper"]
    assert spread_shared(jobs, [None] * 6) == jobs
    assert spread_shared([], []) == []


def test_a_sweep_varying_only_the_evaluation_hears_when_it_distils_several_summaries():
    """distill.validate_lr follows evaluation.lr: a sweep over the evaluation's rate distils
    one summary per rate unless it pins the distillation's; the composed configs say so."""
    from td3.config import compose_config
    from td3.grid import evaluation_splits
    from td3.layout import summary_dir_for

    def summaries(jobs):
        out = []
        for job in jobs:
            cfg = compose_config(job)
            cfg["results_dir"] = "/results"
            out.append(summary_dir_for(cfg)[0].name)
        return out

    rates = [["seed=0", f"evaluation.lr={lr}"] for lr in ("0.005", "0.01")] + [["seed=1", "evaluation.lr=0.01"]]
    assert evaluation_splits(rates, summaries(rates)) == [(["evaluation.lr"], 2)]
    pinned = [job + ["distill.validate_lr=0.005"] for job in rates]
    assert evaluation_splits(pinned, summaries(pinned)) == []
    # the learners evaluated, their seeds and budget are no part of the summary
    learners = [["seed=0", "evaluation.models=[sasrec]"], ["seed=0", "evaluation.models=[sasrec,gru4rec]", "evaluation.epochs=500"]]
    assert evaluation_splits(learners, summaries(learners)) == []
    # a key only some of the group set counts as varying; runs without a summary are left out
    assert evaluation_splits([["a=1"], ["a=1", "evaluation.lr=0.01"], ["a=1"]], ["S", "T", None]) == [(["evaluation.lr"], 2)]


# ------------------------------------------------- what deciding "done?" costs
def imported_modules(proc: subprocess.CompletedProcess) -> set[str]:
    """The modules a process imported, from its import log (run with IMPORT_LOG)."""
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def test_a_sweep_of_complete_runs_imports_neither_torch_nor_the_engine(tmp_path, monkeypatch):
    """The sweeper's "is this run done?" (and which summary a run shares) reads records and
    hashes configs: a relaunched sweep whose points are all complete answers without the
    seconds torch's import costs."""
    from td3 import records
    from td3.layout import distillation
    from td3.tune import compose_config

    env = make_env(tmp_path)
    monkeypatch.setenv("TD3_RESULTS_DIR", env["TD3_RESULTS_DIR"])
    for method in ("random", "td3"):   # td3 distils a summary: the sweeper also asks where it lives
        cfg = compose_config([*SMOKE, "seed=0", f"method={method}"])
        records.write_json(distillation(cfg).record, {"status": "complete"})
    proc = run_cli("td3.sweep", "-m", *SMOKE, "seed=0", "method=random,td3", env={**env, **IMPORT_LOG})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 runs: 2 skipped" in proc.stdout, proc.stdout[-2000:]
    imported = imported_modules(proc)
    assert "hydra" in imported and "td3.layout" in imported, "no import log in stderr"
    assert not {m for m in imported if m.split(".")[0] == "torch" or m in ("td3.distill", "td3.engine", "td3.train")}, \
        sorted(m for m in imported if m.startswith(("torch", "td3.")))[:10]


class FakeLauncher:
    """Stands for the Submitit launcher in a ``RunGroup``: a call is one run (module level:
    the group is pickled on a requeue)."""

    def __init__(self, stop_at: str | None = None):
        self.stop_at = stop_at
        self.ran: list[str] = []

    def __call__(self, overrides, *rest):
        name = overrides[0]
        self.ran.append(name)
        if name == self.stop_at:
            raise SystemExit(-1)          # what Submitit's requeue does to a task
        if name.startswith("bad"):
            raise ValueError(f"{name} does not compose")
        return f"{name} done"


def test_a_run_group_goes_past_a_failing_run_and_a_requeue_resumes_after_the_runs_done():
    import pickle

    from td3.sweep import GroupedRunError, RunGroup

    calls = [([name], "hydra.sweep.dir", i, f"job_id_for_{i}", {}) for i, name in enumerate(["a", "bad-b", "c"])]
    group = RunGroup(FakeLauncher())
    results = group(calls)
    assert results[0] == "a done" and results[2] == "c done"       # the run after the failure ran
    assert isinstance(results[1], GroupedRunError) and "bad-b does not compose" in results[1].error

    # preempted in the third run: the requeued task runs the third only, and returns all three
    group = RunGroup(FakeLauncher(stop_at="c"))
    with pytest.raises(SystemExit):
        group(calls)
    requeued = pickle.loads(pickle.dumps(group.checkpoint(calls)))
    requeued.function.launcher.stop_at = None
    assert requeued.result()[0] == "a done" and requeued.result()[2] == "c done"
    assert requeued.function.launcher.ran == ["a", "bad-b", "c", "c"]   # a and bad-b were not run again


# ------------------------------------------------------- Hydra's basic launcher
def test_basic_sweep_runs_skips_and_records_failures(tmp_path):
    env = make_env(tmp_path)
    # A single run first: the sweep's grid point with the same config is the same run.
    single = run_cli("td3.distill", *SMOKE, "seed=0", "method=random", env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    first = run_cli("td3.sweep", "-m", *SMOKE, "seed=0", env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 runs: 1 complete, 1 skipped" in first.stdout, first.stdout[-2000:]
    recs = records_under(tmp_path)
    assert len(recs) == 2 and all(r["status"] == "complete" for r in recs.values())
    assert sorted(r["config"]["method"] for r in recs.values()) == ["random", "td3"]
    td3 = next(r for r in recs.values() if r["config"]["method"] == "td3")
    assert td3["config"].get("sweep") == {"name": "smoke"}
    # the sweep's run keeps its log: its teacher, each validation, each learner evaluated
    log = (next(tmp_path.glob("runs/distill/*td3*")) / "run.log").read_text()
    assert "complete" in log
    (teacher,) = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "train").glob("*/record.json")]
    assert (f"trained sasrec on synthetic: {teacher['epochs_run']} epochs" in log
            and f"best valid MRR@10 {teacher['history'][teacher['best_epoch'] - 1]['valid_MRR@10']:.4f} "
                f"at epoch {teacher['best_epoch']}" in log), log
    validations = td3["distill"]["validations"]
    assert log.count("valid MRR@10") == len(validations) + 1, log   # the teacher's line, then each validation
    last = validations[-1]
    assert f"outer step {last['step']} of {td3['distill']['outer_steps']}, valid MRR@10 {last['valid_MRR@10']:.4f}" in log
    (evaluation,) = td3["evaluations"]
    ndcg = evaluation["metrics"]["test"]["recbole100"]["NDCG@10"]
    assert f"evaluated sasrec (seed 0, 1 of 1): test NDCG@10 {ndcg:.4f} (recbole100), best epoch {evaluation['best_epoch']}" in log

    # Relaunch: every point is complete, nothing runs (records untouched).
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "distill").glob("*/record.json")}
    again = run_cli("td3.sweep", "-m", *SMOKE, "seed=0", env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 runs: 2 skipped" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # One more seed, and an impossible setting for td3 only (Tucker rank above μ): the
    # td3 point fails with a record, the random point completes, the sweep exits 1.
    bad = run_cli("td3.sweep", "-m", *SMOKE, "seed=5", "summary.d1=20", env=env, timeout=600)
    assert bad.returncode == 1, bad.stderr[-3000:]
    recs = records_under(tmp_path)
    failed = [r for r in recs.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["config"]["method"] == "td3"
    assert "d1=20" in failed[0]["error"] and failed[0]["signature"]
    assert sum(r["status"] == "complete" and r["config"]["seed"] == 5 for r in recs.values()) == 1
    summary = last_summary(tmp_path)
    assert summary["counts"] == {"complete": 1, "failed": 1}
    assert "FAILED" in bad.stdout and "d1=20" in bad.stdout


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_points_as_processes(tmp_path):
    env = make_env(tmp_path)
    proc = run_cli("td3.sweep", "-m", *SMOKE, "seed=0,1", "method=random", "hydra/launcher=td3_local", env=env,
                   timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    recs = records_under(tmp_path)
    assert sorted(r["config"]["seed"] for r in recs.values()) == [0, 1]
    assert all(r["status"] == "complete" for r in recs.values())
    assert list((tmp_path / "runs" / "sweeps" / "smoke").glob("*/.submitit/*/*_log.out"))


# -------------------------------------------------------------- real SLURM
LONG = ["distill.outer.epochs=12", "distill.steps=20", "distill.validate_every=100", "distill.checkpoint_every=2"]


@pytest.mark.slow
def test_preempted_slurm_job_requeues_and_resumes_to_the_same_summary(tmp_path, slurm):
    args = ["+sweep=smoke", "threads=1", "seed=3", "method=td3", *LONG]
    # Uninterrupted reference, in its own results root.
    ref_root = tmp_path / "reference"
    ref = run_cli("td3.distill", *args, env=make_env(ref_root), timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]

    root = tmp_path / "preempted"
    env = make_env(root, **slurm)
    shutil.copytree(ref_root / "runs" / "train", root / "runs" / "train")  # the same teacher, not trained twice
    sweep = subprocess.Popen([sys.executable, "-m", "td3.sweep", "-m", *args, "hydra/launcher=td3_slurm"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        state = slurm_cluster.wait_for(lambda: next(root.glob("runs/summaries/*/state.pt"), None), 600,
                                       "the job's first checkpoint", env=env)
        job = slurm_cluster.wait_for(lambda: slurm_cluster.submitted_job(root), 60, "the job id")
        # What a preemption does (as submitit's own _interrupt): SIGTERM, then the USR2 signal.
        for sig in ("SIGTERM", "USR2"):
            subprocess.run(["scancel", job, "--signal", sig], env=env, check=True, timeout=30)
        # SLURM holds a requeued job back for a while (its begin time is pushed ~2 minutes
        # on); on a real cluster the job waits, here it is released at once.
        slurm_cluster.wait_for(lambda: "PENDING" in slurm_cluster.sacct_states(env, job) or sweep.poll() is not None,
                               120, "the requeued job", env=env)
        subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], env=env, timeout=30)
        out, _ = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out[-4000:]
    run_dir = next(root.glob("runs/distill/*td3*"))
    log = (run_dir / "run.log").read_text()
    assert log.count(" run ") >= 2, log  # two attempts
    summary_log = next(root.glob("runs/sweeps/smoke/*/.submitit/*/*_log.err")).read_text()
    assert "preempted" in summary_log or "requeue" in summary_log.lower(), summary_log[-2000:]
    ours = torch.load(run_dir / "summary.pt", weights_only=True)["tensors"]
    theirs = torch.load(next(ref_root.glob("runs/distill/*td3*")) / "summary.pt", weights_only=True)["tensors"]
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    assert not state.exists()  # the resume state is gone once the summary is complete


@pytest.mark.slow
def test_a_job_reusing_a_summary_waits_in_the_queue_not_on_a_cpu(tmp_path, slurm):
    """Two protocols of one summary on SLURM: the second job is submitted after the first
    (a dependency), so it never holds a CPU waiting on the summary's lock."""
    root = tmp_path
    env = make_env(root, **slurm)
    proc = subprocess.run([sys.executable, "-m", "td3.sweep", "-m", "+sweep=smoke", "seed=6", "method=td3",
                           "evaluation.protocol=scratch,paper", "hydra/launcher=td3_slurm"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # two submissions (the distillation's, then the one after it), not one array of two
    folders = sorted(p.name for p in root.glob("runs/sweeps/smoke/*/.submitit/*") if p.is_dir())
    assert len(folders) == 2 and len({f.split("_")[0] for f in folders}) == 2, folders
    recs = list(records_under(root).values())
    assert sorted(r["config"]["evaluation"]["protocol"] for r in recs) == ["paper", "scratch"]
    assert sorted(r["distill"]["cached"] for r in recs) == [False, True]   # distilled once
    logs = [p.read_text() for p in root.glob("runs/sweeps/smoke/*/.submitit/*/*_log.err")]
    assert len(logs) == 2 and not [log for log in logs if "waiting for" in log], logs


@pytest.mark.slow
def test_a_suspended_slurm_job_is_waited_for_not_taken_for_lost(tmp_path, slurm):
    """``scontrol suspend`` then ``resume`` (what an administrator or a gang scheduler does):
    submitit takes SUSPENDED for an end without a result; the sweep must wait, and the
    run's complete record must not be overwritten by a failed one."""
    root = tmp_path
    env = make_env(root, **slurm)
    t0 = time.time()
    sweep = subprocess.Popen([sys.executable, "-m", "td3.sweep", "-m", "+sweep=smoke", "seed=5", "method=td3",
                              "threads=1", *LONG, "hydra/launcher=td3_slurm"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        slurm_cluster.wait_for(lambda: next(root.glob("runs/summaries/*/state.pt"), None), 600,
                               "the job's first checkpoint", env=env)
        job = slurm_cluster.wait_for(lambda: slurm_cluster.submitted_job(root), 60, "the job id")
        subprocess.run(["scontrol", "suspend", job], env=env, check=True, timeout=30)
        slurm_cluster.wait_for(lambda: "SUSPENDED" in slurm_cluster.sacct_states(env, job), 60, "SUSPENDED", env=env)
        # long enough for submitit's watcher to see it (it polls every max(2 s, half the job's
        # age), and sees SUSPENDED as an end)
        time.sleep(min(90.0, max(30.0, 1.5 * (time.time() - t0))))
        assert sweep.poll() is None, sweep.stdout.read()[-3000:]
        subprocess.run(["scontrol", "resume", job], env=env, check=True, timeout=30)
        out, _ = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out[-4000:]
    (record,) = records_under(root).values()
    assert record["status"] == "complete", record.get("error")
    assert last_summary(root)["counts"] == {"complete": 1}
    assert "without a result" not in out


@pytest.mark.slow
def test_cancelled_slurm_job_becomes_a_failed_record_and_the_array_completes(tmp_path, slurm):
    root = tmp_path
    env = make_env(root, **slurm)
    # Two array tasks: a TD3 run far too long to finish, and a Random run that finishes.
    sweep = subprocess.Popen([sys.executable, "-m", "td3.sweep", "-m", "+sweep=smoke", "seed=4", "method=td3,random",
                              *LONG, "distill.outer.epochs=2000", "hydra/launcher=td3_slurm"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job = slurm_cluster.wait_for(lambda: slurm_cluster.submitted_job(root), 300, "the array's job id", env=env)

        def td3_task():  # the array task of the TD3 point, once it is running
            assert sweep.poll() is None, f"the sweep ended before its TD3 task was seen running:\n{sweep.stdout.read()[-3000:]}"
            for pickle in root.glob(f"runs/sweeps/smoke/*/.submitit/{job}_*/*_submitted.pkl"):
                task = pickle.parent.name
                overrides = DelayedSubmission.load(pickle).args[0]
                if "method=td3" in overrides and slurm_cluster.queue_state(env, task) == "RUNNING":
                    return task
            return None

        task = slurm_cluster.wait_for(td3_task, 600, "the TD3 task to run", env=env)
        subprocess.run(["scancel", task], env=env, check=True, timeout=30)
        out, _ = sweep.communicate(timeout=600)  # without slurmdbd this would wait forever
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1, out[-3000:]
    recs = {r["method"]: r for r in records_under(root).values()}
    assert recs.keys() == {"td3", "random"}, out[-3000:]
    assert recs["random"]["status"] == "complete"           # the rest of the array completed
    assert recs["td3"]["status"] == "failed"
    assert f"slurm job {task} ended CANCELLED" in recs["td3"]["error"], recs["td3"]["error"]
    summary = last_summary(root)
    assert summary["counts"] == {"complete": 1, "failed": 1}
    assert "CANCELLED" in out


@pytest.mark.slow
def test_grouped_slurm_tasks_run_several_runs_each_with_its_own_record(tmp_path, slurm):
    """``runs_per_task``: one array task runs several grid points one after the other; each
    keeps its own record and ledger entry, a failed one does not stop the next, and a
    relaunch submits only what is not complete."""
    root = tmp_path
    env = make_env(root, **slurm)
    grouped = [*SMOKE, "evaluation.epochs=1", "summary.d1=20", "hydra/launcher=td3_slurm",
               "hydra.launcher.runs_per_task=2"]

    def sweep(*points: str) -> tuple[subprocess.CompletedProcess, Path]:
        before = set((root / "runs" / "sweeps" / "smoke").glob("*"))
        proc = run_cli("td3.sweep", "-m", *grouped, *points, env=env, timeout=900)
        (sweep_dir,) = set((root / "runs" / "sweeps" / "smoke").glob("*")) - before
        return proc, sweep_dir

    def tasks(sweep_dir: Path) -> list[Path]:  # the log of each task (one task alone is no array)
        return sorted((sweep_dir / ".submitit").glob("*/*_log.out"))

    # One task of two runs: TD3 first, refused (Tucker rank d1=20 above mu=10), then Random.
    proc, sweep_dir = sweep("seed=0", "method=td3,random")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(tasks(sweep_dir)) == 1, tasks(sweep_dir)
    recs = {r["config"]["method"]: r for r in records_under(root).values()}
    assert recs["td3"]["status"] == "failed" and "d1=20" in recs["td3"]["error"]
    assert recs["random"]["status"] == "complete"
    assert last_summary(root)["counts"] == {"complete": 1, "failed": 1}
    log = tasks(sweep_dir)[0].read_text()
    assert "run 1 of 2" in log and "run 2 of 2" in log, log[-2000:]

    # Seed 0's Random run is complete: skipped; the two new points share one task.
    done = {p: p.stat().st_mtime_ns for p in (root / "runs" / "distill").glob("*random*/record.json")}
    proc, sweep_dir = sweep("seed=0,1,2", "method=random")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 runs: 2 complete, 1 skipped" in proc.stdout, proc.stdout[-2000:]
    assert len(tasks(sweep_dir)) == 1, tasks(sweep_dir)
    assert {p: p.stat().st_mtime_ns for p in done} == done
    randoms = [r for r in records_under(root).values() if r["config"]["method"] == "random"]
    assert sorted(r["config"]["seed"] for r in randoms) == [0, 1, 2] and all(r["status"] == "complete" for r in randoms)

    # Everything complete: nothing is submitted.
    proc, sweep_dir = sweep("seed=0,1,2", "method=random")
    assert proc.returncode == 0 and "3 runs: 3 skipped" in proc.stdout, proc.stdout[-2000:]
    assert tasks(sweep_dir) == []


@pytest.mark.slow
def test_two_local_clusters_run_side_by_side(slurm, tmp_path):
    """Each cluster has its own munged socket: a second one (another state directory and
    port) neither takes over the first's authentication nor breaks it when it stops."""
    # munged wants every directory above its socket open to all: not under pytest's 0700 tmp
    state = Path(f"/tmp/td3-test-second-{os.getpid()}")
    env2 = {**os.environ, "TD3_SLURM_DIR": str(state), "TD3_SLURM_PORT": "7317"}
    script = str(REPO / "slurm" / "local-cluster.sh")
    started = subprocess.run(["bash", script, "start"], env=env2, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        second = {"SLURM_CONF": str(state / "slurm.conf")}
        assert (state / "run" / "munge.socket").is_socket()

        def one_job(env: dict, out: Path) -> None:
            job = subprocess.run(["sbatch", "--parsable", "-o", str(out), "--wrap", "echo ran"], capture_output=True,
                                 text=True, env={**os.environ, **env}, timeout=60)
            assert job.returncode == 0, job.stderr
            slurm_cluster.wait_for(lambda: out.is_file() and "ran" in out.read_text(), 60,
                                   f"a job on {env['SLURM_CONF']}", env=env)

        one_job(slurm, tmp_path / "first-1.out")
        one_job(second, tmp_path / "second.out")
    finally:
        subprocess.run(["bash", script, "stop", "--purge"], env=env2, capture_output=True, timeout=120)
    one_job(slurm, tmp_path / "first-2.out")   # the first cluster still authenticates its clients


def _dead_or_zombie(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:   # reaped
        return True


@pytest.mark.slow
def test_a_restart_after_the_daemons_died_names_the_jobs_it_restores_as_running(slurm, tmp_path):
    """The daemons killed as a machine's end kills them, with a job running: ``start`` brings the
    queue back and says which jobs it shows as running (SLURM requeues those whose processes
    died, minutes later, with nothing left to collect them). A start with the daemons up says
    nothing of the kind."""
    state = Path(f"/tmp/td3-test-restored-{os.getpid()}")
    env2 = {**os.environ, "TD3_SLURM_DIR": str(state), "TD3_SLURM_PORT": "7517"}
    client = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    script = str(REPO / "slurm" / "local-cluster.sh")

    def start() -> subprocess.CompletedProcess:
        done = subprocess.run(["bash", script, "start"], env=env2, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    try:
        first = start()
        assert "restored" not in first.stderr   # a fresh cluster has no queue to restore
        job = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "job.out"), "--wrap", "sleep 120"],
                             env=client, capture_output=True, text=True, timeout=60)
        assert job.returncode == 0, job.stderr
        job_id = job.stdout.strip()
        running = lambda: job_id in subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], env=client,  # noqa: E731
                                                   capture_output=True, text=True, timeout=60).stdout
        slurm_cluster.wait_for(running, 60, "the job to run", env={"SLURM_CONF": client["SLURM_CONF"]})
        # slurmctld saves its job state a moment after a change: change the job once more and
        # wait for that save, so that the saved queue holds the job as running
        changed = time.time()
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "Comment=running"], env=client, check=True,
                       capture_output=True, timeout=60)
        saved = state / "ctld" / "job_state"
        slurm_cluster.wait_for(lambda: saved.is_file() and saved.stat().st_mtime > changed, 60, "the job state saved")
        for daemon in ("slurmd", "slurmctld", "slurmdbd", "mariadb", "munged"):
            pid = int((state / "run" / f"{daemon}.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            slurm_cluster.wait_for(lambda: _dead_or_zombie(pid), 30, f"{daemon} to die")  # an init may reap it late

        again = start()
        assert "jobs restored as running from the saved state" in again.stderr, again.stderr
        assert f"state: {job_id}." in again.stderr and "scancel" in again.stderr
        assert again.stdout.strip().endswith(f"export SLURM_CONF={state}/slurm.conf")
        assert "restored" not in start().stderr   # the daemons are up: nothing was restored
    finally:
        subprocess.run(["bash", script, "stop", "--purge"], env=env2, capture_output=True, timeout=120)


@pytest.mark.slow
def test_more_cpus_than_cores_run_that_many_jobs_and_an_old_hardware_drain_is_lifted(slurm, tmp_path):
    """TD3_SLURM_CPUS above the machine's cores (several one-thread runs sharing them): the node
    takes that many one-CPU jobs at once rather than being drained for "Low CPUs". A node that
    an earlier config left drained for such a reason is resumed by the next ``start``; one
    drained for any other reason is not (the operator's drain stands). A running cluster is not
    given another configuration: its daemons would not follow it."""
    cores = len(os.sched_getaffinity(0))
    cpus = cores + 1
    state = Path(f"/tmp/td3-test-oversubscribed-{os.getpid()}")
    env2 = {**os.environ, "TD3_SLURM_DIR": str(state), "TD3_SLURM_PORT": "7617", "TD3_SLURM_CPUS": str(cpus)}
    client = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    script = str(REPO / "slurm" / "local-cluster.sh")

    def run(*args: str, env: dict = client) -> str:
        done = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def node() -> str:
        return run("sinfo", "-h", "-N", "-o", "%t|%c|%E").strip()

    try:
        run("bash", script, "start", env=env2)
        assert node().startswith(f"idle|{cpus}|")
        conf = (state / "slurm.conf").read_text()
        other = subprocess.run(["bash", script, "start"], env={**env2, "TD3_SLURM_CPUS": str(cores)},
                               capture_output=True, text=True, timeout=300)
        assert other.returncode == 1 and f"runs with another configuration (CPUs={cpus}, port 7617)" in other.stderr
        assert (state / "slurm.conf").read_text() == conf and not list(state.glob("*.next"))
        run("bash", script, "start", env=env2)   # the same configuration: nothing to refuse
        for i in range(cpus):
            run("sbatch", "--parsable", "-c", "1", "-o", str(tmp_path / f"job{i}.out"), "--wrap", "sleep 60")
        all_running = lambda: len(run("squeue", "-h", "-t", "R", "-o", "%i").split()) == cpus  # noqa: E731
        slurm_cluster.wait_for(all_running, 60, f"{cpus} one-CPU jobs running at once",
                               env={"SLURM_CONF": client["SLURM_CONF"]})
        run("scancel", "--full", "-u", "root")
        slurm_cluster.wait_for(lambda: not run("squeue", "-h", "-o", "%i").strip(), 60, "the queue to empty")

        run("scontrol", "update", "nodename=localhost", "state=drain", "reason=Low socket*core*thread count, Low CPUs")
        run("bash", script, "stop", env=env2)   # slurmctld keeps the drain in its saved state
        run("bash", script, "start", env=env2)
        assert node().startswith(f"idle|{cpus}|")

        run("scontrol", "update", "nodename=localhost", "state=drain", "reason=maintenance")
        run("bash", script, "stop", env=env2)
        again = subprocess.run(["bash", script, "start"], env={**env2, "TD3_SLURM_NODE_WAIT": "5"},
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 1 and "the node did not come up in time" in again.stderr, again.stderr
        assert node() == f"drain|{cpus}|maintenance"
    finally:
        subprocess.run(["bash", script, "stop", "--purge"], env=env2, capture_output=True, timeout=120)


@pytest.mark.parametrize("parts, unknown", [("ml-100k ml-1m", "ml-1m"), ("sweep", "sweep")])
def test_replicate_paper_refuses_an_unknown_part_before_any_work(tmp_path, parts, unknown):
    """Also a name of the script's own helpers ('sweep'), which is no part."""
    env = {**make_env(tmp_path), "TD3_REPLICATE_PARTS": parts}
    proc = subprocess.run(["bash", str(REPO / "slurm" / "replicate-paper.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"replicate-paper.sh: unknown part '{unknown}' (magazine-2018, ml-100k, "
                                   "ml-1m-slice)")
    assert not (tmp_path / "runs").exists()  # not even the first part's first sweep ran
