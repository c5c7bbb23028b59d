"""benchmarks/sweep_plan.py on a real results root: a distillation left half done is priced
by the outer steps its checkpoint has left, at the pace it recorded."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LONGER = "distill.outer.epochs=40"   # the smoke sweep's summary with enough steps to stop one midway


def test_a_stopped_distillation_is_priced_by_its_steps_left(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TD3_")}
    (tmp_path / "mirror").mkdir()
    env.update(TD3_DATA_DIR=str(tmp_path / "data"), TD3_RESULTS_DIR=str(tmp_path / "runs"),
               TD3_DATA_MIRROR=str(tmp_path / "mirror"), PYTHONPATH=str(REPO))
    distill = [sys.executable, "-m", "td3.distill", "+sweep=smoke", "method=td3", "threads=1", LONGER]
    subprocess.run([*distill, "seed=0"], cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    (done,) = (tmp_path / "runs" / "distill").glob("*/record.json")
    steps = json.loads(done.read_text())["distill"]["outer_steps"]
    assert steps >= 40

    proc = subprocess.Popen([*distill, "seed=1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    summaries = tmp_path / "runs" / "summaries"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not list(summaries.glob("*/state.pt")):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    (checkpoint,) = summaries.glob("*/state.pt")
    state = torch.load(checkpoint, weights_only=False)["state"]
    assert 0 < state["step"] < steps

    plan = subprocess.run([sys.executable, "benchmarks/sweep_plan.py", "--results", str(tmp_path / "runs"),
                           f"smoke:{LONGER}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert f"smoke:{LONGER}: 4 grid points, 3 left" in plan.stdout
    (line,) = [x for x in lines if x.startswith(f"  to distil: {checkpoint.parent.name}:")]
    left = steps - state["step"]
    assert f": {left} of {steps} outer steps left, " in line
    minutes = float(line.split("left, ")[1].split()[0])
    assert 0 < state["cpu_seconds"] and state["cpu_seconds"] != state["seconds"]  # CPU time, not wall
    assert abs(minutes - state["cpu_seconds"] / state["step"] * left / 60) <= 0.051
    assert not [x for x in lines if "to distil" in x and x is not line]  # seed 0's summary is done

    # Priced from a root with no records at all, the started distillation is still priced, from
    # its checkpoint alone (its pace and its schedule's length); no distillation is unknown,
    # the evaluations are (no record prices them).
    (tmp_path / "no-records").mkdir()
    bare = subprocess.run([sys.executable, "benchmarks/sweep_plan.py", "--results", str(tmp_path / "runs"),
                           "--priced-from", str(tmp_path / "no-records"), f"smoke:{LONGER}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert bare.returncode == 0, bare.stderr
    (alone,) = [x for x in bare.stdout.splitlines() if x.startswith("  to distil: ")]
    assert alone == line
    assert "distillation'" not in bare.stdout and " evaluation (" in bare.stdout

    # A root where nothing has run yet, priced from this one's records: every point is left,
    # and each summary costs all its steps at the pace seed 0's complete distillation recorded.
    record = json.loads(done.read_text())["distill"]
    fresh = subprocess.run([sys.executable, "benchmarks/sweep_plan.py", "--results", str(tmp_path / "fresh"),
                            "--priced-from", str(tmp_path / "runs"), f"smoke:{LONGER}"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr
    assert f"smoke:{LONGER}: 4 grid points, 4 left" in fresh.stdout
    priced = [x for x in fresh.stdout.splitlines() if x.startswith("  to distil: ")]
    assert len(priced) == 2 and checkpoint.parent.name in "".join(priced)  # seeds 0 and 1
    for x in priced:
        assert f": {steps} of {steps} outer steps left, " in x
        minutes = float(x.split("left, ")[1].split()[0])
        assert abs(minutes - record["cpu_seconds"] / record["outer_steps"] * steps / 60) <= 0.051
    missing = subprocess.run([sys.executable, "benchmarks/sweep_plan.py", "--results", str(tmp_path / "fresh"),
                              "--priced-from", str(tmp_path / "nowhere"), "smoke"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0 and "--priced-from" in missing.stderr and "nowhere" in missing.stderr

    # A checkpoint from before CPU time was counted: the resumed run does not count the rest of
    # it as if it were the whole (its record says it does not know), and its wall time goes on.
    saved = torch.load(checkpoint, weights_only=False)
    del saved["state"]["cpu_seconds"]
    torch.save(saved, checkpoint)
    # Until it resumes, it is priced at its wall pace, and the plan says so.
    plan = subprocess.run([sys.executable, "benchmarks/sweep_plan.py", "--results", str(tmp_path / "runs"),
                           f"smoke:{LONGER}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stderr
    (line,) = [x for x in plan.stdout.splitlines() if x.startswith(f"  to distil: {checkpoint.parent.name}:")]
    assert "wall-minutes (its checkpoint kept no CPU time" in line
    minutes = float(line.split("left, ")[1].split()[0])
    assert abs(minutes - state["seconds"] / state["step"] * left / 60) <= 0.051
    (note,) = [x for x in plan.stdout.splitlines() if x.startswith("  of those, ")]
    assert f"{minutes / 60:.1f} are wall hours" in note
    subprocess.run([*distill, "seed=1"], cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    (resumed,) = [p for p in (tmp_path / "runs" / "distill").glob("*/record.json") if p != done]
    info = json.loads(resumed.read_text())["distill"]
    assert info["cpu_seconds"] is None and info["seconds"] > state["seconds"] and info["attempts"] == 2


def _write_record(root: Path, name: str, *, model="sasrec", learners=(), loss="cloze", steps=200,
                  seconds_per_step=1.0, outer_steps=100, cpu_per_step=None, outer_batch=4096, ranks=(16, 16)):
    distill = {"steps": steps, "window": 40, "sampled_items": 0, "learners": list(learners),
               "validate_learners": "model", "outer": {"batch_size": outer_batch},
               "inner": {"batch_size": 15, "embedding": "trainable", "bidirectional_loss": loss}}
    config = {"dataset": {"name": "ml-100k"}, "method": "td3", "seed": 0, "model": {"name": model},
              "summary": {"mu": 50, "zeta": 50, "d1": ranks[0], "d2": ranks[1]}, "distill": distill,
              "evaluation": {"models": ["sasrec"]}}
    record = {"status": "complete", "config": config, "timings": {"evaluation": 10.0},
              "distill": {"outer_steps": outer_steps, "seconds": seconds_per_step * outer_steps,
                          "batches_per_epoch": 24}}
    if cpu_per_step is not None:   # a record that kept CPU time
        record["distill"]["cpu_seconds"] = cpu_per_step * outer_steps
        record["timings"]["cpu_seconds"] = {"evaluation": 4.0, "total": 5.0}
    (root / "distill" / name).mkdir(parents=True)
    (root / "distill" / name / "record.json").write_text(json.dumps(record))
    return config


def test_a_distillation_is_priced_by_the_records_of_its_finest_kind(tmp_path):
    """Records that differ in what an inner step computes (BERT4Rec's loss, the inner loop's
    length, TD3's ranks) price only their own kind; a kind no record matches exactly falls back to the
    records of the same dataset, method, size and learners; another learner is another kind."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import sweep_plan
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    four = ("sasrec", "gru4rec", "narm", "bert4rec")
    cloze = _write_record(tmp_path, "a", learners=four, loss="cloze", seconds_per_step=6.0)
    prefix = _write_record(tmp_path, "b", learners=four, loss="prefix", seconds_per_step=8.0)
    sasrec = _write_record(tmp_path, "c", seconds_per_step=1.5)
    seen = sweep_plan.observed([tmp_path])
    assert sweep_plan.pace(cloze, seen) == 6.0
    assert sweep_plan.pace(prefix, seen) == 8.0
    assert sweep_plan.pace(sasrec, seen) == 1.5
    shorter = json.loads(json.dumps(cloze))
    shorter["distill"]["steps"] = 100   # no record of this inner loop: the four learners' median
    assert sweep_plan.pace(shorter, seen) == 7.0
    wider = _write_record(tmp_path, "d", seconds_per_step=3.0, outer_batch=8192)   # a larger real batch
    seen = sweep_plan.observed([tmp_path])
    assert sweep_plan.pace(wider, seen) == 3.0 and sweep_plan.pace(sasrec, seen) == 1.5
    gru = json.loads(json.dumps(sasrec))
    gru["model"]["name"] = "gru4rec"   # no record of a GRU4Rec-only distillation
    assert sweep_plan.pace(gru, seen) is None
    # TD3's ranks are a kind of their own: larger ranks price by their records alone, and
    # ranks no record has fall back to the coarse kind's median (1.5, 3.0 and 5.5 s).
    larger = _write_record(tmp_path, "e", seconds_per_step=5.5, ranks=(50, 50))
    seen = sweep_plan.observed([tmp_path])
    assert sweep_plan.pace(larger, seen) == 5.5 and sweep_plan.pace(sasrec, seen) == 1.5
    middle = json.loads(json.dumps(sasrec))
    middle["summary"].update(d1=32, d2=32)
    assert sweep_plan.pace(middle, seen) == 3.0


def test_a_record_that_kept_cpu_time_prices_by_it_not_by_its_wall_time(tmp_path):
    """Three runs sharing two cores took 1.5 wall seconds per CPU second: a record's CPU
    seconds price its kind; a record from before they were kept is priced by its wall time."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import sweep_plan
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    shared = _write_record(tmp_path / "new", "a", seconds_per_step=6.0, cpu_per_step=4.0)
    _write_record(tmp_path / "old", "a", seconds_per_step=6.0)
    new, old = sweep_plan.observed([tmp_path / "new"]), sweep_plan.observed([tmp_path / "old"])
    assert sweep_plan.pace(shared, new) == 4.0 and sweep_plan.pace(shared, old) == 6.0
    key = ("ml-100k", "td3", "50x50", "sasrec")
    assert new["eval"][key] == 4.0 and old["eval"][key] == 10.0


def test_a_distillation_through_several_learners_is_priced_with_each_learners_teacher(tmp_path, capsys):
    """magazine_confirm distils through four learners, each with its own teacher (teacher_seed
    0, shared by TD3 and Farzi and by the three seeds): on a root where nothing has run, the
    plan counts the four teachers once each, and nothing else it can price."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import sweep_plan
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from td3.config import RunConfig, compose_config
    from td3.grid import expand
    from omegaconf import OmegaConf

    sweeper = OmegaConf.load(REPO / "sweeps" / "magazine_confirm.yaml").hydra.sweeper
    (job, *_) = expand(sweeper.get("params"), sweeper.get("grid"), ["+sweep=magazine_confirm"])
    cfg = compose_config(job)
    assert RunConfig.of(cfg).teachers_needed == ("sasrec", "gru4rec", "narm", "bert4rec")
    priced = tmp_path / "priced"
    for i, model in enumerate(("sasrec", "gru4rec", "narm", "bert4rec")):
        config = {"dataset": {"name": "magazine-2018"}, "model": {"name": model}, "max_len": cfg["max_len"]}
        record = {"status": "complete", "config": config, "timings": {"total": 900.0}}
        (priced / "train" / f"t{i}").mkdir(parents=True)
        (priced / "train" / f"t{i}" / "record.json").write_text(json.dumps(record))
    assert sweep_plan.plan(tmp_path / "fresh", ["magazine_confirm"], 2, priced_from=[priced]) == 0
    out = capsys.readouterr().out
    assert "magazine_confirm: 6 grid points, 6 left, 1.0 CPU-hours known" in out   # 4 x 900 s
    assert "full-data training" not in out   # every teacher priced
