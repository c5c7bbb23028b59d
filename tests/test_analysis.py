"""The analysis: statistics against scipy's own tests, and make_tables.py on records whose
numbers are known (written here, not by the code under test)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "analysis"))
import stats  # noqa: E402
from load import load  # noqa: E402
from conftest import shared_datasets_dir  # noqa: E402

METRICS = [f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)]


# ------------------------------------------------------------------ statistics
@pytest.fixture
def samples():
    rng = np.random.default_rng(7)
    return rng.normal(0.40, 0.02, 5), rng.normal(0.42, 0.05, 7), rng.normal(0.43, 0.03, 5)


def test_welch_matches_scipy(samples):
    a, b, _ = samples
    ours = stats.welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))


def test_paired_matches_scipy(samples):
    a, _, c = samples
    ours = stats.paired(a, c)
    ref = sps.ttest_rel(a, c)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    assert ours.effect == pytest.approx((a - c).mean() / (a - c).std(ddof=1))


def test_one_sided_margin_test_matches_scipy(samples):
    a, _, c = samples
    d = a - c
    for margin in (0.0, d.mean() - 0.1, d.mean() + 0.1):
        ref = sps.ttest_1samp(d - margin, 0.0, alternative="greater")
        assert stats.above(d, margin) == pytest.approx(ref.pvalue, rel=1e-10)
    assert stats.above(d, d.mean() - 0.1) < 0.5 < stats.above(d, d.mean() + 0.1)
    assert np.isnan(stats.above([1.0], 0.0)) and np.isnan(stats.above([2.0, 2.0], 0.0))


def test_exact_sign_flip_permutation_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 0.1, 9), rng.normal(0.35, 0.1, 9)
    ours = stats.permutation_paired(a, b, n_resamples=10_000)
    ref = sps.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                               alternative="two-sided", n_resamples=np.inf)
    assert ours.test == "permutation" and ours.p == pytest.approx(ref.pvalue, rel=1e-12)


def test_monte_carlo_permutation_is_close_to_the_exact_one():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.30, 0.1, 16), rng.normal(0.33, 0.1, 16)
    exact = sps.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                 n_resamples=np.inf).pvalue
    mc = stats.permutation_paired(a, b, n_resamples=20_000, seed=1).p
    assert abs(mc - exact) < 0.015


def test_bootstrap_interval_agrees_with_scipys_percentile_bootstrap():
    rng = np.random.default_rng(5)
    x = rng.normal(-2.0, 30.0, 943)  # a per-user difference in points: wide, like NDCG's
    low, high, means = stats.bootstrap_mean(x, n_resamples=20_000, seed=2)
    ref = sps.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", random_state=3).confidence_interval
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert abs(low - ref.low) < 0.05 * se and abs(high - ref.high) < 0.05 * se
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.05) and low < x.mean() < high
    assert len(means) == 20_000 and stats.bootstrap_mean(x, n_resamples=20_000, seed=2)[0] == low  # seeded
    assert np.isnan(stats.bootstrap_mean([1.0])[0])


def test_gap_to_full_on_the_published_long_runs():
    """analysis/gap_to_full.py: the gap is the tables' difference of the seed means (from the
    records' own figures), each interval surrounds it, and a selection it cannot pair is refused."""
    import json

    root = REPO / "results" / "learners-tuned"
    script = [sys.executable, str(REPO / "analysis" / "gap_to_full.py"), "--results", str(root)]
    proc = subprocess.run([*script, "--where", "method=td3", "outer_epochs=60", "--goal", "-2", "--resamples", "2000"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs, _ = load(root, splits=("test",))

    def seed_mean(selected, model):
        figures = [json.loads((Path(d) / "record.json").read_text())["metrics_by_model"][model]["test"]["recbole100"]
                   ["NDCG@10"] for d in selected.run_dir]
        return 100 * np.mean(figures)

    long_runs = runs[(runs.method == "td3") & (runs.outer_epochs == 60)]
    full = runs[runs.method == "full"]
    lines = [line for line in proc.stdout.splitlines() if line.split(":")[0] in ("sasrec", "gru4rec", "narm", "bert4rec")]
    assert len(lines) == 4
    for line in lines:
        model = line.split(":")[0]
        gap = float(line.split("gap ")[1].split(";")[0])
        assert gap == pytest.approx(seed_mean(long_runs, model) - seed_mean(full, model), abs=0.006)
        for which in ("over seeds", "over 943 users"):
            low, high = map(float, line.split(f"95% {which} [")[1].split("]")[0].split(", "))
            assert low < gap < high
        share = float(line.split("in ")[-1].split("%")[0])
        assert (share > 50) == (gap > -2) or abs(gap + 2) < 0.2
    refused = subprocess.run([*script, "--where", "method=td3"], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "one run per seed" in refused.stderr
    refused = subprocess.run([*script, "--where", "method=td3", "outer_epochs=60", "--against", "method=td3"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "also matched by --against method=td3" in refused.stderr
    refused = subprocess.run([*script, "--where", "colour=red"], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "colour=red" in refused.stderr
    # a root without Full-Data runs is compared with another root's
    other = [sys.executable, str(REPO / "analysis" / "gap_to_full.py"), "--results", str(REPO / "results" / "evaluation-epochs"),
             "--where", "eval_epochs=200", "eval_lr=0.005", "init_from=pool", "--resamples", "200"]
    refused = subprocess.run(other, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "no complete run of ml-100k with method=full" in refused.stderr
    done = subprocess.run([*other, "--full-results", str(root)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "full data 39.01 over seeds [0, 1, 2]" in done.stdout, done.stderr
    # one summary against another: the 1,440-step runs against the 720-step ones (docs/replication.md)
    done = subprocess.run([*script, "--where", "method=td3", "outer_epochs=60", "--against", "method=td3",
                           "outer_epochs=30", "learners=sasrec+gru4rec+narm+bert4rec", "bidirectional_loss=prefix",
                           "--resamples", "200"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "bert4rec: summary 32.75 over seeds [0, 1, 2], reference 30.92 over seeds [0, 1, 2]; gap +1.82" in done.stdout
    # the validation figures instead of the test's: the records' own valid NDCG@10
    done = subprocess.run([*script, "--where", "method=td3", "outer_epochs=60", "--split", "valid", "--resamples", "200"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "valid NDCG@10 under recbole100" in done.stdout, done.stderr

    def valid_mean(selected, model):
        return 100 * np.mean([json.loads((Path(d) / "record.json").read_text())["metrics_by_model"][model]["valid"]
                              ["recbole100"]["NDCG@10"] for d in selected.run_dir])

    line = next(line for line in done.stdout.splitlines() if line.startswith("gru4rec:"))
    gap = float(line.split("gap ")[1].split(";")[0])
    assert gap == pytest.approx(valid_mean(long_runs, "gru4rec") - valid_mean(full, "gru4rec"), abs=0.006)
    assert abs(gap - (seed_mean(long_runs, "gru4rec") - seed_mean(full, "gru4rec"))) > 0.01   # not the test's


def test_gap_to_full_pools_the_learners_of_magazines_four_learner_summaries():
    """The line pooling the four learners (docs/replication.md, "For the four architectures"):
    the mean over the 12 (learner, seed) pairs is the mean of the four learners' gaps, with the
    paired tests over the pairs and over the seeds' means, and the one-sided test of a goal."""
    four = "learners=sasrec+gru4rec+narm+bert4rec"
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "gap_to_full.py"), "--results",
                           str(REPO / "results" / "magazine-farzi-learners"), "--where", "method=td3", four,
                           "validate_learners=model", "d1=16", "--against", "method=farzi", four,
                           "validate_learners=model", "--goal", "1", "--resamples", "200"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    gaps = [float(line.split("gap ")[1].split(";")[0]) for line in lines[1:5]]
    assert lines[5].startswith("every learner: gap +0.98 over 12 (learner, seed) pairs")
    assert float(lines[5].split("gap ")[1].split(" ")[0]) == pytest.approx(np.mean(gaps), abs=0.01)
    assert "paired t-test p = 0.00054;" in lines[5] and "(+0.64 / +1.30 / +1.01) p = 0.036" in lines[5]
    assert lines[5].endswith("gap > 1: one-sided p = 0.53 over the pairs")


def test_a_selection_takes_any_of_a_comma_list_as_a_sweep_writes_it():
    """``seed=0,2`` selects seeds 0 and 2 (a confirmation on new seeds is selected apart from
    the runs it checks); a value that holds commas itself (the evaluated models) still matches."""
    from load import matching

    runs, _ = load(REPO / "results" / "magazine-farzi-learners")
    td3 = ["method=td3", "learners=sasrec+gru4rec+narm+bert4rec", "validate_learners=model", "d1=30"]
    assert sorted(runs[matching(runs, td3)].seed) == [0, 1, 2]
    assert sorted(runs[matching(runs, [*td3, "seed=0,2"])].seed) == [0, 2]
    assert sorted(runs[matching(runs, [*td3, "seed=2"])].seed) == [2]
    assert matching(runs, [*td3, "models=sasrec,gru4rec,narm,bert4rec"]).sum() == 3
    assert matching(runs, [*td3, "seed=5,6"]).sum() == 0


def test_every_gap_to_full_command_the_docs_give_runs_on_the_published_results():
    """docs/replication.md quotes its figures with the command that gives them: each still
    selects one run per seed as the published roots grow (a sweep published beside others
    can make an old selection ambiguous)."""
    import re
    import shlex

    text = (REPO / "docs" / "replication.md").read_text()
    commands = dict.fromkeys(" ".join(c.split()) for c in re.findall(r"`(python analysis/gap_to_full\.py[^`]*)`", text))
    assert len(commands) >= 5
    for command in commands:
        argv = shlex.split(command)[2:]
        proc = subprocess.run([sys.executable, str(REPO / "analysis" / "gap_to_full.py"), *argv, "--resamples", "100"],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, f"{command}: {proc.stderr.strip()[-300:]}"
        assert "gap " in proc.stdout


def test_seed_spread_recovers_the_summarys_and_the_learners_share():
    """analysis/seed_spread.py's split of a spread over seeds, on figures drawn with a known
    summary spread (1.0) and learner spread (0.5); a table the learners explain alone gives 0."""
    from seed_spread import spread

    rng = np.random.default_rng(0)
    table = pd.DataFrame(37 + rng.normal(0, 1.0, (400, 1)) + rng.normal(0, 0.5, (400, 5)))
    s = spread(table)
    assert s["learner"] == pytest.approx(0.5, rel=0.05) and s["summary"] == pytest.approx(1.0, rel=0.08)
    assert s["one_per_summary"] == pytest.approx(np.sqrt(1.0 + 0.25), rel=0.08)
    assert s["mean_diagonal"] == pytest.approx(np.mean([table.loc[i, i] for i in range(5)]))
    learners_only = pd.DataFrame(37 + rng.normal(0, 0.5, (400, 5)))
    assert spread(learners_only)["summary"] < 0.1


def test_seed_spread_on_the_published_learner_seeds():
    """results/evaluation-seeds: learner seed s on summary s repeats evaluation-epochs' own
    200-epoch record of seed s to the digit (the summaries are those runs'); seed_spread.py
    prints that table and the split of its spread."""
    import json

    published = {}
    for record in (REPO / "results" / "evaluation-epochs" / "distill").glob("*/record.json"):
        r = json.loads(record.read_text())
        if (r["config"]["evaluation"]["epochs"] == 200 and r["config"]["evaluation"]["lr"] == 0.005
                and r["config"]["distill"]["init_from"] == "pool"):
            for e in r["evaluations"]:
                published[e["model"], r["config"]["seed"]] = 100 * e["metrics"]["test"]["recbole100"]["NDCG@10"]
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "seed_spread.py"), "--results",
                           str(REPO / "results" / "evaluation-seeds"), "--where", "outer_epochs=30"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    blocks = proc.stdout.split("test NDCG@10")
    for model, block in zip(("sasrec", "gru4rec"), blocks[1:]):
        rows = [line.split() for line in block.splitlines() if line[:1].isdigit()]
        assert [int(r[0]) for r in rows] == [0, 1, 2] and all(len(r) == 4 for r in rows)
        for seed in (0, 1, 2):
            assert float(rows[seed][1 + seed]) == pytest.approx(published[model, seed], abs=0.006)
        table = np.array([[float(x) for x in r[1:]] for r in rows])
        learner = float(block.split("on one summary ")[1].split(";")[0])
        assert learner == pytest.approx(np.sqrt(table.var(axis=1, ddof=1).mean()), abs=0.01)


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> monotone 0.06
    assert np.allclose(stats.holm(p)[:4], [0.03, 0.06, 0.06, 0.02]) and np.isnan(stats.holm(p)[4])


def test_compare_seeds_pairs_only_matching_seeds(samples):
    a, _, c = samples
    same = stats.compare_seeds(dict(enumerate(a)), dict(enumerate(c)))
    assert same.test == "paired" and same.p == pytest.approx(sps.ttest_rel(a, c).pvalue)
    shifted = stats.compare_seeds(dict(enumerate(a)), {k + 10: v for k, v in enumerate(c)})
    assert shifted.test == "welch" and shifted.p == pytest.approx(sps.ttest_ind(a, c, equal_var=False).pvalue)
    assert stats.stars(0.004) == "**" and stats.stars(0.02) == "*" and stats.stars(0.2) == ""


def test_variant_labels_name_the_odd_settings_as_written():
    """A rank study's labels read d1=16, not d1=16.0 (other methods' NaN made the column float)."""
    from load import variant_labels

    runs = pd.DataFrame({"dataset": ["ml-100k"] * 4, "method": ["td3", "td3", "td3", "random"],
                         "d1": [8.0, 8.0, 16.0, np.nan], "embedding": ["frozen", "frozen", "trainable", None]})
    assert list(variant_labels(runs, ["dataset", "method"])) == ["", "", "d1=16 embedding=trainable", ""]


def test_a_summary_of_several_learners_is_labelled_even_when_most_runs_are_one():
    """The distilling learners are labelled against the run's model alone, not against the
    most common set: four several-learner runs beside three single-learner ones still read
    learners=..., and the single-learner ones no label (not 'learners=')."""
    from load import variant_labels

    four = "sasrec+gru4rec+narm+bert4rec"
    runs = pd.DataFrame({"dataset": ["ml-100k"] * 7, "method": ["td3"] * 7,
                         "learners": [four] * 4 + [""] * 3,
                         "bidirectional_loss": ["cloze"] * 3 + ["prefix"] + ["cloze"] * 3})
    assert list(variant_labels(runs, ["dataset", "method"])) == [
        f"learners={four}"] * 3 + [f"bidirectional_loss=prefix learners={four}"] + [""] * 3
    # BERT4Rec's loss is labelled against the cloze, whichever is the more common.
    runs["bidirectional_loss"] = ["prefix"] * 4 + ["cloze"] * 3
    assert list(variant_labels(runs, ["dataset", "method"])) == [f"bidirectional_loss=prefix learners={four}"] * 4 + [""] * 3
    # the same summaries selected by every learner's validation: their own row, however many
    runs["validate_learners"] = ["all"] * 4 + ["model"] * 3
    assert list(variant_labels(runs, ["dataset", "method"])) == [
        f"bidirectional_loss=prefix learners={four} validate_learners=all"] * 4 + [""] * 3


# ------------------------------------------------------------- make_tables.py
def write_run(root: Path, name: str, method: str, dataset: str, size: str, seed: int, values: dict,
              protocol: str = "scratch", status: str = "complete", **distill) -> Path:
    """A run directory with the record layout td3.distill writes (metrics given, in [0, 1])."""
    mu, zeta = map(int, size.split("x"))
    run_dir = root / "distill" / name
    run_dir.mkdir(parents=True)
    metrics = {split: {p: {m: values.get((p, m), 0.1) for m in METRICS} for p in ("recbole100", "unseen100", "full")}
               for split in ("valid", "test")}
    cfg = {"method": method, "seed": seed, "teacher_seed": 0, "dataset": {"name": dataset},
           "summary": {"mu": mu, "zeta": zeta, "d1": 8, "d2": 8},
           "distill": {"steps": 200, "window": 40, "init_from": "pool",
                       "inner": {"alt": distill.get("alt", True), "lr": 0.005, "embedding": "frozen"},
                       "outer": {"fsa": distill.get("fsa", True), "lr": 0.03, "epochs": 30}},
           "evaluation": {"protocol": protocol, "models": ["sasrec"], "epochs": 200}}
    record = {"status": status, "signature": name, "config": cfg, "method": method,
              "error": None if status == "complete" else "diverged at step 3",
              "evaluations": [{"model": "sasrec", "seed": seed, "metrics": metrics, "seconds": 12.0}],
              "metrics": metrics, "timings": {"total": 100.0}, "peak_memory_mb": 700.0,
              "distill": {"seconds": 3600.0, "cached": False, "seconds_per_outer_step": 5.0}}
    (run_dir / "record.json").write_text(json.dumps(record))
    return run_dir


@pytest.fixture
def results(tmp_path):
    """ML-100K: TD3 30x50 and Full-Data over seeds 0-2 (known NDCG@10), a paper-protocol TD3
    with other numbers, Random, a failed run, and a sweep ledger entry with no record."""
    root = tmp_path / "runs"
    td3 = {0: 0.40, 1: 0.41, 2: 0.45}
    full = {0: 0.45, 1: 0.47, 2: 0.49}
    for s in range(3):
        write_run(root, f"ml-100k-td3-30x50-s{s}", "td3", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): td3[s]})
        write_run(root, f"ml-100k-td3-30x50-p{s}", "td3", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): 0.9},
                  protocol="paper")
        write_run(root, f"ml-100k-full-{s}", "full", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): full[s]})
        write_run(root, f"ml-100k-random-{s}", "random", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): 0.2})
    write_run(root, "ml-100k-farzi-bad", "farzi", "ml-100k", "30x50", 0, {}, status="failed")
    ledger = root / "sweeps" / "table3" / "2026-01-01_00-00-00" / "jobs"
    ledger.mkdir(parents=True)
    (ledger / "x.json").write_text(json.dumps({"overrides": ["method=longest", "seed=0"], "status": "failed",
                                               "run_dir": str(root / "distill" / "never-written"),
                                               "error": "killed"}))
    return root, td3, full


def test_records_before_recbole100_load_under_the_protocol_they_hold(tmp_path):
    """A record of td3 before recbole100 existed named unseen100 "uni100": it loads as unseen100."""
    run_dir = write_run(tmp_path, "ml-100k-td3-30x50-old", "td3", "ml-100k", "30x50", 0, {})
    record = json.loads((run_dir / "record.json").read_text())
    legacy = {split: {"uni100": {"NDCG@10": 0.47}, "full": {"NDCG@10": 0.06}} for split in ("valid", "test")}
    record["evaluations"][0]["metrics"] = record["metrics"] = legacy
    (run_dir / "record.json").write_text(json.dumps(record))
    runs, values = load(tmp_path)
    assert set(values["protocol"]) == {"unseen100", "full"}
    assert values.query("protocol == 'unseen100' and split == 'test'")["value"].tolist() == [0.47]


def test_make_tables_numbers_significance_and_problems(results, tmp_path):
    root, td3, full = results
    out = tmp_path / "tables"
    paper_csv = shared_datasets_dir().parent / "reference" / "paper_tables.csv"
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "make_tables.py"), "--results", str(root),
                           "--out", str(out), "--paper", str(paper_csv)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    t2 = pd.read_csv(out / "table2_recbole100_scratch.csv")
    cell = t2[(t2["row"] == "TD3 30x50") & (t2["column"] == "NDCG@10")].iloc[0]
    assert cell["mean"] == pytest.approx(np.mean(list(td3.values())))
    assert cell["std"] == pytest.approx(np.std(list(td3.values()), ddof=1))
    assert cell["n"] == 3 and cell["test"] == "paired"
    expected = sps.ttest_rel([td3[s] for s in range(3)], [full[s] for s in range(3)])
    assert cell["p"] == pytest.approx(expected.pvalue, rel=1e-9)
    if paper_csv.is_file():  # the paper's figure beside ours (%, its TD3 30x50 NDCG@10 on ML-100K)
        ref = pd.read_csv(paper_csv).query("table == 'table2' and dataset == 'ml-100k' and size == '30x50' "
                                           "and method == 'TD3' and metric == 'NDCG@10'")["mean"].iloc[0]
        assert cell["paper"] == pytest.approx(ref)
        # ... beside the paper's ranking protocol only: never beside another protocol's figure
        for other in ("unseen100", "full"):
            assert pd.read_csv(out / f"table2_{other}_scratch.csv")["paper"].isna().all()
    # the two summary protocols are never mixed: the paper-protocol table holds the 0.9s
    paper = pd.read_csv(out / "table2_recbole100_paper.csv")
    assert paper[(paper["row"] == "TD3 30x50") & (paper["column"] == "NDCG@10")]["mean"].iloc[0] == pytest.approx(0.9)
    # Table 3 keeps Random, TD3 and Full-Data apart, Full-Data last
    t3 = pd.read_csv(out / "table3_recbole100_scratch.csv")
    ours = t3[t3["group"] == "ml-100k 30x50"]
    assert list(dict.fromkeys(ours["row"])) == ["Random", "TD3", "Full-Data"] and not ours["not_run"].any()
    if paper_csv.is_file():  # the paper's datasets without any run: its figures, marked not run
        epinions = t3[t3["group"] == "epinions 15x30"]
        assert list(dict.fromkeys(epinions["row"])) == ["Random", "Longest", "Farzi", "TD3", "Full-Data"]
        assert epinions["not_run"].all() and epinions["mean"].isna().all()
        assert epinions.query("row == 'TD3' and column == 'NDCG@10'")["paper"].iloc[0] == pytest.approx(10.67)
        assert "not run [10.67]" in (out / "table3_recbole100_scratch.md").read_text()
        assert "[nan]" not in (out / "table2_recbole100_scratch.md").read_text()   # a figure the paper lacks
    md = (out / "table3_recbole100_scratch.md").read_text()
    assert "**" in md and "Full-Data" in md
    # failed and missing runs are listed, not dropped
    problems = (out / "problems.md").read_text()
    assert "ml-100k-farzi-bad" in problems and "diverged at step 3" in problems
    assert "method=longest seed=0" in problems
    for suffix in ("md", "tex", "csv"):
        assert (out / f"table2_recbole100_scratch.{suffix}").stat().st_size > 0
    assert (out / "figure4_recbole100_scratch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "table5.csv").is_file()
    # --no-table-csvs: the same tables, each table's rows in all_tables.csv.gz alone, where
    # they are the rows its .csv held
    compact = tmp_path / "compact"
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "make_tables.py"), "--results", str(root),
                           "--out", str(compact), "--paper", str(paper_csv), "--no-table-csvs", "--no-figures"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not list(compact.glob("table*_*_*.csv")) and (compact / "table5.csv").is_file()
    assert (compact / "table2_recbole100_scratch.md").read_bytes() == (out / "table2_recbole100_scratch.md").read_bytes()
    rows = pd.read_csv(compact / "all_tables.csv.gz").query("ranking == 'recbole100' and summary_protocol == 'scratch'")
    rows = rows[rows["table"] == t2["table"].iloc[0]].dropna(axis=1, how="all").reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, t2.dropna(axis=1, how="all"), check_dtype=False)


# ---------------------------------------------------------- tables as a reader sees them
def make_tables(*args, cwd=None):
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "make_tables.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_undefined_tests_and_few_seeds_get_no_mark():
    # no spread on either side: the test is undefined, not p = 0
    assert np.isnan(stats.welch([0.4, 0.4, 0.4], [0.5, 0.5, 0.5]).p)
    assert np.isnan(stats.paired([0.4, 0.5, 0.6], [0.5, 0.6, 0.7]).p)


def test_cells_with_fewer_than_three_seeds_or_no_spread(tmp_path):
    root = tmp_path / "runs"
    for s in range(3):   # Full-Data identical across seeds, TD3 identical and far below
        write_run(root, f"full-{s}", "full", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): 0.45})
        write_run(root, f"td3-{s}", "td3", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): 0.30})
    for s in range(2):   # two seeds, clearly apart from Full-Data
        write_run(root, f"random-{s}", "random", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): 0.2 + 0.01 * s})
    out = tmp_path / "tables"
    make_tables("--results", root, "--out", out)
    t3 = pd.read_csv(out / "table3_recbole100_scratch.csv").query("column == 'NDCG@10'").set_index("row")
    assert np.isnan(t3.loc["TD3", "p"])                       # zero variance on both sides
    md = (out / "table3_recbole100_scratch.md").read_text()
    td3_line = next(line for line in md.splitlines() if "| TD3 |" in line)
    random_line = next(line for line in md.splitlines() if "| Random |" in line)
    assert "30.00 ± 0.00" in td3_line and "*" not in td3_line.replace("**", "")
    assert "(n=2)" in random_line and not random_line.split("|")[4].strip().endswith("*")


