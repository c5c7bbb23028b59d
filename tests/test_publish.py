"""``python -m td3.publish``: the committable part of a real (small) sweep's results root.

It copies complete runs' records and small files (never teachers, pools or checkpoints),
the ledgers of sweeps whose grid is complete only, and the result audits clean; a second
publish copies nothing, and a published record is never replaced by another one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import files_under, run_cli

from test_sweep import make_env


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    env = make_env(root)
    proc = run_cli("td3.sweep", "-m", "+sweep=smoke", "threads=1", env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the smoke sweep's seed-0 summary evaluated under the other protocol: a second copy of it
    other = run_cli("td3.distill", "+sweep=smoke", "threads=1", "seed=0", "evaluation.protocol=paper", env=env,
                    timeout=900)
    assert other.returncode == 0, other.stderr[-3000:]
    # a second sweep with an impossible point: its grid never completes
    bad = run_cli("td3.sweep", "-m", "+sweep=smoke", "threads=1", "seed=7", "summary.d1=20", env=env, timeout=900)
    assert bad.returncode == 1, bad.stderr[-3000:]
    return root / "runs", env


def publish(src: Path, dst: Path, env: dict):
    return run_cli("td3.publish", str(src), str(dst), env=env, timeout=600)


def published_td3_run(sweep, tmp_path):
    """The sweep published into ``tmp_path/paper``: (source root, env, published root, a TD3 run in it)."""
    src, env = sweep
    dst = tmp_path / "paper"
    assert publish(src, dst, env).returncode == 0
    return src, env, dst, next(dst.glob("distill/*td3*/record.json")).parent


@pytest.mark.slow
def test_publish_copies_the_small_complete_part_and_audits_clean(sweep, tmp_path):
    src, env = sweep
    dst = tmp_path / "paper"
    proc = publish(src, dst, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {p.name for p in files_under(dst)}
    assert {"record.json", "per_user.parquet.xz", "summary.pt", "summary.inter.xz", "distill.json.xz",
            "multirun.yaml"} <= names
    assert "config.json" not in names  # the record's config, to the byte: left to the record
    assert not names & {"per_user.parquet", "summary.inter", "distill.json"}  # stored packed: the same bytes, xz-compressed
    assert "run.log" not in names  # stays in the sweep's own results root
    assert not names & {"best.pt", "last.pt", "state.pt"} and not list(dst.rglob("pool"))
    assert not list(dst.rglob(".submitit"))
    # complete runs only: the smoke sweep's 4, the paper-protocol run, its teacher, the random run of
    # seed 7; not the failed td3 one
    published = [json.loads(p.read_text()) for p in dst.glob("*/*/record.json")]
    assert all(r["status"] == "complete" for r in published)
    assert len([r for r in published if r["kind"] == "distill"]) == 6
    failed = [p for p in src.glob("distill/*/record.json") if json.loads(p.read_text())["status"] == "failed"]
    assert len(failed) == 1 and not (dst / "distill" / failed[0].parent.name).exists()
    # one sweep complete (published), one not (its ledger left out)
    assert len(list(dst.glob("sweeps/*/*/multirun.yaml"))) == 1
    assert "1 complete sweeps (1 still running)" in proc.stdout
    # its ledger packed into one file, holding every entry of the source's
    from td3 import ledger
    (sweep_dir,) = [p.parent for p in dst.glob("sweeps/*/*/multirun.yaml")]
    assert (sweep_dir / "jobs.jsonl").is_file() and not (sweep_dir / "jobs").exists()
    source_entries = ledger.entries(src / sweep_dir.relative_to(dst))
    assert len(source_entries) == 4 and ledger.entries(sweep_dir) == source_entries
    # the two protocols' runs of one summary hold one file: the second links to the first
    links = [p for p in dst.glob("distill/*/summary.*") if p.is_symlink()]
    assert sorted(p.name for p in links) == ["summary.inter.xz", "summary.pt"] and all(p.read_bytes() == (p.parent / p.readlink()).read_bytes() for p in links)
    assert all(str(p.readlink()).startswith("../") for p in links)
    audit = run_cli("td3.audit", str(dst), env=env, timeout=600)
    assert audit.returncode == 0 and "verdict: PASS" in audit.stdout, audit.stdout[-3000:]
    # again: nothing new to copy
    again = publish(src, dst, env)
    assert again.returncode == 0 and "(0 files copied" in again.stdout, again.stdout


@pytest.mark.slow
def test_a_published_record_is_not_replaced(sweep, tmp_path):
    src, env = sweep
    dst = tmp_path / "paper"
    assert publish(src, dst, env).returncode == 0
    target = next(dst.glob("distill/*td3*/record.json"))
    record = json.loads(target.read_text())
    record["seal"] = "0" * 64   # another record of the same run, with other figures
    record["metrics"]["test"]["recbole100"]["NDCG@10"] += 0.01
    target.write_text(json.dumps(record))
    proc = publish(src, dst, env)
    assert proc.returncode == 2 and "already holds another record" in proc.stderr
    assert json.loads(target.read_text())["seal"] == "0" * 64


@pytest.mark.slow
def test_a_run_made_again_with_the_same_result_keeps_its_published_record(sweep, tmp_path):
    """A shared teacher or full-data run made again elsewhere (other timings, commit, host)
    with the same figures and files does not stop a publish: the published record stays."""
    from td3 import records
    src, env = sweep
    dst = tmp_path / "paper"
    assert publish(src, dst, env).returncode == 0
    target = next(dst.glob("train/*/record.json"))
    again = json.loads(target.read_text())
    again.update(finished="2030-01-01T00:00:00+0000", git={"sha": "f" * 40, "dirty": False},
                 timings={**again["timings"], "total": again["timings"]["total"] + 100.0})
    again["seal"] = records.seal_of(again)
    target.write_text(json.dumps(again))   # the published one is now "another session's" record
    proc = publish(src, dst, env)
    assert proc.returncode == 0, proc.stderr
    assert f"kept: {target.parent}" in proc.stdout and '"reproduced": 1' in proc.stdout
    assert json.loads(target.read_text())["seal"] == again["seal"]
    # the same record with another file's digest is another result
    again["files"] = {**again["files"], "per_user.parquet": "0" * 64}
    again["seal"] = records.seal_of(again)
    target.write_text(json.dumps(again))
    proc = publish(src, dst, env)
    assert proc.returncode == 2 and "already holds another record" in proc.stderr


@pytest.mark.slow
def test_packed_files_hold_the_sealed_bytes_and_an_edit_is_caught(sweep, tmp_path):
    import lzma

    import pandas as pd

    from td3 import records

    src, env, dst, run = published_td3_run(sweep, tmp_path)
    source = src / "distill" / run.name
    # the packed file unpacks to the run's own bytes, and reads as its metrics
    assert records.read_sealed(run, "per_user.parquet") == (source / "per_user.parquet").read_bytes()
    frame = records.read_per_user(run)
    pd.testing.assert_frame_equal(frame, pd.read_parquet(source / "per_user.parquet"))
    assert records.seal_problem(run, records.read_record(run)) == ""
    # one value changed, packed again: the seal names it, and the audit fails
    frame.loc[0, "value"] = 1.0 - frame.loc[0, "value"]
    frame.to_parquet(tmp_path / "edited.parquet", index=False)
    (run / "per_user.parquet.xz").write_bytes(lzma.compress((tmp_path / "edited.parquet").read_bytes()))
    assert records.seal_problem(run, records.read_record(run)) == \
        "per_user.parquet was changed after the record was written"
    audit = run_cli("td3.audit", str(dst), env=env, timeout=600)
    assert audit.returncode == 1 and "per_user.parquet changed after the record was written" in audit.stdout, \
        audit.stdout[-3000:]


@pytest.mark.slow
def test_repack_withholds_the_files_a_lowered_size_limit_leaves_out(sweep, tmp_path, monkeypatch):
    """A root published under a larger limit: --repack replaces each sealed file now over
    ``records.PUBLISH_LIMIT`` (and every link to one) by its stand-in, which carries the
    record's digest; the audit then warns of it and passes."""
    from td3 import publish as publish_module
    from td3 import records

    src, env, dst, run = published_td3_run(sweep, tmp_path)
    summaries = sorted(p for p in dst.glob("distill/*/summary.pt"))
    assert summaries and not list(dst.rglob("*.withheld"))
    size = max(p.stat().st_size for p in summaries)
    monkeypatch.setattr(records, "PUBLISH_LIMIT", size - 1)
    over = [p for p in summaries if p.stat().st_size > size - 1]  # links: their target's size
    counts = publish_module.repack(dst)
    assert counts["withheld"] == len(over) > 0
    for path in over:
        assert not path.exists() and not path.is_symlink()
        stand_in = json.loads(path.with_name("summary.pt.withheld").read_text())
        assert stand_in["sha256"] == records.read_record(path.parent)["files"]["summary.pt"]
        assert stand_in["bytes"] == size
    assert not [p for p in dst.rglob("*") if p.is_symlink() and not p.exists()]  # no link left dangling
    assert publish_module.repack(dst)["withheld"] == 0  # once
    audit = run_cli("td3.audit", str(dst), env=env, timeout=600)
    assert audit.returncode == 0 and "withheld from this root" in audit.stdout, audit.stdout[-3000:]


