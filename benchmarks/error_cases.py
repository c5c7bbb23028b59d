"""Every kind of bad input and fault through the real command line: what each prints and exits with.

    python benchmarks/error_cases.py [--markdown]

Runs each case in a fresh results and data directory (small synthetic runs where a run must
exist first), and prints, per case, the command, its exit status, the number of
``td3: error:`` lines, whether a traceback was printed, and the last line of stderr. The
expectation for every case: exit 2 (a stop by signal: 128 + the signal), exactly one error
line naming the problem, no traceback. The tests assert each case (tests/test_train.py,
tests/test_distill.py, tests/test_data_formats.py); this script shows them side by side.
The disk-full case mounts a 200 KB tmpfs and needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = ["dataset.num_users=200", "dataset.num_items=300", "max_len=20", "train.epochs=4",
         "train.pool_epochs=[2,4]", "progress=false", "threads=1"]
DISTILL = ["dataset.num_users=200", "dataset.num_items=300", "summary.mu=10", "summary.zeta=10",
           "distill.steps=6", "distill.window=3", "distill.inner.batch_size=5", "distill.inner.alt_low=2",
           "distill.outer.epochs=1", "distill.outer.batch_size=1000", "evaluation.epochs=2",
           "evaluation.batch_size=5", "train.epochs=4", "train.pool_epochs=[2,4]", "distill.init_from=pool",
           "progress=false", "threads=1"]


def cli(root: Path, module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "TD3_RESULTS_DIR": str(root / "runs"), "TD3_DATA_DIR": str(root / "data"),
         "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=e, capture_output=True,
                          text=True, timeout=600)


def case_files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    png = root / "image.inter"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    udata = root / "u.data"
    udata.write_text("1\t2\t3\t881250949\n-3\t2\t3\t881250950\n")
    blocker = root / "a-file"
    blocker.write_text("not a directory")
    return {"png": png, "udata": udata, "blocker": blocker}


def cases(tmp: Path):
    """(name, expected exit status, function of a fresh root returning the completed process):
    2 for bad input, 0 for a damaged cache, which is said in one warning and rebuilt."""
    f = case_files(tmp / "files")

    def with_teacher(root: Path, damage) -> subprocess.CompletedProcess:
        first = cli(root, "td3.distill", *DISTILL)
        assert first.returncode == 0, first.stderr[-2000:]
        damage(root)
        return cli(root, "td3.distill", *DISTILL, "seed=1")

    def overwrite_best(root: Path) -> None:
        next((root / "runs" / "train").glob("*/best.pt")).write_bytes(b"\x00" * 64)

    def truncate_pool(root: Path) -> None:
        d = next((root / "runs" / "train").glob("*/record.json")).parent
        pool = d / json.loads((d / "record.json").read_text())["checkpoints"]["pool"][0]
        pool.write_bytes(pool.read_bytes()[:100])

    def damaged_summary(root: Path) -> subprocess.CompletedProcess:
        first = cli(root, "td3.distill", *DISTILL)
        assert first.returncode == 0, first.stderr[-2000:]
        import shutil
        shutil.rmtree(Path(first.stdout.strip().splitlines()[-1]).parent)  # the run; its summary stays cached
        cached = next((root / "runs" / "summaries").glob("*/summary.pt"))
        cached.write_bytes(cached.read_bytes()[:300])
        return cli(root, "td3.distill", *DISTILL)

    def edited_record(root: Path) -> subprocess.CompletedProcess:
        first = cli(root, "td3.train", *SMALL)
        path = Path(first.stdout.strip().splitlines()[-1])
        record = json.loads(path.read_text())
        record["metrics"]["test"]["recbole100"]["NDCG@10"] = 0.99
        path.write_text(json.dumps(record))
        return cli(root, "td3.train", *SMALL)

    def truncated_record(root: Path) -> subprocess.CompletedProcess:
        first = cli(root, "td3.train", *SMALL)
        path = Path(first.stdout.strip().splitlines()[-1])
        path.write_text(path.read_text()[:200])
        return cli(root, "td3.train", *SMALL)

    def disk_full(root: Path) -> subprocess.CompletedProcess:
        mount = root / "tiny"
        mount.mkdir(parents=True)
        m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True, text=True)
        if m.returncode != 0:
            return subprocess.CompletedProcess([], -1, "", f"(skipped: cannot mount a tmpfs: {m.stderr.strip()})")
        try:
            return cli(root, "td3.train", *SMALL, "train.epochs=12", env={"TD3_RESULTS_DIR": str(mount / "runs")})
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)

    return [
        ("unknown dataset", 2, lambda r: cli(r, "td3.distill", "dataset=foo")),
        ("unknown setting", 2, lambda r: cli(r, "td3.train", "nosuchkey=1")),
        ("misspelt model", 2, lambda r: cli(r, "td3.train", "model=sasrek")),
        ("text for a number (train.lr)", 2, lambda r: cli(r, "td3.train", "train.lr=fast")),
        ("text for a number (summary.mu)", 2, lambda r: cli(r, "td3.distill", "summary.mu=ten")),
        ("text for a number (distill.steps)", 2, lambda r: cli(r, "td3.distill", "distill.steps=many")),
        ("impossible config (d1 > mu)", 2, lambda r: cli(r, "td3.distill", "summary.mu=4", "summary.d1=8")),
        ("too few items for 100 negatives", 2, lambda r: cli(r, "td3.train", *SMALL, "dataset.num_items=120")),
        ("missing data file", 2, lambda r: cli(r, "td3.train", "dataset=custom", f"dataset.path={tmp}/nowhere.inter")),
        ("binary data file", 2, lambda r: cli(r, "td3.train", "dataset=custom", f"dataset.path={f['png']}")),
        ("negative MovieLens user id", 2, lambda r: cli(r, "td3.train", "dataset=custom", f"dataset.path={f['udata']}",
                                                        "dataset.format=ml-100k")),
        ("results path through a regular file", 2, lambda r: cli(r, "td3.train", *SMALL,
                                                                 env={"TD3_RESULTS_DIR": str(f["blocker"] / "runs")})),
        ("NaN loss (train.lr=1e30)", 2, lambda r: cli(r, "td3.train", *SMALL, "train.lr=1e30")),
        ("NaN inner loss (distill.outer.lr=1e30)", 2, lambda r: cli(r, "td3.distill", *DISTILL, "distill.outer.lr=1e30")),
        ("teacher checkpoint overwritten", 2, lambda r: with_teacher(r, overwrite_best)),
        ("init-pool checkpoint truncated", 2, lambda r: with_teacher(r, truncate_pool)),
        ("cached summary truncated: said, distilled again", 0, damaged_summary),
        ("complete record edited by hand", 2, edited_record),
        ("record.json truncated: said, then run again", 0, truncated_record),
        ("disk full (200 KB tmpfs)", 2, disk_full),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="td3-errors-") as tmp:
        tmp = Path(tmp)
        for i, (name, expect, run) in enumerate(cases(tmp)):
            proc = run(tmp / f"case-{i}")
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("td3: error: ")]
            said = [line for line in lines if "cannot be read" in line]   # a rebuilt cache's warning
            last = (errors or said or lines or [""])[-1]
            rows.append((name, expect, proc.returncode, len(errors), "Traceback" in proc.stderr, last))
            if not args.markdown:
                print(f"{name:40s} exit {proc.returncode:3d}  {len(errors)} error line(s)"
                      f"{'  TRACEBACK' if rows[-1][4] else ''}\n    {last[:300]}", flush=True)
    if args.markdown:
        print("| case | exit | error lines | traceback | what it prints |\n|---|---|---|---|---|")
        for name, _, code, n, tb, last in rows:
            print(f"| {name} | {code} | {n} | {'yes' if tb else 'no'} | `{last[:300]}` |")
    # as expected: the exit status expected, one error line exactly when it is 2, no traceback
    bad = [r for r in rows if r[2] != -1 and (r[2] != r[1] or r[3] != (r[1] == 2) or r[4])]
    print(f"{len(rows) - len(bad)}/{len(rows)} cases as expected (exit 2 with one error line, or a "
          "damaged cache rebuilt with exit 0), no traceback")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