def test_reduced_budget_missing_figures_and_synthetic_runs(tmp_path):
    root = tmp_path / "runs"
    for s in range(3):
        run_dir = write_run(root, f"td3-{s}", "td3", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): 0.40})
        record = json.loads((run_dir / "record.json").read_text())
        record["config"]["distill"]["outer"]["epochs"] = 2          # +experiment=quick
        record["distill"]["seconds_per_outer_step"] = None           # a record without the figure
        (run_dir / "record.json").write_text(json.dumps(record))
        write_run(root, f"synthetic-{s}", "td3", "synthetic", "20x20", s, {("recbole100", "NDCG@10"): 0.9})
    ledger = root / "sweeps" / "smoke" / "2026-01-01_00-00-00" / "jobs"   # the smoke sweep that made them
    ledger.mkdir(parents=True)
    for s in range(3):
        (ledger / f"{s}.json").write_text(json.dumps({"overrides": ["+sweep=smoke", f"seed={s}"], "status": "complete",
                                                      "run_dir": str(root / "distill" / f"synthetic-{s}")}))
    out = tmp_path / "tables"
    proc = make_tables("--results", root, "--out", out)
    # left out of the tables, but neither missing nor silent
    assert "| missing |" not in (out / "problems.md").read_text()
    assert "left out 3 runs of synthetic (--datasets synthetic" in proc.stdout
    t2 = (out / "table2_recbole100_scratch.md").read_text()
    assert "Reduced budget" in t2 and "outer epochs 2 < 30" in t2
    assert "synthetic" not in (out / "tables.md").read_text()         # left out unless asked
    t5 = (out / "table5.md").read_text()
    assert "nan" not in t5 and "| – |" in t5
    make_tables("--results", root, "--out", out, "--datasets", "synthetic")
    assert "synthetic" in (out / "table2_recbole100_scratch.md").read_text()
    assert "ml-100k" not in (out / "table2_recbole100_scratch.md").read_text()


