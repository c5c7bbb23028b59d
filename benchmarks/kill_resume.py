"""SIGKILL a distillation at random moments, resume it, and compare with an uninterrupted run.

    python benchmarks/kill_resume.py [--kills 20] [--seed 0] [overrides...]

Runs a small synthetic distillation once to its end (the reference), then ``--kills``
times: copies the reference's teacher into a fresh results root (so each attempt spends its
time in the distillation), launches the same command, kills it with SIGKILL at a moment
drawn uniformly over the reference's timeline (while loading, in an outer step, a
validation, the final evaluation, or while writing; past the start, scaled by how much
slower the attempt started than the reference, since a machine's load varies), relaunches the command until it exits
0, and compares what it left with the reference: the record's metrics, validations and
best step, and the bytes of ``summary.pt``, ``summary.inter`` and ``per_user.parquet``.
Prints each attempt with how far the run had got when killed, and ``n/N``: the killed runs
identical to the reference. An attempt that finished before its kill (the machine's load
varies) does not count, and another attempt is made, until ``--kills`` runs were killed.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = ["dataset.num_users=200", "dataset.num_items=300", "summary.mu=10", "summary.zeta=10",
         "distill.steps=16", "distill.window=4", "distill.inner.batch_size=5", "distill.inner.alt_low=2",
         "distill.outer.epochs=1", "distill.outer.batch_size=400", "distill.validate_every=3",
         "distill.validate_epochs=3", "distill.checkpoint_every=2", "evaluation.epochs=5",
         "evaluation.batch_size=5", "train.epochs=8", "train.pool_epochs=[2,6]", "progress=false", "threads=1",
         "distill.init_from=pool", "distill.inner.embedding=frozen"]
COMPARED = ("summary.pt", "summary.inter", "per_user.parquet")


def launch(args: list[str], root: Path) -> subprocess.Popen:
    env = {"TD3_RESULTS_DIR": str(root / "runs"), "TD3_DATA_DIR": str(root / "data"),
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    import os
    env = {**os.environ, **env}
    return subprocess.Popen([sys.executable, "-m", "td3.distill", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(args: list[str], root: Path) -> Path:
    proc = launch(args, root)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the run failed (exit {proc.returncode}):\n{err[-2000:]}")
    return Path(out.strip().splitlines()[-1])


def wait_for_summary(proc: subprocess.Popen, root: Path) -> float:
    """The moment (perf_counter) the run's summary directory appears, or the process ends."""
    while proc.poll() is None and not list((root / "runs").glob("summaries/*")):
        time.sleep(0.01)
    return time.perf_counter()


def phase(root: Path) -> str:
    """How far a run had got when it was killed, from what it has written."""
    runs = root / "runs"
    states = list(runs.glob("summaries/*/state.pt"))
    if list(runs.glob("distill/*/record.json")):
        return "after its record"
    if list(runs.glob("summaries/*/distill.json")):
        return "evaluating the summary"
    if states:
        try:
            import torch
            step = torch.load(states[0], weights_only=False)["state"]["step"]
            return f"distilling, checkpoint at outer step {step}"
        except Exception:  # being written at that very moment
            return "distilling, writing a checkpoint"
    if list(runs.glob("summaries/*")):
        return "distilling, before its first checkpoint"
    return "starting (imports, data, teacher)"


def same(reference: Path, path: Path) -> list[str]:
    """What differs between two runs' directories (empty: nothing)."""
    a, b = (json.loads((p / "record.json").read_text()) for p in (reference, path))
    diffs = [key for key in ("metrics", "metrics_by_model") if a.get(key) != b.get(key)]
    diffs += [f"distill.{k}" for k in ("validations", "best_step", "outer_steps")
              if a["distill"].get(k) != b["distill"].get(k)]
    diffs += [name for name in COMPARED if (reference / name).read_bytes() != (path / name).read_bytes()]
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    command = [*SMALL, *args.overrides]
    draw = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="td3-kills-") as tmp:
        tmp = Path(tmp)
        finish(command, tmp / "teacher")                    # the teacher, once
        teacher = next((tmp / "teacher" / "runs" / "train").iterdir())
        shutil.rmtree(tmp / "teacher" / "runs" / "distill")
        shutil.rmtree(tmp / "teacher" / "runs" / "summaries")
        # the reference, teacher already made, timed in two parts: starting (imports, data,
        # teacher), until its summary's directory appears, then the rest
        t0 = time.perf_counter()
        proc = launch(command, tmp / "teacher")
        started = wait_for_summary(proc, tmp / "teacher") - t0
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the reference run failed (exit {proc.returncode}):\n{err[-2000:]}")
        reference = Path(out.strip().splitlines()[-1]).parent
        seconds = time.perf_counter() - t0
        print(f"reference: {seconds:.1f} s, of which {started:.1f} s starting ({reference.name})", flush=True)
        identical = kills = 0
        attempt = 0
        while kills < args.kills and attempt < 3 * args.kills:
            attempt += 1
            root = tmp / f"attempt-{attempt}"
            shutil.copytree(teacher, root / "runs" / "train" / teacher.name)
            shutil.copytree(tmp / "teacher" / "data", root / "data")
            # a moment of the reference's timeline; past its start, scaled by how much slower
            # (or faster) this attempt started, so that a busy machine does not push every
            # kill into the start
            at = draw.uniform(0.02, 0.98) * seconds
            t1 = time.perf_counter()
            proc = launch(command, root)
            if at < started:
                time.sleep(at)
            else:
                slowdown = (wait_for_summary(proc, root) - t1) / started
                time.sleep(max(0.0, (at - started) * slowdown))
            killed = proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
                where = phase(root)
            proc.communicate()
            relaunches = 0
            while True:   # relaunch until the run completes (a kill can only delay it)
                relaunches += 1
                proc = launch(command, root)
                out, err = proc.communicate()
                if proc.returncode == 0:
                    break
                if relaunches >= 3:
                    raise SystemExit(f"attempt {attempt}: the resumed run failed:\n{err[-2000:]}")
            path = Path(out.strip().splitlines()[-1]).parent
            diffs = same(reference, path)
            kills += killed
            identical += killed and not diffs
            what = f"killed at {at:5.1f} s ({where})" if killed else f"finished before {at:5.1f} s (not counted)"
            print(f"attempt {attempt:2d}: {what} -> {'identical' if not diffs else 'DIFFERS in ' + ', '.join(diffs)}",
                  flush=True)
            shutil.rmtree(root)
        print(f"{identical}/{kills} killed and resumed runs identical to the uninterrupted one")
    return 0 if identical == kills else 1


if __name__ == "__main__":
    sys.exit(main())
