"""The published results (``results/paper``, the replication, and the other roots under
``results/``): their tables regenerate byte-identically from their records, and their audits
pass (no re-runs here: they are hours of distillation)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_helpers import REPO, run_cli

RESULTS = REPO / "results" / "paper"
TABLES = RESULTS / "tables"
#: Every published results root, and those of them with tables.
ROOTS = sorted(p.name for p in (REPO / "results").iterdir() if (p / "distill").is_dir())
WITH_TABLES = [r for r in ROOTS if (REPO / "results" / r / "tables" / "manifest.json").is_file()]


def test_every_results_root_is_checked():
    assert {"paper", "sampled-items", "learned-lr", "learners-tuned", "evaluation-epochs", "evaluation-seeds",
            "validate-learners"} <= set(ROOTS)
    assert {"paper", "learned-lr", "learners-tuned", "evaluation-epochs"} <= set(WITH_TABLES)


@pytest.mark.parametrize("root", ROOTS)
def test_every_results_root_is_committed(root):
    """.gitignore keeps results/* out but the published roots: a root published without an
    exception of its own passes every other test on the machine that made it, and is missing
    from every clone."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = [p for p in (REPO / "results" / root).rglob("*") if p.is_file() or p.is_symlink()]
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, capture_output=True,
                          text=True, input="\n".join(str(p.relative_to(REPO)) for p in files))
    assert files and proc.returncode in (0, 1) and not proc.stdout.strip(), proc.stdout[:2000] or proc.stderr


@pytest.mark.parametrize("root", WITH_TABLES)
def test_published_tables_regenerate_byte_identically(tmp_path, root):
    tables = REPO / "results" / root / "tables"
    manifest = json.loads((tables / "manifest.json").read_text())
    command = list(manifest["command"][2:])
    command[command.index("--out") + 1] = str(tmp_path)
    proc = subprocess.run([sys.executable, "analysis/make_tables.py", *command], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    regenerated = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(regenerated["files"]) == sorted(manifest["files"])
    assert manifest["complete"] == regenerated["complete"] > 0
    same_renderer = regenerated["versions"]["matplotlib"] == manifest["versions"]["matplotlib"]
    for name, digest in manifest["files"].items():
        if name.endswith(".png") and not same_renderer:
            continue  # another matplotlib draws other bytes; every number is in the text files
        assert (tables / name).read_bytes() == (tmp_path / name).read_bytes(), name
        assert regenerated["files"][name] == digest, name


@pytest.mark.parametrize("root", ROOTS)
def test_published_results_pass_the_audit(root):
    proc = run_cli("td3.audit", str(REPO / "results" / root), env=None, timeout=900)
    assert proc.returncode == 0 and "verdict: PASS" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_published_results_are_small_and_whole():
    """Under the 50 MB a repository can carry (links counted once), every cell of 3 seeds,
    and Table 5 in size order with each variant on its own row."""
    # on disk, as `du` counts it (whole blocks: a small file takes one), all of results/;
    # 50 MB = 50 * 10**6 bytes
    on_disk = sum(p.lstat().st_blocks * 512 for p in RESULTS.parent.rglob("*"))
    assert on_disk < 50e6, f"{on_disk / 1e6:.1f} MB"
    assert not list(RESULTS.rglob("run.log")), "run logs stay in the sweep's results root"
    assert not list(RESULTS.rglob("per_user.parquet")), "per-user metrics are published packed"
    from td3 import records

    # a run's sealed files (its directory's, not the tables') are withheld over the limit
    large = [p for p in RESULTS.parent.glob("*/*/*/*") if p.is_file() and p.parent.parent.name in ("distill", "train")
             and p.stat().st_size > records.PUBLISH_LIMIT]
    assert not large, large  # withheld instead (<name>.withheld: its digest and size)
    assert any(p.name == "summary.pt" for p in RESULTS.parent.glob("*/distill/*/*")), "the glob above sees no run file"
    assert list(RESULTS.rglob("summary.pt.withheld"))
    tables = (TABLES / "tables.md").read_text()
    assert "None: every run of every recorded sweep is complete." in tables
    # no cell of the paper's tables with fewer than 3 seeds; the experiments beyond the paper
    # (the item table, several learners, Magazine-2018's outer-loop settings) are published
    # seed by seed as they complete
    beyond = ("trainable", "learners=", "min_steps=", "outer_epochs=", "outer_lr=")
    partial = [line for line in tables.splitlines() if "(n=" in line]
    assert all(any(b in line.split(" | ")[1] for b in beyond) for line in partial), partial
    rows = [line.split(" | ")[:2] for line in (TABLES / "table5.md").read_text().splitlines()
            if line.startswith("| ml-1m-slice")]
    assert [size for _, size in rows] == ["50x50", "100x50", "200x50", "200x100"]
    ml100k = [line.split(" | ")[1] for line in (TABLES / "table5.md").read_text().splitlines()
              if line.startswith("| ml-100k")]
    assert ml100k[0] == "30x50" and ml100k.index("30x50") < ml100k.index("50x50") < ml100k.index("25x150")
    assert "50x50 (d1=16 d2=16)" in ml100k and ml100k[-1] == "25x150"