def test_relative_and_copied_results_roots_find_their_runs(results, tmp_path):
    root, _, _ = results
    # a ledger entry of a complete run, written with the absolute path the sweep used
    ledger = root / "sweeps" / "table3" / "2026-01-01_00-00-00" / "jobs"
    (ledger / "done.json").write_text(json.dumps({"overrides": ["method=td3", "seed=0"], "status": "complete",
                                                  "run_dir": str(root / "distill" / "ml-100k-td3-30x50-s0")}))
    make_tables("--results", "runs", "--out", "tables", cwd=tmp_path)            # relative
    problems = (tmp_path / "tables" / "problems.md").read_text()
    assert "method=td3 seed=0" not in problems and "method=longest seed=0" in problems
    copied = tmp_path / "elsewhere" / "copy"
    import shutil
    shutil.copytree(root, copied)
    make_tables("--results", copied, "--out", tmp_path / "t2")
    assert (tmp_path / "t2" / "problems.md").read_text().count("| missing |") == 1


def test_figure4_one_colour_per_method_and_one_legend(tmp_path, monkeypatch):
    import make_tables as mt
    import matplotlib.pyplot as plt

    root = tmp_path / "runs"
    for s in range(2):
        for dataset, methods in (("ml-100k", ("td3", "farzi", "random")), ("magazine-2018", ("td3", "random"))):
            for m in methods:
                write_run(root, f"{dataset}-{m}-{s}", m, dataset, "30x50", s, {("recbole100", "NDCG@10"): 0.3})
    runs, values = mt.load(root)
    runs["variant"] = ""
    sv = mt.seed_values(values, runs, "recbole100")
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    assert mt.figure4(sv, "recbole100", "scratch", tmp_path / "f.png")
    fig = figures[0]
    colours = [{line.get_color() for line in ax.get_lines() if line.get_marker() == "o"} for ax in fig.axes]
    # panels in dataset order: magazine-2018 (TD3, Random), then ml-100k (TD3, Farzi, Random)
    assert colours == [{"tab:red", "tab:green"}, {"tab:red", "tab:blue", "tab:green"}]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["TD3", "Farzi", "Random"]


