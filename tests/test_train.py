"""Full-data training through the real command line: records, skip, resume, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import IMPORT_LOG, assert_no_compiler_import, assert_one_clear_error, files_under, run_cli
import torch

REPO = Path(__file__).resolve().parents[1]
# A small synthetic problem: ~5 s per run on 2 cores.
SMALL = ["dataset.num_users=200", "dataset.num_items=300", "max_len=20", "train.epochs=12",
         "train.patience=100", "train.pool_epochs=[2,4]", "progress=false", "threads=1"]


def td3(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("td3.train", *args, **kwargs)


@pytest.fixture
def env(tmp_path, shared_datasets):
    e = {k: v for k, v in os.environ.items() if not k.startswith("TD3_")}
    e.update(TD3_DATA_DIR=str(tmp_path / "data"), TD3_RESULTS_DIR=str(tmp_path / "runs"),
             TD3_DATA_MIRROR=str(shared_datasets), PYTHONPATH=str(REPO))
    return e



def test_record_has_everything_and_beats_popularity(env, tmp_path):
    proc = td3(*SMALL, env={**env, **IMPORT_LOG}, check=True)
    assert_no_compiler_import(proc)  # full-data training with Adam, deterministic algorithms on
    record_path = Path(proc.stdout.strip().splitlines()[-1])
    assert record_path.name == "record.json" and record_path.is_file()
    record = json.loads(record_path.read_text())

    assert record["status"] == "complete" and record["kind"] == "train"
    assert record["config"]["dataset"]["num_users"] == 200 and record["seed"] == 0
    assert len(record["dataset"]["sha256"]) == 64
    assert record["packages"]["torch"] == torch.__version__
    assert {"data", "train", "valid", "test", "total", "seconds_per_epoch"} <= set(record["timings"])
    assert record["peak_memory_mb"] > 50
    for split in ("valid", "test"):
        assert list(record["metrics"][split]) == ["recbole100", "unseen100", "full"]
        for protocol in ("recbole100", "unseen100", "full"):
            m = record["metrics"][split][protocol]
            assert set(m) == {f"{n}@{k}" for n in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}
            assert all(0.0 <= v <= 1.0 for v in m.values())
            assert m["HR@5"] <= m["HR@10"] <= m["HR@20"]
            assert m["MRR@10"] <= m["NDCG@10"] <= m["HR@10"]
    # Sampled ranking is easier than ranking against every item, and negatives the user
    # never saw are easier than RecBole's (which may hold the user's own earlier items).
    test = record["metrics"]["test"]
    assert test["unseen100"]["NDCG@10"] > test["recbole100"]["NDCG@10"] > test["full"]["NDCG@10"]
    # The learner uses the sequential structure: far above the most-popular ranking.
    pop = record["reference"]["popularity"]["test"]["recbole100"]["NDCG@10"]
    assert record["metrics"]["test"]["recbole100"]["NDCG@10"] > 2 * pop

    run_dir = record_path.parent
    assert record["signature"] in run_dir.name
    assert sorted(record["checkpoints"]["pool"]) == ["pool/epoch_002.pt", "pool/epoch_003.pt", "pool/epoch_004.pt"]
    assert (run_dir / "best.pt").is_file() and not (run_dir / "last.pt").exists()
    per_user = pd.read_parquet(run_dir / record["per_user"])
    assert len(per_user) == 200 * 3 * 9 * 2  # users × protocols × metrics × splits
    test_ndcg = per_user.query("split == 'test' and protocol == 'recbole100' and metric == 'NDCG@10'")
    assert test_ndcg["value"].mean() == pytest.approx(record["metrics"]["test"]["recbole100"]["NDCG@10"])

    # Relaunching a complete run does nothing and points at the same record.
    mtime = record_path.stat().st_mtime_ns
    again = td3(*SMALL, "threads=2", env=env, check=True)  # threads do not change the signature
    assert Path(again.stdout.strip().splitlines()[-1]) == record_path
    assert record_path.stat().st_mtime_ns == mtime
    # A config that changes results is another run.
    other = td3(*SMALL, "seed=1", env=env, check=True)
    assert Path(other.stdout.strip().splitlines()[-1]) != record_path


def test_killed_run_resumes_to_the_same_result(env, tmp_path):
    args = [*SMALL, "train.epochs=8"]
    reference_env = {**env, "TD3_RESULTS_DIR": str(tmp_path / "reference")}
    reference = json.loads(Path(td3(*args, env=reference_env, check=True).stdout.strip().splitlines()[-1]).read_text())

    proc = subprocess.Popen([sys.executable, "-m", "td3.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = tmp_path / "runs" / "train"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        lasts = list(runs.glob("*/last.pt"))
        if lasts and torch.load(lasts[0], weights_only=False)["state"]["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(next(runs.glob("*/last.pt")), weights_only=False)["state"]["epoch"]
    assert 3 <= killed_at < 8
    assert not list(runs.glob("*/record.json"))

    resumed_path = Path(td3(*args, env=env, check=True).stdout.strip().splitlines()[-1])
    resumed = json.loads(resumed_path.read_text())
    assert resumed["metrics"] == reference["metrics"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in reference["history"]]
    ref_best = torch.load(Path(reference_env["TD3_RESULTS_DIR"]) / "train" / resumed_path.parent.name / "best.pt")
    res_best = torch.load(resumed_path.parent / "best.pt")
    assert all(torch.equal(ref_best[k], res_best[k]) for k in ref_best)


def test_sigterm_stops_after_the_epoch_and_the_run_resumes_to_the_same_result(env, tmp_path):
    args = [*SMALL, "train.epochs=8"]
    reference_env = {**env, "TD3_RESULTS_DIR": str(tmp_path / "reference")}
    reference = json.loads(Path(td3(*args, env=reference_env, check=True).stdout.strip().splitlines()[-1]).read_text())
    proc = subprocess.Popen([sys.executable, "-m", "td3.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs" / "train"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(runs.glob("*/last.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("td3: stopped by SIGTERM after training epoch ")
    resumed = json.loads(Path(td3(*args, env=env, check=True).stdout.strip().splitlines()[-1]).read_text())
    assert resumed["metrics"] == reference["metrics"]


def test_a_record_edited_by_hand_is_not_trusted_and_a_damaged_one_is_said(env, tmp_path):
    args = [*SMALL, "train.epochs=2", "train.pool_epochs=[1,2]"]
    record_path = Path(td3(*args, env=env, check=True).stdout.strip().splitlines()[-1])
    record = json.loads(record_path.read_text())
    record["metrics"]["test"]["recbole100"]["NDCG@10"] = 0.99          # a better number, by hand
    record_path.write_text(json.dumps(record))
    edited = record_path.read_bytes()
    proc = td3(*args, env=env)
    assert_one_clear_error(proc, str(record_path.parent), "seal")
    assert record_path.read_bytes() == edited                          # refused, not overwritten
    record_path.write_bytes(edited[:200])                              # truncated
    again = td3(*args, env=env, check=True)
    assert "cannot be read" in again.stderr and str(record_path) in again.stderr
    assert json.loads(record_path.read_text())["status"] == "complete"  # run again, whole


def test_a_second_launch_of_a_running_config_says_it_waits(env):
    args = [*SMALL, "train.epochs=40"]
    first = subprocess.Popen([sys.executable, "-m", "td3.train", *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = Path(env["TD3_RESULTS_DIR"]) / "train"
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/last.pt")):
        time.sleep(0.05)
    # Hold the first run (and its lock) still until the second has said it waits: training
    # can finish faster than a second process imports torch, which made the test a race.
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.Popen([sys.executable, "-m", "td3.train", *args], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = []
        deadline = time.time() + 120
        while time.time() < deadline and not any("waiting for" in line for line in said):
            line = second.stderr.readline()
            if not line:  # the second run ended without waiting
                break
            said.append(line)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = second.communicate(timeout=300)
    first.communicate(timeout=300)
    stderr = "".join(said) + err
    assert first.returncode == 0 and second.returncode == 0, stderr
    assert "waiting for" in stderr and "another process is making it" in stderr
    assert out.strip().splitlines()[-1].endswith("record.json")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("module, override, needles", [
    ("td3.train", "nosuchkey=1", ["unknown setting 'nosuchkey'", "+nosuchkey="]),
    ("td3.train", "model=sasrek", ["unknown model 'sasrek'", "known: bert4rec, gru4rec, narm, sasrec"]),
    ("td3.distill", "dataset=foo", ["unknown dataset 'foo'", "ml-100k"]),
    ("td3.train", "train.lr=fast", ["train.lr='fast'", "expected a number"]),
    ("td3.distill", "summary.mu=ten", ["summary.mu='ten'", "expected an integer"]),
    ("td3.distill", "distill.steps=12.5", ["distill.steps='12.5'", "expected an integer"]),
    ("td3.distill", "distill.inner.alt=maybe", ["distill.inner.alt='maybe'", "true or false"]),
])
def test_bad_overrides_get_one_line(env, tmp_path, module, override, needles):
    """Hydra's own report is several lines and exit 1, a wrongly typed value a TypeError deep
    in the run: each is one td3 line and exit 2, before any work."""
    proc = run_cli(module, override, "progress=false", env=env, timeout=120)
    assert_one_clear_error(proc, *needles)
    assert files_under(tmp_path / "runs") == [] and files_under(tmp_path / "data") == []


@pytest.mark.parametrize("module, words", [("td3.train", ["Full-data training", "model="]),
                                           ("td3.distill", ["method=", "td3.sweep"])])
def test_help_says_what_the_command_does(module, words):
    proc = run_cli(module, "--help", env=None, timeout=120)
    assert proc.returncode == 0
    for needle in [*words, "Main choices", "dataset=", "TD3_RESULTS_DIR", "Examples", f"python -m {module} "]:
        assert needle in proc.stdout, needle
    assert "== Configuration groups ==" not in proc.stdout and "sweep/ray" not in proc.stdout


def test_unknown_dataset(env, tmp_path):
    proc = td3("dataset.name=no-such-data", env=env)
    assert_one_clear_error(proc, "no-such-data", "ml-100k")
    assert files_under(tmp_path / "runs") == []


def test_malformed_file_names_file_and_line(env, tmp_path):
    bad = tmp_path / "bad.inter"
    bad.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\n1\t4\t5\n")
    proc = td3("dataset=custom", f"dataset.path={bad}", "dataset.format=atomic", env=env)
    assert_one_clear_error(proc, "bad.inter", ":3")
    assert files_under(tmp_path / "runs") == []


def test_wrong_checksum_leaves_nothing(env, tmp_path, shared_datasets):
    mirror = tmp_path / "mirror" / "ml-100k"
    mirror.mkdir(parents=True)
    data = bytearray((shared_datasets / "ml-100k" / "ml-100k.inter").read_bytes())
    data[-3] ^= 1  # one flipped bit in the last row
    (mirror / "ml-100k.inter").write_bytes(bytes(data))
    proc = td3("dataset=ml-100k", env={**env, "TD3_DATA_MIRROR": str(tmp_path / "mirror")})
    assert_one_clear_error(proc, "ml-100k.inter", "sha256")
    assert files_under(tmp_path / "data") == [] and files_under(tmp_path / "runs") == []


@pytest.mark.parametrize("override, needle", [
    ("max_len=1", "max_len"),
    ("train.stride=0", "train.stride"),
    ("train.pool_epochs=[5,2]", "pool_epochs"),
    ("train.pool_epochs=[2]", "pool_epochs"),   # one epoch, not [first, last]
    ("model.num_heads=3", "head"),
    ("model=narm", "model.hidden_dropout"),  # an option of another model: an unknown key
])
def test_impossible_config(env, tmp_path, override, needle):
    args = [*SMALL, override] + (["+model.hidden_dropout=0.1"] if override == "model=narm" else [])
    proc = td3(*args, env=env)
    assert_one_clear_error(proc, needle.split(".")[-1])
    assert files_under(tmp_path / "runs") == []


def test_a_results_directory_that_cannot_be_written(env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = td3(*SMALL, env={**env, "TD3_RESULTS_DIR": str(blocker / "runs")})
    assert_one_clear_error(proc, "cannot write", str(blocker))
    assert blocker.read_text() == "not a directory"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 200 KB tmpfs: room for a checkpoint or two of SMALL's model, not for a run."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root in a privileged container is needed): {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_gives_one_line_and_leaves_nothing_half_written(env, tiny_disk):
    proc = td3(*SMALL, env={**env, "TD3_RESULTS_DIR": str(tiny_disk / "runs")})
    line = assert_one_clear_error(proc, "cannot write", "No space left on device")
    assert str(tiny_disk) in line and ".tmp" not in line          # names the file, not its temporary
    files = files_under(tiny_disk)
    assert not [p for p in files if p.name.endswith(".tmp")]
    for checkpoint in (p for p in files if p.suffix == ".pt"):    # what was written is whole
        assert isinstance(torch.load(checkpoint, weights_only=False), dict)
    assert not [p for p in files if p.name == "record.json"]


def test_dataset_too_small(env, tmp_path):
    # 120 items, but each user needs 100 never-seen items as negatives.
    proc = td3(*SMALL, "dataset.num_items=120", env=env)
    assert_one_clear_error(proc, "100")
    assert not (tmp_path / "runs").exists()   # not even an empty results/train directory


def test_diverging_run_fails_with_a_record(env, tmp_path):
    proc = td3(*SMALL, "train.lr=1e30", env=env)
    assert_one_clear_error(proc, "non-finite", "epoch")
    record = json.loads(next((tmp_path / "runs").rglob("record.json")).read_text())
    assert record["status"] == "failed" and "non-finite" in record["error"]


def test_corrupt_resume_checkpoint(env, tmp_path):
    args = [*SMALL, "train.epochs=2"]
    run_dir = Path(td3(*args, env=env, check=True).stdout.strip().splitlines()[-1]).parent
    (run_dir / "record.json").unlink()
    (run_dir / "last.pt").write_bytes(b"not a checkpoint")
    proc = td3(*args, env=env)
    assert_one_clear_error(proc, "last.pt")


def test_identical_runs_write_identical_files(env, tmp_path):
    """Two runs of one config in two results roots: checkpoints and per-user metrics are
    the same bytes (torch names a saved archive after its file name unless given a file
    object, so the atomic write's temporary name would otherwise differ in every file)."""
    dirs = []
    for name in ("a", "b"):
        root_env = {**env, "TD3_RESULTS_DIR": str(tmp_path / name)}
        path = Path(td3(*SMALL, "train.epochs=3", "train.pool_epochs=[2,3]", env=root_env,
                        check=True).stdout.strip().splitlines()[-1])
        dirs.append(path.parent)
    for rel in ("best.pt", "pool/epoch_002.pt", "pool/epoch_003.pt", "per_user.parquet"):
        assert (dirs[0] / rel).read_bytes() == (dirs[1] / rel).read_bytes(), rel
    one, two = (json.loads((d / "record.json").read_text()) for d in dirs)
    assert one["signature"] == two["signature"]   # config.json differs: it names its results root
    assert one["files"]["per_user.parquet"] == two["files"]["per_user.parquet"]
