"""What a GPU sweep asks its launchers for, checked without a GPU (docs/gpu.md): the SLURM
preset ``hydra/launcher=td3_slurm_gpu`` and Ray Tune's ``--gpus-per-trial``; and the GPU
benchmark's answer on a machine without one. Nothing is submitted."""
from __future__ import annotations

import dataclasses
import importlib.util
import sys

import pytest
import torch
import yaml

from cli_helpers import REPO, run_cli
from test_distill import make_env

SMOKE = ["+sweep=smoke", "seed=0"]


# ------------------------------------------------------------------ SLURM
def launcher_config(env: dict, preset: str) -> dict:
    """``hydra.launcher`` as ``python -m td3.sweep`` composes it with ``hydra/launcher=<preset>``."""
    proc = run_cli("td3.sweep", *SMOKE, f"hydra/launcher={preset}", "--cfg", "hydra", "-p", "hydra.launcher",
                   env=env, check=True)
    return yaml.safe_load(proc.stdout)


def test_the_gpu_slurm_preset_is_td3_slurm_with_a_gpu_and_sbatch_gets_it(tmp_path):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
    from submitit.slurm.slurm import _make_sbatch_string

    env = make_env(tmp_path)
    gpu, cpu = launcher_config(env, "td3_slurm_gpu"), launcher_config(env, "td3_slurm")
    assert gpu["gpus_per_node"] == 1 and gpu["cpus_per_task"] >= 1 and gpu["mem_gb"] >= cpu["mem_gb"]
    # everything else is td3_slurm's: the same launcher, requeue on timeout and preemption
    changed = {k for k in gpu if gpu[k] != cpu.get(k)}
    assert changed == {"gpus_per_node", "cpus_per_task", "mem_gb"}, changed
    assert gpu["max_num_timeout"] > 0 and gpu["signal_delay_s"] > 0

    # The sbatch script Submitit would write, from the fields hydra-submitit-launcher hands it
    # (its own mapping: the shared fields as they are, SLURM's prefixed slurm_). Submitit
    # refuses a field it does not know, so this also checks every name.
    shared = {f.name for f in dataclasses.fields(BaseQueueConf)}
    slurm = {f.name for f in dataclasses.fields(SlurmQueueConf)} - {"_target_", "submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in gpu.items() if k in slurm})
    sbatch = _make_sbatch_string(command="python -m td3.sweep", folder=tmp_path / "submitit",
                                 **executor._executor.parameters)  # the script's text, without sbatch
    lines = set(sbatch.splitlines())
    assert {"#SBATCH --gpus-per-node=1", f"#SBATCH --cpus-per-task={gpu['cpus_per_task']}",
            f"#SBATCH --mem={gpu['mem_gb']}GB", f"#SBATCH --signal=USR2@{gpu['signal_delay_s']}"} <= lines, sbatch


# -------------------------------------------------------------------- Ray
def test_gpus_per_trial_asks_ray_for_a_gpu_per_trial():
    from td3.tune import trial_config, trial_resources

    assert trial_resources(1, 1).required_resources == {"CPU": 1.0, "GPU": 1.0}
    assert trial_resources(4, 0.5).bundles == [{"CPU": 4.0, "GPU": 0.5}]  # two trials share a GPU
    assert "GPU" not in trial_resources(2, 0).required_resources
    cfg = {"results_dir": "runs", "device": "auto", "threads": None}
    assert trial_config(cfg, 2, 1)["device"] == "cuda" and trial_config(cfg, 2, 1)["threads"] == 2
    assert trial_config(cfg, 1, 0)["device"] == "auto"                    # no GPU: whatever the trial sees
    assert trial_config({**cfg, "device": "cpu"}, 1, 1)["device"] == "cpu"  # a device asked for stays


def test_tune_dry_run_with_a_gpu_per_trial_starts_nothing(tmp_path):
    env = make_env(tmp_path)
    proc = run_cli("td3.tune", *SMOKE, "--gpus-per-trial", "1", "--dry-run", env=env, check=True)
    assert "launching 2 (each reserving {'CPU': 1.0, 'GPU': 1.0})" in proc.stdout, proc.stdout
    trials = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert len(trials) == 2 and all("device=cuda threads=1" in line for line in trials), proc.stdout
    assert "Ray" not in proc.stdout + proc.stderr and not (tmp_path / "runs" / "ray").exists()

    bad = run_cli("td3.tune", *SMOKE, "--gpus-per-trial", "-1", "--dry-run", env=env)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("td3: error: ") and len(bad.stderr.splitlines()) == 1


# -------------------------------------------------------- the GPU benchmark
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the benchmark would measure it")
def test_the_gpu_benchmark_without_a_gpu_says_so_in_one_line_and_exits_2(tmp_path):
    import subprocess
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, env=make_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no GPU" in proc.stderr, proc.stderr


def test_the_gpu_benchmark_measures_outer_steps(tmp_path, monkeypatch):
    """Its measurement, on the CPU and a tiny synthetic problem (the GPU only adds the memory figures)."""
    monkeypatch.setenv("TD3_DATA_DIR", str(tmp_path / "data"))
    lines = []
    figures = gpu_check().measure(
        ["dataset.num_users=200", "dataset.num_items=300", "summary.mu=10", "summary.zeta=10", "distill.steps=6",
         "distill.window=3", "distill.inner.batch_size=5", "distill.inner.alt_low=2", "distill.outer.batch_size=400"],
        torch.device("cpu"), steps=2, warmup=1, echo=lines.append)
    assert figures["median_seconds"] > 0 and figures["peak_allocated_mb"] is None and 3 <= figures["mean_M"] <= 6
    assert len(lines) == 1 + 3 and "not counted" in lines[1] and "not counted" not in lines[2]


# ------------------------------------------------------------ the record
def test_a_record_names_the_device_it_computed_on():
    from td3 import records

    assert records.new_record("train", {"device": "cpu"}, "0" * 12)["environment"]["device"] == "cpu"
    auto = records.new_record("train", {"device": "auto"}, "0" * 12)["environment"]["device"]
    assert auto == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_record_names_the_cpu_and_the_vector_level_of_torchs_kernels():
    """Two machines' runs of one config may differ in their last bits: the record says which
    CPU computed and which kernels torch dispatched to (ATEN_CPU_CAPABILITY lowers them)."""
    import os
    import subprocess
    import sys

    from td3 import records

    env = records.new_record("train", {"device": "cpu"}, "0" * 12)["environment"]
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    assert env["cpu"] == names[0] and env["cpu"]
    lowered = subprocess.run([sys.executable, "-c", "from td3 import records; "
                              "print(records.environment('cpu')['cpu_capability'])"],
                             env={**os.environ, "ATEN_CPU_CAPABILITY": "default"},
                             capture_output=True, text=True, check=True)
    assert lowered.stdout.strip() == "DEFAULT"