@pytest.mark.slow
def test_the_size_limit_is_on_the_file_as_stored(sweep, tmp_path, monkeypatch):
    """A packed file is withheld only when its packed copy is over the limit, however large
    the run wrote it; publishing again under another limit leaves one form of each file:
    the packed copy or the stand-in, never both."""
    import lzma

    from td3 import publish as publish_module
    from td3 import records

    src, env, dst, run = published_td3_run(sweep, tmp_path)
    default_limit = records.PUBLISH_LIMIT
    raw = (src / "distill" / run.name / "per_user.parquet").stat().st_size
    packed = (run / "per_user.parquet.xz").stat().st_size
    assert packed < raw
    # between the two sizes: still published packed, nothing withheld
    monkeypatch.setattr(records, "PUBLISH_LIMIT", (packed + raw) // 2)
    publish_module.publish(src, dst)
    assert (run / "per_user.parquet.xz").is_file() and not (run / "per_user.parquet.withheld").exists()
    # below the packed size: withheld, with the size the run wrote, and the packed copy gone
    monkeypatch.setattr(records, "PUBLISH_LIMIT", packed - 1)
    publish_module.publish(src, dst)
    stand_in = json.loads((run / "per_user.parquet.withheld").read_text())
    assert stand_in["bytes"] == raw and not (run / "per_user.parquet.xz").exists()
    assert stand_in["sha256"] == records.read_record(run)["files"]["per_user.parquet"]
    # the limit raised again: packed once more, the stand-in removed
    monkeypatch.setattr(records, "PUBLISH_LIMIT", default_limit)
    publish_module.publish(src, dst)
    assert not (run / "per_user.parquet.withheld").exists()
    assert lzma.decompress((run / "per_user.parquet.xz").read_bytes()) == (src / "distill" / run.name / "per_user.parquet").read_bytes()
    # repack applies the limit to the packed copy as well
    monkeypatch.setattr(records, "PUBLISH_LIMIT", packed - 1)
    assert publish_module.repack(dst)["withheld"] >= 1
    assert (run / "per_user.parquet.withheld").is_file() and not (run / "per_user.parquet.xz").exists()
    assert json.loads((run / "per_user.parquet.withheld").read_text())["bytes"] == raw


def test_records_are_published_on_one_line_and_a_root_repacks_in_place(sweep, tmp_path):
    from td3 import records

    src, env, dst, run = published_td3_run(sweep, tmp_path)
    source = records.read_record(src / "distill" / run.name)
    text = (run / "record.json").read_text()
    # the run's record, content for content, on one line: its seal holds
    assert text.count("\n") == 1 and json.loads(text) == source
    assert records.seal_problem(run, records.read_record(run)) == ""
    # a root published laid out (as before) is stored on one line by --repack, seals intact
    laid_out = [p for p in dst.glob("*/*/record.json")]
    for p in laid_out:
        p.write_text(json.dumps(json.loads(p.read_text()), indent=2) + "\n")
    proc = run_cli("td3.publish", "--repack", str(dst), env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(laid_out)} of {len(laid_out)} records stored anew (0 refused)" in proc.stdout
    assert all(p.read_text().count("\n") == 1 for p in laid_out)
    again = run_cli("td3.publish", "--repack", str(dst), env=env, timeout=600)
    assert again.returncode == 0 and f"0 of {len(laid_out)} records stored anew" in again.stdout
    # a publish from the source finds nothing to copy in the repacked root
    assert "(0 files copied" in publish(src, dst, env).stdout
    # an edited record is refused, named, and left as it is
    edited = json.loads(text)
    edited["metrics"] = {}
    (run / "record.json").write_text(json.dumps(edited, indent=2))
    proc = run_cli("td3.publish", "--repack", str(dst), env=env, timeout=600)
    assert proc.returncode == 1 and f"not repacked: {run / 'record.json'}" in proc.stdout
    assert json.loads((run / "record.json").read_text()) == edited and (run / "record.json").read_text().count("\n") > 1
    audit = run_cli("td3.audit", str(dst), env=env, timeout=600)
    assert audit.returncode == 1 and "seal mismatch" in audit.stdout


@pytest.mark.slow
def test_a_sweep_is_published_alone_with_the_teachers_its_runs_name(sweep, tmp_path):
    src, env = sweep
    everything = tmp_path / "all"
    assert publish(src, everything, env).returncode == 0
    dst = tmp_path / "smoke"
    proc = run_cli("td3.publish", str(src), str(dst), "--sweep", "smoke", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {p.parent.relative_to(dst).as_posix() for p in dst.glob("*/*/record.json")}
    every = {p.parent.relative_to(everything).as_posix() for p in everything.glob("*/*/record.json")}
    # the paper-protocol run was launched by td3.distill, outside any sweep: left out; the rest is here
    protocol = {r for r in every if json.loads((everything / r / "record.json").read_text())
                ["config"].get("evaluation", {}).get("protocol") == "paper"}
    assert len(protocol) == 1 and runs == every - protocol
    teachers = {r for r in runs if r.startswith("train/")}
    assert teachers and all(json.loads((dst / r / "record.json").read_text())["kind"] == "train" for r in teachers)
    audit = run_cli("td3.audit", str(dst), env=env, timeout=600)
    assert audit.returncode == 0 and "verdict: PASS" in audit.stdout, audit.stdout[-3000:]
    # a sweep the root does not hold: one clear error, nothing written
    proc = run_cli("td3.publish", str(src), str(tmp_path / "none"), "--sweep", "nosuch", env=env, timeout=600)
    assert proc.returncode == 2 and "no sweep named 'nosuch'" in proc.stderr and not (tmp_path / "none").exists()


@pytest.mark.slow
def test_a_restored_summary_is_evaluated_again_without_distilling(sweep, tmp_path):
    """``python -m td3.restore``: a published root's summaries back into a new results root's
    cache; the seed-0 run there (its teacher trained again, no checkpoint of the
    distillation anywhere) evaluates the restored summary and gives the original's figures."""
    import shutil

    from test_sweep import records_under

    src, env, dst, _ = published_td3_run(sweep, tmp_path)
    fresh = tmp_path / "fresh"
    env_fresh = make_env(fresh)
    restored = run_cli("td3.restore", str(dst), str(fresh / "runs"), env=env_fresh, timeout=300)
    # seeds 0 and 1's TD3 summaries (the paper-protocol run evaluated seed 0's too)
    assert restored.returncode == 0 and "2 summaries restored" in restored.stdout, restored.stdout + restored.stderr
    again = run_cli("td3.distill", "+sweep=smoke", "threads=1", "seed=0", "method=td3", env=env_fresh, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    (name, record), = records_under(fresh).items()
    original = json.loads((src / "distill" / name / "record.json").read_text())
    assert record["distill"]["cached"] is True and original["distill"]["cached"] is False
    assert record["distill"]["best_step"] == original["distill"]["best_step"]
    assert record["metrics"] == original["metrics"]
    assert (fresh / "runs" / "distill" / name / "summary.pt").read_bytes() == \
        (src / "distill" / name / "summary.pt").read_bytes()
    assert not list((fresh / "runs").rglob("state.pt"))
    second = run_cli("td3.restore", str(dst), str(fresh / "runs"), env=env_fresh, timeout=300)
    assert second.returncode == 0 and "0 summaries restored" in second.stdout and "2 already there" in second.stdout

    # a summary changed after its record was written is refused, naming it; nothing is restored
    edited = tmp_path / "edited"
    shutil.copytree(dst, edited, symlinks=True)
    run = next(p.parent for p in edited.glob("distill/*td3*/summary.pt") if not p.is_symlink())
    (run / "summary.pt").write_bytes((run / "summary.pt").read_bytes() + b"\0")
    other = tmp_path / "other"
    refused = run_cli("td3.restore", str(edited), str(other / "runs"), env=make_env(other), timeout=300)
    assert refused.returncode == 2 and f"{run.name}: summary.pt was changed after the record was written" in \
        refused.stderr, refused.stderr
    assert not list(other.rglob("distill.json")) and not list(other.rglob("summary.pt"))


@pytest.mark.slow
def test_config_json_is_left_to_the_record_and_still_checked(sweep, tmp_path):
    """A published run keeps no config.json: it is its record's config as canonical JSON, so
    ``records.read_sealed`` rebuilds the run's bytes and the digest the record seals checks
    them; a root published with the files is thinned by --repack; a record whose config is
    changed no longer matches that digest."""
    from td3 import publish as publish_module
    from td3 import records

    src, env, dst, run = published_td3_run(sweep, tmp_path)
    source = src / "distill" / run.name
    assert (source / "config.json").is_file() and not (run / "config.json").exists()
    assert records.read_sealed(run, "config.json") == (source / "config.json").read_bytes()
    assert records.sealed_sha256(run, "config.json") == records.read_record(run)["files"]["config.json"]
    # a root published before: --repack leaves every copy out, and counts them
    published = [p.parent for p in dst.glob("*/*/record.json")]
    for run_dir in published:
        (run_dir / "config.json").write_bytes((src / run_dir.relative_to(dst) / "config.json").read_bytes())
    counts = publish_module.repack(dst)
    assert counts["derived"] == len(published) > 0 and not list(dst.rglob("config.json"))
    assert publish_module.repack(dst)["derived"] == 0
    # a record whose config was changed (and sealed again): the rebuilt config.json is not the
    # one the run wrote, and its digest says so
    record = records.read_record(run)
    record["config"]["seed"] += 1
    record["seal"] = records.seal_of(record)
    (run / "record.json").write_text(json.dumps(record))
    assert records.seal_problem(run, record) == "config.json was changed after the record was written"
    audit = run_cli("td3.audit", str(dst), env=env, timeout=600)
    assert audit.returncode == 1 and f"{run}: config.json changed after the record was written" in audit.stdout, \
        audit.stdout[-3000:]