def test_table2_leaves_the_fsa_alt_ablation_to_table6_and_keeps_rank_variants(tmp_path):
    root = tmp_path / "runs"
    for s in range(3):
        write_run(root, f"td3-{s}", "td3", "ml-100k", "50x50", s, {("recbole100", "NDCG@10"): 0.40})
        write_run(root, f"td3-nofsa-{s}", "td3", "ml-100k", "50x50", s, {("recbole100", "NDCG@10"): 0.30}, fsa=False)
        run_dir = write_run(root, f"td3-d16-{s}", "td3", "ml-100k", "50x50", s, {("recbole100", "NDCG@10"): 0.35})
        record = json.loads((run_dir / "record.json").read_text())
        record["config"]["summary"]["d1"] = record["config"]["summary"]["d2"] = 16   # a rank study's run
        (run_dir / "record.json").write_text(json.dumps(record))
    out = tmp_path / "tables"
    make_tables("--results", root, "--out", out)
    t2 = (out / "table2_recbole100_scratch.md").read_text()
    assert "| TD3 50x50 | " in t2 and "d1=16" in t2 and "fsa=" not in t2
    t6 = (out / "table6_recbole100_scratch.md").read_text()
    assert "TD3[ALT]" in t6 and "30.00" in t6       # the run without FSA, in its own table


