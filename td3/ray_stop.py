"""Stop the Ray cluster started with ``--temp-dir=TEMP_DIR``, and no other.

    python -m td3.ray_stop TEMP_DIR [--timeout 15]

``ray stop`` stops every Ray process on the machine: another user's cluster, another job's
on a shared node, another test's. Every process of a Ray node names its session directory,
which lies under the ``--temp-dir`` it was started with, on its command line (GCS, raylet,
workers) or among its open files (the agents, which rename themselves), so this sends
SIGTERM to exactly those processes (scanning again for any the node starts while it shuts
down), then SIGKILL to those still alive after ``--timeout`` seconds; it exits 1 if any is
left. It never signals itself or its ancestors (the shell that runs it may name TEMP_DIR too). Standard library
only (nothing of td3 is imported): it runs on any node td3 is installed on. Prints how many
processes it stopped.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def holding(temp_dir: str) -> list[int]:
    """Processes whose command line has an argument naming temp_dir or a path under it."""
    own, found = ancestors(), []
    needle = temp_dir.rstrip("/")
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a == needle or a.endswith("=" + needle) or needle + "/" in a for a in args) \
                or _has_open_file_under(entry, needle):
            found.append(int(entry))
    return found


def _has_open_file_under(pid: str, needle: str) -> bool:
    """Ray's agents rename themselves (``ray::DashboardAgent``): they are known by their
    open files instead (logs and sockets in the session directory)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(needle + "/"):
                return True
        except OSError:
            continue
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("temp_dir")
    ap.add_argument("--timeout", type=float, default=15.0)
    args = ap.parse_args()
    temp_dir = os.path.abspath(args.temp_dir)
    # Scan again after every signal: a node shutting down can start processes of its own
    # (a raylet replacing a worker) after the first scan; each is sent SIGTERM in turn.
    signalled: set[int] = set()
    deadline = time.monotonic() + args.timeout
    while (alive := holding(temp_dir)) and time.monotonic() < deadline:
        _signal([p for p in alive if p not in signalled], signal.SIGTERM)
        signalled.update(alive)
        time.sleep(0.2)
    kill_deadline = time.monotonic() + 10.0  # SIGKILL cannot be refused: only newcomers delay this
    while (alive := holding(temp_dir)) and time.monotonic() < kill_deadline:
        _signal(alive, signal.SIGKILL)
        signalled.update(alive)
        time.sleep(0.1)
    left = holding(temp_dir)
    print(f"td3.ray_stop: stopped {len(signalled)} process(es) of the Ray node under {temp_dir}"
          + (f"; still running: {' '.join(map(str, left))}" if left else ""))
    return 1 if left else 0


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    sys.exit(main())
