"""The project's local SLURM (``slurm/local-cluster.sh``) for tests: started once per session.

Needs root and Debian's slurmctld, slurmd, slurmdbd, munge and mariadb-server (``.ci/run``
installs them). Where they are missing the SLURM tests skip and say why; CI has them.
"""
from __future__ import annotations

import os
import re
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


def _run(env: dict, *cmd: str) -> str:
    proc = subprocess.run(list(cmd), env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def node_state(env: dict) -> tuple[str, str]:
    """The node's state and, when drained or down, SLURM's reason."""
    out = _run(env, "sinfo", "-h", "-N", "-o", "%T|%E").strip().splitlines()
    state, _, reason = (out[0] if out else "unknown|").partition("|")
    return state, reason


def node_cpus(env: dict) -> int:
    return int(_run(env, "sinfo", "-h", "-N", "-o", "%c").split()[0])


def reset(env: dict) -> str | None:
    """Leave the cluster as a fresh one for the next test: no job left, the node usable.

    Returns what had to be repaired (a drained node and SLURM's reason), or None. A test
    that leaves a job behind or a node drained would otherwise make every later SLURM test
    wait for resources that never come."""
    _run(env, "scancel", "--full", "--quiet", "-u", "root")
    deadline = time.monotonic() + 90
    while _run(env, "squeue", "-h", "-o", "%i").strip() and time.monotonic() < deadline:
        time.sleep(0.5)
    state, reason = node_state(env)
    if any(bad in state for bad in ("drain", "down", "fail")):
        _run(env, "scontrol", "update", "nodename=localhost", "state=resume")
        wait_for(lambda: node_state(env)[0] in ("idle", "mixed", "allocated"), 60, "the node to resume")
        return f"node was {state}: {reason}"
    return None


def diagnostics(env: dict) -> str:
    """What SLURM says about its queue and node: appended to a test's timeout message."""
    logs = "\n".join(f"--- {name} (tail)\n" + "\n".join(
        (STATE / "log" / name).read_text(errors="replace").splitlines()[-25:])
        for name in ("slurmctld.log", "slurmd.log") if (STATE / "log" / name).exists())
    return "\n".join([_run(env, "squeue", "-o", "%i %T %r %S"), _run(env, "sinfo", "-N", "-o", "%N %T %E"), logs])


def submitted_job(root) -> str | None:
    """The SLURM job id Submitit gave a sweep under ``root`` (an array's parent id), once known.

    Only job folders count (``.submitit/<id>`` or ``<id>_<task>``): while submitting an
    array, Submitit also keeps ``.submitit/<uuid>.pkl`` files, whose names may start with a digit."""
    for path in sorted(Path(root).glob("runs/sweeps/*/*/.submitit/*")):
        match = re.fullmatch(r"(\d+)(?:_\d+)?", path.name)
        if match and path.is_dir():
            return match.group(1)
    return None


def queue_state(env: dict, job: str) -> str:
    """slurmctld's own view of a queued or running job (``RUNNING``, ``PENDING``...), or ''."""
    return _run(env, "squeue", "-h", "-j", job, "-o", "%T").strip()


def sacct_states(env: dict, job: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"], env=env,
                         capture_output=True, text=True, timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5, env: dict | None = None):
    """Poll until ``predicate()`` is truthy; on timeout fail, with SLURM's view when ``env`` is given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f"\n{diagnostics(env)}" if env is not None else ""))