def test_table4_sets_summaries_of_several_learners_beside_the_single_learners(tmp_path):
    """distill.learners: its summaries get rows of their own in Table 4, per architecture,
    never mixed into the cells of the summaries distilled through SASRec alone; another
    method's summaries evaluated on the four architectures (Farzi's) get rows of their own."""
    root = tmp_path / "runs"
    four = ["sasrec", "gru4rec", "narm", "bert4rec"]

    def with_models(run_dir, values, learners=None):
        record = json.loads((run_dir / "record.json").read_text())
        record["config"]["evaluation"]["models"] = four
        if learners:
            record["config"]["distill"]["learners"] = learners
        metrics = record["metrics"]
        record["evaluations"] = [{"model": m, "seed": record["config"]["seed"], "seconds": 1.0, "metrics": {
            split: {p: {k: (values[m] if (p, k) == ("recbole100", "NDCG@10") else v) for k, v in ms.items()}
                    for p, ms in by.items()} for split, by in metrics.items()}} for m in four]
        (run_dir / "record.json").write_text(json.dumps(record))

    single = {"sasrec": 0.35, "gru4rec": 0.33, "narm": 0.30, "bert4rec": 0.21}
    several = {"sasrec": 0.34, "gru4rec": 0.36, "narm": 0.35, "bert4rec": 0.30}
    for s in range(3):
        with_models(write_run(root, f"td3-{s}", "td3", "ml-100k", "50x50", s, {}), single)
        with_models(write_run(root, f"td3-all-{s}", "td3", "ml-100k", "50x50", s, {}), several, learners=four)
        with_models(write_run(root, f"full-{s}", "full", "ml-100k", "50x50", s, {}),
                    {"sasrec": 0.39, "gru4rec": 0.39, "narm": 0.37, "bert4rec": 0.34})
        with_models(write_run(root, f"farzi-{s}", "farzi", "ml-100k", "50x50", s, {}),
                    {"sasrec": 0.355, "gru4rec": 0.325, "narm": 0.275, "bert4rec": 0.265})
    out = tmp_path / "tables"
    make_tables("--results", root, "--out", out)
    t4 = (out / "table4_recbole100_scratch.md").read_text()
    assert "several learners" in t4.splitlines()[0]
    ndcg10 = {(cells[0].lstrip("| "), cells[1]): cells[3] for cells in (line.split(" | ") for line in t4.splitlines())
              if len(cells) > 4 and cells[1].startswith("TD3")}
    label = "TD3 50x50 (learners=sasrec+gru4rec+narm+bert4rec)"
    assert ndcg10[("ml-100k BERT4Rec", "TD3 50x50")] == "21.00 ± 0.00"
    assert ndcg10[("ml-100k BERT4Rec", label)] == "30.00 ± 0.00"
    assert ndcg10[("ml-100k GRU4Rec", label)] == "36.00 ± 0.00"
    assert len(ndcg10) == 8  # four architectures × (SASRec alone, the four learners)
    farzi = {cells[0].lstrip("| "): cells[3] for cells in (line.split(" | ") for line in t4.splitlines())
             if len(cells) > 4 and cells[1] == "Farzi 50x50"}
    assert farzi == {"ml-100k SASRec": "35.50 ± 0.00", "ml-100k GRU4Rec": "32.50 ± 0.00",
                     "ml-100k NARM": "27.50 ± 0.00", "ml-100k BERT4Rec": "26.50 ± 0.00"}
    t2 = (out / "table2_recbole100_scratch.md").read_text()
    assert "| TD3 50x50 | " in t2 and label in t2


