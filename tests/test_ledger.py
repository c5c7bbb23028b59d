"""td3.ledger: a sweep's ledger as entry files while it runs, packed into one file when
published; readers see both alike, and a packed ledger is read as the files were."""
from __future__ import annotations

import json

from td3 import ledger


def test_packing_keeps_every_entry_and_readers_see_both_forms(tmp_path):
    sweep = tmp_path / "sweeps" / "smoke" / "2026-01-01_00-00-00"
    points = [[f"seed={s}", "method=td3"] for s in range(3)]
    for i, p in enumerate(points):
        ledger.write_entry(sweep, p, status="complete", run_dir=f"/elsewhere/distill/run-{i}")
    (sweep / "jobs" / "bad.json").write_text("{truncated")
    before = ledger.entries(sweep)
    assert len(before) == 4 and before["bad"]["status"] == "unreadable"
    assert ledger.entry(sweep, list(reversed(points[1])))["run_dir"].endswith("run-1")  # the point, in any order

    ledger.pack(sweep)
    assert not (sweep / "jobs").exists()
    lines = (sweep / "jobs.jsonl").read_text().splitlines()
    assert len(lines) == 4 and [json.loads(x)["key"] for x in lines] == sorted(before)
    assert ledger.entries(sweep) == before
    assert ledger.entry(sweep, points[2])["run_dir"].endswith("run-2")
    assert ledger.entry(sweep, ["seed=9"]) is None
    assert ledger.index(tmp_path) == {tuple(sorted(p)): {f"run-{i}"} for i, p in enumerate(points)}
    assert not ledger.write_packed(sweep, before)  # packed already: nothing written

    # a relaunch writes an entry file again: it wins over the packed line, and packing merges
    ledger.write_entry(sweep, points[0], status="failed", error="killed")
    assert ledger.entry(sweep, points[0])["status"] == "failed"
    ledger.pack(sweep)
    after = ledger.entries(sweep)
    assert len(after) == 4 and after[ledger.entry_key(points[0])]["status"] == "failed"

    # a damaged packed line is reported, not fatal
    (sweep / "jobs.jsonl").write_text((sweep / "jobs.jsonl").read_text() + "not json\n")
    assert ledger.entries(sweep)["jobs.jsonl:5"]["status"] == "unreadable"
