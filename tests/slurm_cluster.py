"""The project's local SLURM (``slurm/local-cluster.sh``) for tests: started once per session.

Needs root and Debian's slurmctld, slurmd, slurmdbd, munge and mariadb-server (``.ci/run``
installs them). Where they are missing the SLURM tests skip and say why; CI has them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "local-cluster.sh"
STATE = Path(os.environ.get("TD3_TEST_SLURM_DIR", "/tmp/td3-test-slurm"))
BINARIES = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")


def missing() -> str | None:
    """Why the local cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "the local SLURM runs its daemons as root"
    absent = [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
    if absent:
        return f"missing {', '.join(absent)} (apt-get install slurmctld slurmd slurm-client slurmdbd munge mariadb-server)"
    return None


def start() -> dict:
    """Start the cluster; returns the environment variables a client needs."""
    env = {**os.environ, "TD3_SLURM_DIR": str(STATE), "TD3_SLURM_PORT": os.environ.get("TD3_TEST_SLURM_PORT", "6917")}
    proc = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"local SLURM did not start:\n{proc.stdout}\n{proc.stderr}")
    return {"SLURM_CONF": str(STATE / "slurm.conf")}


def stop() -> None:
    env = {**os.environ, "TD3_SLURM_DIR": str(STATE)}
    subprocess.run(["bash", str(SCRIPT), "stop", "--purge"], env=env, capture_output=True, timeout=120)


def sacct_states(env: dict, job: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"], env=env,
                         capture_output=True, text=True, timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