def test_item_table_sets_trainable_beside_frozen_per_method(tmp_path):
    """The inner item table's ablation: a table of its own, the trainable row tested against
    the frozen one (paired over seeds), and neither mixed into Table 3's cells."""
    root = tmp_path / "runs"
    frozen, trainable = {0: 0.30, 1: 0.31, 2: 0.32}, {0: 0.35, 1: 0.37, 2: 0.36}
    for s in range(3):
        write_run(root, f"td3-{s}", "td3", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): frozen[s]})
        write_run(root, f"random-{s}", "random", "ml-100k", "30x50", s, {("recbole100", "NDCG@10"): 0.2})
        run_dir = write_run(root, f"td3-tr-{s}", "td3", "ml-100k", "30x50", s,
                            {("recbole100", "NDCG@10"): trainable[s]})
        record = json.loads((run_dir / "record.json").read_text())
        record["config"]["distill"]["inner"]["embedding"] = "trainable"
        (run_dir / "record.json").write_text(json.dumps(record))
    out = tmp_path / "tables"
    make_tables("--results", root, "--out", out)
    table = (out / "table_item_table_recbole100_scratch.md").read_text()
    ndcg10 = {cells[1]: cells[6] for cells in (line.split(" | ") for line in table.splitlines()) if len(cells) > 6}
    assert ndcg10["TD3, frozen"] == "31.00 ± 1.00"
    # paired t-test over seeds 0-2: differences 5, 6, 4 points, t = 8.66, p = 0.013
    assert ndcg10["TD3, trainable"] == "<u>**36.00 ± 1.00**</u>*"
    t3 = (out / "table3_recbole100_scratch.md").read_text()
    td3_row = next(line for line in t3.splitlines() if line.split(" | ")[1:2] == ["TD3"])
    assert "31.00 ± 1.00" in td3_row and "36.00" not in t3   # Table 3 holds the frozen runs only


