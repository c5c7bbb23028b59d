"""Ray Tune over the same grid and the same records (``python -m td3.tune``), on real Ray
clusters: one started by the driver, one started with ``ray start`` and driven through
``ray job submit``, and one started on a SLURM allocation by ``slurm/ray-tune.sbatch``."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import REPO, run_cli

import slurm_cluster
from test_sweep import make_env, records_under


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tune_runs_the_sweep_grid_and_skips_what_any_launcher_completed(tmp_path):
    env = make_env(tmp_path)
    first = run_cli("td3.sweep", "-m", "+sweep=smoke", "seed=0", "method=random", "threads=1", env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    tune = run_cli("td3.tune", "+sweep=smoke", "seed=0", "--scheduler", "asha", env=env, timeout=1200)
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    assert "2 runs, 1 complete already, launching 1" in tune.stdout
    recs = records_under(tmp_path)
    assert sorted(r["config"]["method"] for r in recs.values()) == ["random", "td3"]
    assert all(r["status"] == "complete" for r in recs.values())
    td3 = next(r for r in recs.values() if r["config"]["method"] == "td3")
    assert td3["environment"]["torch_threads"] == 1  # --cpus-per-trial 1
    assert list((tmp_path / "runs" / "ray").iterdir()), "Ray Tune's experiment directory is missing"
    again = run_cli("td3.tune", "+sweep=smoke", "seed=0", env=env, timeout=600)
    assert again.returncode == 0 and "launching 0" in again.stdout, again.stdout[-2000:]


@pytest.mark.slow
def test_ray_job_submit_against_a_running_cluster(tmp_path):
    port, dashboard = free_port(), free_port()
    env = make_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    temp = Path("/tmp") / f"td3r-{secrets.token_hex(4)}"  # Ray's socket paths must stay short
    start = subprocess.run(["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                            "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    try:
        runtime_env = {"env_vars": {k: v for k, v in env.items() if k.startswith("TD3_")}}
        job = subprocess.run(["ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard}",
                              "--runtime-env-json", json.dumps(runtime_env), "--",
                              sys.executable, "-m", "td3.tune", "--address", "auto", "+sweep=smoke",
                              "seed=6", "method=random"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout.lower(), job.stdout[-2000:]
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    recs = records_under(tmp_path)
    assert len(recs) == 1 and next(iter(recs.values()))["status"] == "complete"


@pytest.mark.slow
def test_ray_cluster_on_a_slurm_allocation(tmp_path, slurm):
    env = make_env(tmp_path, **slurm, TD3_RAY_PORT=str(free_port()))
    submit = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=2", f"--output={tmp_path}/ray-%j.log",
                             str(REPO / "slurm" / "ray-tune.sbatch"), "+sweep=smoke", "seed=7", "method=random"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    slurm_cluster.wait_for(lambda: {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"} & set(
        slurm_cluster.sacct_states(env, job)), 1200, "the Ray job to end", interval=2)
    log = (tmp_path / f"ray-{job}.log").read_text()
    assert slurm_cluster.sacct_states(env, job) == ["COMPLETED"], log[-4000:]
    assert "td3 tune: 1 trials, 0 failed" in log
    recs = records_under(tmp_path)
    assert len(recs) == 1 and next(iter(recs.values()))["status"] == "complete"


@pytest.mark.parametrize("name", ["local.yaml", "aws.yaml"])
def test_ray_cluster_yamls_pass_rays_own_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = yaml.safe_load((REPO / "sweeps" / "ray" / name).read_text())
    validate_config(prepare_config(config))  # raises on an invalid cluster file
    assert any("td3" in c for c in config["setup_commands"])
