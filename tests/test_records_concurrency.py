"""200 processes writing into one results root at once: nothing lost, nothing corrupt.

What a large array sweep does to a shared filesystem: every task writes its own record
directory, several tasks race for the same shared artefact (a teacher, a summary), and the
sweep's ledger gets one entry per task. The processes are real (forked, released together
by a barrier), the files are real, and every file is read back and checked afterwards.
"""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from td3 import records
from td3 import ledger as ledgers

N = 200


def _writer(root: str, index: int, barrier) -> None:
    root = Path(root)
    config = {"method": "random", "seed": index, "dataset": {"name": "synthetic"}}
    sig = records.signature(config)
    barrier.wait()
    # 1. its own run: config, a file, then the sealed record (written last)
    run_dir = root / "distill" / f"synthetic-random-{sig}"
    records.write_text(run_dir / "config.json", records.canonical_json(config) + "\n")
    record = {"kind": "distill", "status": "complete", "signature": sig, "config": config,
              "metrics": {"test": {"uni100": {"NDCG@10": index / N}}}, "payload": "x" * 20_000}
    records.write_record(run_dir, record)
    # 2. everyone at once on one shared record: the last rename wins, whole
    records.write_record(root / "shared", dict(record))
    # 3. a read-modify-write of one shared counter under the run lock: no update lost
    with records.exclusive(root / "counter"):
        path = root / "counter" / "count.json"
        count = json.loads(path.read_text())["count"] if path.exists() else 0
        records.write_json(path, {"count": count + 1})
    # 4. the sweep's ledger
    ledgers.write_entry(root / "sweep", [f"seed={index}"], status="complete", run_dir=str(run_dir))


def test_200_processes_writing_at_once_lose_and_corrupt_nothing(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(N)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i, barrier)) for i in range(N)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * N

    runs = sorted((tmp_path / "distill").iterdir())
    assert len(runs) == N
    seeds = set()
    for run_dir in runs:
        record = records.read_record(run_dir)
        assert record is not None, f"{run_dir}: record unreadable"
        assert record["seal"] == records.seal_of(record), f"{run_dir}: seal does not match"
        assert record["files"]["config.json"] == records.file_sha256(run_dir / "config.json")
        assert json.loads((run_dir / "config.json").read_text()) == record["config"]
        seeds.add(record["config"]["seed"])
    assert seeds == set(range(N))

    shared = records.read_record(tmp_path / "shared")
    assert shared["seal"] == records.seal_of(shared) and shared["config"]["seed"] in range(N)
    assert json.loads((tmp_path / "counter" / "count.json").read_text())["count"] == N
    ledger = list(ledgers.entries(tmp_path / "sweep").values())
    assert len(ledger) == N and all(e["status"] == "complete" for e in ledger)
    # no temporary file of an atomic write is left anywhere
    assert [p for p in tmp_path.rglob("*.tmp")] == []