def test_settings_table_tests_each_setting_against_random_and_td3_against_farzi(tmp_path):
    """Outer-loop settings (issue 17's small-data defaults): every TD3 and Farzi setting at a
    size where one departs from the usual, marked against Random; TD3 against Farzi at the
    same setting (Farzi has no ranks: TD3's d1/d2 are set aside to match); nothing of it in
    Table 3."""
    root = tmp_path / "runs"
    random, td3, td3_long, farzi_long = ({0: 0.20, 1: 0.22, 2: 0.21}, {0: 0.18, 1: 0.19, 2: 0.17},
                                         {0: 0.25, 1: 0.27, 2: 0.26}, {0: 0.20, 1: 0.23, 2: 0.21})

    def setting(run_dir, **outer):
        record = json.loads((run_dir / "record.json").read_text())
        record["config"]["distill"]["outer"].update(outer)
        record["config"]["summary"].update(d1=16, d2=16) if run_dir.name.startswith("td3") else None
        (run_dir / "record.json").write_text(json.dumps(record))

    for s in range(3):
        write_run(root, f"random-{s}", "random", "magazine-2018", "30x20", s, {("recbole100", "NDCG@10"): random[s]})
        write_run(root, f"usual-td3-{s}", "td3", "magazine-2018", "30x20", s, {("recbole100", "NDCG@10"): td3[s]})
        write_run(root, f"usual-farzi-{s}", "farzi", "magazine-2018", "30x20", s, {("recbole100", "NDCG@10"): 0.1})
        write_run(root, f"usual-td3-10-{s}", "td3", "magazine-2018", "10x10", s, {("recbole100", "NDCG@10"): 0.1})
        setting(write_run(root, f"td3-long-{s}", "td3", "magazine-2018", "30x20", s,
                          {("recbole100", "NDCG@10"): td3_long[s]}), min_steps=450, lr=0.1)
        setting(write_run(root, f"farzi-long-{s}", "farzi", "magazine-2018", "30x20", s,
                          {("recbole100", "NDCG@10"): farzi_long[s]}), min_steps=450, lr=0.1)
    out = tmp_path / "tables"
    make_tables("--results", root, "--out", out)

    def ndcg10(name):
        table = (out / f"{name}_recbole100_scratch.md").read_text()
        return {(cells[0].lstrip("| "), cells[1]): cells[6] for cells in (line.split(" | ") for line in table.splitlines())
                if len(cells) > 6 and cells[1]}
    against_random = ndcg10("table_settings")
    assert set(against_random) == {("magazine-2018 30x20", r) for r in (
        "Random", "Farzi", "Farzi (outer_lr=0.1 min_steps=450)", "TD3",
        "TD3 (d1=16 d2=16 outer_lr=0.1 min_steps=450)")}   # 10x10 has no other setting: not shown
    # paired over seeds: TD3 long - Random = 5, 5, 5 points exactly: no spread, no test
    assert against_random[("magazine-2018 30x20", "TD3 (d1=16 d2=16 outer_lr=0.1 min_steps=450)")] == "<u>**26.00 ± 1.00**</u>"
    # differences -2, -3, -4: t = -5.20, p = 0.035
    assert against_random[("magazine-2018 30x20", "TD3")] == "18.00 ± 1.00*"
    against_farzi = ndcg10("table_settings_farzi")
    # TD3 long - Farzi long: 5, 4, 5 points: t = 14.0, p = 0.005
    assert against_farzi == {("magazine-2018 30x20", "Farzi (outer_lr=0.1 min_steps=450)"): "21.33 ± 1.53",
                             ("magazine-2018 30x20", "TD3 (d1=16 d2=16 outer_lr=0.1 min_steps=450)"): "<u>**26.00 ± 1.00**</u>**",
                             ("magazine-2018 30x20", "Farzi"): "10.00 ± 0.00",
                             ("magazine-2018 30x20", "TD3"): "<u>18.00 ± 1.00</u>**"}  # 8, 9, 7 points
    t3 = (out / "table3_recbole100_scratch.md").read_text()
    assert "26.00" not in t3 and "21.33" not in t3


