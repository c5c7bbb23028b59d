"""``python -m td3.audit`` on a real (small) sweep: it passes on the sweep as run, re-runs a
run bitwise, and fails on a tampered, truncated or hand-edited record and on a missing run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import run_cli

from test_sweep import make_env


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("audited")
    env = make_env(root)
    # one thread per job, taken as a SLURM task takes it (not from the config): the audit's
    # re-run must find the thread count in the record, or 2 threads give other numbers
    proc = run_cli("td3.sweep", "-m", "+sweep=smoke", env={**env, "SLURM_CPUS_PER_TASK": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, env


def audit(results: Path, env: dict, *args: str):
    return run_cli("td3.audit", str(results), *args, env=env, timeout=900)


def copy(sweep, tmp_path) -> tuple[Path, dict]:
    root, env = sweep
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    # the sweep's ledger and configs name the original root; the copy is audited as itself
    return target, {**env, "TD3_RESULTS_DIR": str(target / "runs")}


@pytest.mark.slow
def test_audit_passes_on_the_sweep_and_reruns_bitwise(sweep):
    root, env = sweep
    proc = audit(root / "runs", env, "--rerun", "4")  # every run: TD3's numbers are the thread-sensitive ones
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "verdict: PASS" in proc.stdout
    assert proc.stdout.count("reproduces bitwise") == 4, proc.stdout[-3000:]
    for check in ("readable", "complete", "sealed", "signature", "metrics", "grid", "reproduces"):
        assert any(line.split()[:2] == [check, "PASS"] for line in proc.stdout.splitlines()), (check, proc.stdout)


@pytest.mark.slow
def test_audit_fails_on_a_tampered_metric(sweep, tmp_path):
    root, env = copy(sweep, tmp_path)
    path = next((root / "runs" / "distill").glob("*td3*/record.json"))
    record = json.loads(path.read_text())
    record["metrics"]["test"]["recbole100"]["NDCG@10"] += 0.05  # a better number, by hand
    path.write_text(json.dumps(record, indent=2))
    proc = audit(root / "runs", env, "--no-grid")
    assert proc.returncode == 1
    assert f"FAIL sealed: {path.parent}" in proc.stdout and f"FAIL metrics: {path.parent}" in proc.stdout
    assert "warn orphans" not in proc.stdout  # the copy's summaries are its runs', whatever paths records hold


@pytest.mark.slow
def test_audit_fails_on_truncated_and_hand_edited_records(sweep, tmp_path):
    root, env = copy(sweep, tmp_path)
    runs = sorted((root / "runs" / "distill").glob("*/record.json"))
    runs[0].write_text(runs[0].read_text()[:200])  # truncated
    cfg_path = runs[1].parent / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["seed"] = 99
    cfg_path.write_text(json.dumps(cfg))  # the config beside the record, edited by hand
    proc = audit(root / "runs", env, "--no-grid")
    assert proc.returncode == 1
    assert f"FAIL readable: {runs[0]}" in proc.stdout
    assert f"FAIL signature: {runs[1].parent}: config.json differs" in proc.stdout
    assert f"FAIL sealed: {runs[1].parent}: config.json changed" in proc.stdout


@pytest.mark.slow
def test_audit_fails_on_a_missing_run(sweep, tmp_path):
    root, env = copy(sweep, tmp_path)
    # the copy's ledger and grid point at the original root: audit the original's layout
    gone = next((root / "runs" / "distill").glob("*random*"))
    shutil.rmtree(gone)
    multirun = next((root / "runs" / "sweeps").glob("smoke/*/multirun.yaml"))
    proc = audit(root / "runs", env)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "FAIL grid: smoke: grid point" in proc.stdout and gone.name in proc.stdout, proc.stdout[-3000:]
    assert multirun.is_file()


@pytest.mark.slow
def test_the_grid_check_follows_the_runs_a_sweep_ran(sweep, tmp_path):
    """A grid point is checked against the run its sweep launched (the ledger names it), not
    against what its overrides compose into today: a default changed after the sweep (here
    played by a run directory whose name no longer matches the composition) is a warning
    about relaunching, not a missing run."""
    root, env = copy(sweep, tmp_path)
    moved = next((root / "runs" / "distill").glob("*random*"))
    other = moved.with_name(moved.name.rsplit("-", 1)[0] + "-000000000000")
    moved.rename(other)
    entry_path = next(p for p in (root / "runs" / "sweeps").glob("smoke/*/jobs/*.json")
                      if Path(json.loads(p.read_text())["run_dir"]).name == moved.name)
    entry = json.loads(entry_path.read_text())
    entry["run_dir"] = str(other)
    entry_path.write_text(json.dumps(entry))
    proc = audit(root / "runs", env)
    lines = proc.stdout.splitlines()
    assert any(line.split()[:4] == ["grid", "WARN", "4", "1"] for line in lines), proc.stdout[-3000:]
    assert "1 of " in proc.stdout and "compose today into runs other than the ones the sweep ran" in proc.stdout
    assert not any(line.startswith("FAIL grid") for line in lines)


@pytest.mark.slow
def test_a_grid_point_whose_launch_failed_is_answered_by_the_run_it_composes_into(sweep, tmp_path):
    """A launch that failed names a run that never completed (here: one that does not exist,
    as under another signature an older code computed); a later launch made the run the point
    composes into today. The point is answered by that complete run, not reported missing;
    without it, the point is a failure."""
    root, env = copy(sweep, tmp_path)
    entry_path = next(p for p in (root / "runs" / "sweeps").glob("smoke/*/jobs/*.json")
                      if "random" in Path(json.loads(p.read_text())["run_dir"]).name)
    entry = json.loads(entry_path.read_text())
    made = Path(entry["run_dir"])
    entry["run_dir"], entry["status"] = str(made.with_name(made.name.rsplit("-", 1)[0] + "-000000000000")), "failed"
    entry_path.write_text(json.dumps(entry))
    proc = audit(root / "runs", env)
    assert not any(line.startswith("FAIL grid") for line in proc.stdout.splitlines()), proc.stdout[-3000:]
    shutil.rmtree(root / "runs" / "distill" / made.name)
    proc = audit(root / "runs", env)
    assert proc.returncode == 1 and "FAIL grid: smoke: grid point" in proc.stdout, proc.stdout[-3000:]
