"""Helpers shared by the tests that drive the real command line."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(module: str, *args: str, env: dict, check: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` from the repository root; ``check`` fails on a non-zero exit."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def kill_when(proc: subprocess.Popen, reached, timeout: float) -> None:
    """SIGKILL ``proc`` once ``reached()`` is true, polling (a checkpoint being replaced right
    now raises in ``reached``: retried); fails if the run ended before it could be killed."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if reached():
                    break
            except Exception:  # being replaced right now
                pass
            time.sleep(0.02)
        assert proc.poll() is None, "run finished before it could be killed"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate()


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def assert_one_clear_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and exactly one ``td3: error:`` line containing every needle, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("td3: error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# A process's import log (PYTHONPROFILEIMPORTTIME=1 writes it to stderr): a run should never
# load torch's compiler, which costs ~6 s per process (td3/optim.py says why).
IMPORT_LOG = {"PYTHONPROFILEIMPORTTIME": "1"}


def assert_no_compiler_import(proc: subprocess.CompletedProcess) -> None:
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported, "no import log in stderr: run the process with IMPORT_LOG in its environment"
    assert not {m for m in imported if m.startswith(("torch._dynamo", "torch._inductor"))}, \
        sorted(m for m in imported if m.startswith(("torch._dynamo", "torch._inductor")))[:5]
