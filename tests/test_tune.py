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

# Ray clusters started here are stopped by td3.ray_stop, which stops only the
# cluster of one --temp-dir (`ray stop` would stop every Ray on the machine). The tests share
# the SLURM tests' xdist worker all the same: two Ray heads at once are heavy on 2 cores.
pytestmark = pytest.mark.xdist_group("slurm")
STOP_OWN = [sys.executable, "-m", "td3.ray_stop"]


def start_head(temp: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    """``ray start --head`` on 127.0.0.1 under ``temp``, retried as slurm/ray-tune.sbatch does
    (a busy machine can kill a head while it starts)."""
    for attempt in range(3):
        start = subprocess.run(["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
                                "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats", *extra],
                               env=env, capture_output=True, text=True, timeout=300)
        if start.returncode == 0:
            return start
        subprocess.run([*STOP_OWN, str(temp)], capture_output=True, timeout=120)
    return start


def processes_under(temp: Path) -> list[int]:
    """Processes of the Ray node under ``temp`` (as td3.ray_stop finds them)."""
    from td3.ray_stop import holding
    return holding(str(temp))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def schema(obj):
    """The shape of a record: its keys, nested, without the values."""
    if isinstance(obj, dict):
        return {k: schema(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [schema(obj[0])] if obj and isinstance(obj[0], (dict, list)) else []
    return None


@pytest.mark.slow
def test_slurm_and_ray_tune_sweeps_give_the_same_records_and_skip_what_is_complete(tmp_path, slurm):
    """The smoke grid at seed 0 (TD3 and Random) through Submitit on SLURM (one array, one CPU
    per task) in one results root and through Ray Tune (ASHA scheduler, one CPU per trial) in
    another: one complete record per point, the same signatures, the same record schema and
    the same metrics to the last bit; relaunching either in the SLURM root launches nothing."""
    on_slurm, on_ray = tmp_path / "slurm", tmp_path / "ray"
    env = make_env(on_slurm, **slurm)
    sweep = run_cli("td3.sweep", "-m", "+sweep=smoke", "seed=0", "hydra/launcher=td3_slurm", env=env, timeout=900)
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
    assert "td3 sweep: 2 runs: 2 complete" in sweep.stdout, sweep.stdout[-2000:]
    job = slurm_cluster.submitted_job(on_slurm)
    # the accounting database learns of the ends a moment after the results are in
    slurm_cluster.wait_for(lambda: slurm_cluster.sacct_states(env, job) == ["COMPLETED"] * 2, 120,
                           "sacct to report both array tasks COMPLETED", env=env)
    tune = run_cli("td3.tune", "+sweep=smoke", "seed=0", "--scheduler", "asha", env=make_env(on_ray), timeout=1200)
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    assert "2 runs, 0 complete already, launching 2" in tune.stdout
    assert list((on_ray / "runs" / "ray").iterdir()), "Ray Tune's experiment directory is missing"

    slurm_recs, ray_recs = records_under(on_slurm), records_under(on_ray)
    assert slurm_recs.keys() == ray_recs.keys() and len(slurm_recs) == 2  # the same signatures
    for name in slurm_recs:
        ours, theirs = slurm_recs[name], ray_recs[name]
        assert ours["status"] == theirs["status"] == "complete"
        assert ours["environment"]["torch_threads"] == theirs["environment"]["torch_threads"] == 1
        assert schema(ours) == schema(theirs), name
        assert ours["metrics"] == theirs["metrics"], name
    assert {r["method"] for r in ray_recs.values()} == {"td3", "random"}

    again = run_cli("td3.tune", "+sweep=smoke", "seed=0", env=env, timeout=600)
    assert again.returncode == 0 and "launching 0" in again.stdout, again.stdout[-2000:]
    again = run_cli("td3.sweep", "-m", "+sweep=smoke", "seed=0", "hydra/launcher=td3_slurm", env=env, timeout=600)
    assert again.returncode == 0 and "2 runs: 2 skipped" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    assert len(list(on_slurm.glob("runs/sweeps/smoke/*/.submitit"))) == 1  # nothing submitted the second time


@pytest.mark.slow
def test_ray_job_submit_against_a_running_cluster(tmp_path):
    dashboard = free_port()
    env = make_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    temp = Path("/tmp") / f"td3r-{secrets.token_hex(4)}"  # Ray's socket paths must stay short
    start = start_head(temp, env, "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                       f"--dashboard-port={dashboard}")
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
        subprocess.run([*STOP_OWN, str(temp)], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    recs = records_under(tmp_path)
    assert len(recs) == 1 and next(iter(recs.values()))["status"] == "complete"


@pytest.mark.slow
def test_ray_cluster_on_a_slurm_allocation(tmp_path, slurm):
    env = make_env(tmp_path, **slurm, TD3_RAY_PORT=str(free_port()))
    submit = subprocess.run(["sbatch", "--parsable", f"--cpus-per-task={slurm_cluster.node_cpus(env)}", f"--output={tmp_path}/ray-%j.log",
                             str(REPO / "slurm" / "ray-tune.sbatch"), "+sweep=smoke", "seed=7", "method=random"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    log_file = tmp_path / f"ray-{job}.log"
    try:
        slurm_cluster.wait_for(lambda: {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"} & set(
            slurm_cluster.sacct_states(env, job)), 600, "the Ray job to end", interval=2, env=env)
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}\n--- {log_file.name} (tail)\n{log_file.read_text()[-3000:]}") from None
    log = log_file.read_text()
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


@pytest.mark.slow
def test_stopping_one_ray_cluster_leaves_another_running(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ours, theirs = (Path("/tmp") / f"td3r-{secrets.token_hex(4)}" for _ in range(2))
    try:
        for temp in (ours, theirs):
            start = start_head(temp, env, "--include-dashboard=false")
            assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        before = processes_under(theirs)
        assert processes_under(ours) and before
        stop = subprocess.run([*STOP_OWN, str(ours)], capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        assert processes_under(ours) == []
        assert processes_under(theirs) == before   # untouched, every process of it
    finally:
        for temp in (ours, theirs):
            subprocess.run([*STOP_OWN, str(temp)], capture_output=True, timeout=120)
            shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_up_and_ray_submit_over_ssh_as_documented(tmp_path):
    """``ray up sweeps/ray/local.yaml`` then ``ray submit ... sweeps/ray/tune_job.py -- --results
    DIR ...`` as the README says, the head reached over SSH with key login: Debian's sshd, run
    by ssh's ProxyCommand for each connection (``sshd -i``, so no port is opened), with a home
    of its own. What the test changes in the documented file: the key and the proxy command,
    the head's start (its own temp dir and port, no ``ray stop``, which would stop every Ray
    on the machine) and the install commands (the node's Python environment stands in: the
    home's ``.bashrc``, which Ray's commands source, puts the copied checkout on PYTHONPATH)."""
    sshd = Path("/usr/sbin/sshd")
    assert sshd.is_file() and shutil.which("rsync"), "apt-get install openssh-server rsync (as .ci/run does)"
    home, runs, name = tmp_path / "home", tmp_path / "runs", f"td3-test-{secrets.token_hex(4)}"
    home.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host_key")], check=True)
    shutil.copy(tmp_path / "key.pub", tmp_path / "authorized_keys")
    (tmp_path / "sshd_config").write_text(
        f"HostKey {tmp_path}/host_key\nAuthorizedKeysFile {tmp_path}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nStrictModes no\nSetEnv HOME={home}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    (home / ".bashrc").write_text(  # the node's environment: its Python, td3 on the path, Ray on loopback
        f"export PATH={Path(sys.executable).parent}:$PATH PYTHONPATH={home}/td3 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0\n")

    config = yaml.safe_load((REPO / "sweeps" / "ray" / "local.yaml").read_text())
    assert config["file_mounts"]["~/td3"] == "." and config["provider"]["head_ip"] == "127.0.0.1"
    token = tmp_path / "td3-cluster-token"  # made as the file says, copied to the node's ~/.ray/auth_token
    token.write_text(secrets.token_hex(32) + "\n")
    config["file_mounts"]["~/.ray/auth_token"] = str(token)
    temp = Path("/tmp") / f"td3r-{secrets.token_hex(4)}"  # Ray's socket paths must stay short
    config.update(cluster_name=name,
                  auth={"ssh_user": "root", "ssh_private_key": str(tmp_path / "key"),
                        "ssh_proxy_command": f"{sshd} -i -f {tmp_path}/sshd_config"},
                  setup_commands=["cd ~/td3 && python -c 'import td3; print(\"td3 from\", td3.__file__)'"],
                  head_start_ray_commands=[
                      f"ray start --head --node-ip-address=127.0.0.1 --port={free_port()} --num-cpus=1 "
                      f"--temp-dir={temp} --include-dashboard=false --disable-usage-stats "
                      "--autoscaling-config=~/ray_bootstrap_config.yaml"])
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    submit = ["ray", "submit", "--no-config-cache", str(cluster), "sweeps/ray/tune_job.py", "--",
              "--results", str(runs), "--env", f"TD3_DATA_DIR={tmp_path}/data", "+sweep=smoke", "seed=9",
              "method=random"]
    try:
        up = subprocess.run(["ray", "up", "-y", "--no-config-cache", str(cluster)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-3000:]
        assert f"td3 from {home}/td3/td3/__init__.py" in up.stdout + up.stderr  # the copied checkout
        assert (home / "ray_bootstrap_config.yaml").is_file() and processes_under(temp)
        assert (home / ".ray" / "auth_token").read_text() == token.read_text()  # the cluster's token

        job = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        out = job.stdout + job.stderr
        assert job.returncode == 0 and "td3 tune: 1 trials, 0 failed" in out, out[-4000:]
        recs = records_under(tmp_path)
        assert len(recs) == 1 and next(iter(recs.values()))["status"] == "complete"
        assert (tmp_path / "data").is_dir()  # --env reached the trial

        again = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        out = again.stdout + again.stderr
        assert again.returncode == 0 and "1 runs, 1 complete already, launching 0" in out, out[-3000:]
    finally:
        subprocess.run([*STOP_OWN, str(temp)], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        Path(f"/tmp/cluster-{name}.state").unlink(missing_ok=True)  # the local provider's node list