def test_an_empty_results_root_is_one_clear_error_and_writes_nothing(tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "tables"
    empty.mkdir()
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "make_tables.py"), "--results", str(empty),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("make_tables: error: no run records under ")
    assert str(empty) in proc.stderr
    assert not out.exists()


def test_results_of_nothing_but_missing_and_unreadable_records_list_them(tmp_path):
    """No record read at all: no table, and problems.md names both run directories."""
    root = tmp_path / "runs"
    (root / "distill" / "never-finished").mkdir(parents=True)
    (root / "distill" / "cut-short").mkdir()
    (root / "distill" / "cut-short" / "record.json").write_text('{"status": "comp')
    out = tmp_path / "tables"
    make_tables("--results", root, "--out", out)
    problems = (out / "problems.md").read_text()
    assert "| no record |" in problems and "never-finished" in problems
    assert "| unreadable |" in problems and "cut-short" in problems
    assert not list(out.glob("table[0-9]*"))


def test_runs_have_every_column_the_parser_writes(tmp_path):
    """load() gives the runs frame RUN_COLUMNS: a key the parser adds must be listed there."""
    from load import RUN_COLUMNS, _parse

    run_dir = write_run(tmp_path, "td3-0", "td3", "ml-100k", "30x50", 0, {})
    run, _ = _parse(str(run_dir / "record.json"))
    assert list(run) == list(RUN_COLUMNS)
    runs, values = load(tmp_path, splits=("test",))
    assert list(runs.columns) == list(RUN_COLUMNS) and set(values["split"]) == {"test"}
