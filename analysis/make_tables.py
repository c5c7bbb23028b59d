"""The paper's Tables 2-6 and Figure 4 from a results root: ``python analysis/make_tables.py``.

    python analysis/make_tables.py --results runs --out tables [--paper ../shared/reference/paper_tables.csv] [--holm] [--no-table-csvs]

Reads every run record under ``<results>/distill/`` (``analysis/load.py``) and writes, for
each ranking protocol (recbole100: the paper's 100 sampled negatives, RecBole's; unseen100:
100 negatives the user never interacted with; full: every item) and
each summary-evaluation protocol (scratch: fresh learners; paper: the teacher's item
table), Markdown, LaTeX and CSV files of

- Table 2: TD3 at each dataset's summary sizes against Full-Data (HR/NDCG/MRR@5/10/20);
- Table 3: Random, Longest, Farzi, TD3 and Full-Data;
- Table 4: each architecture trained on a SASRec summary against the same architecture
  trained on the full data;
- Table 6: FSA × ALT;
- Figure 4: NDCG@10 against summary size (μ·ζ interactions) for TD3, Farzi, Random, Longest (PNG);

and Table 5 (distillation time and peak memory, full-data training, training on the
summary, speed-up), protocol-free. Cells are mean ± std over seeds (in %), n seeds when
fewer than the most common; best in bold, better than Full-Data underlined, and * / **
mark p < 0.05 / 0.01 against Full-Data (paired t-test when both ran the same seeds,
Welch otherwise; ``--holm`` adjusts p over each table). The CSV has every number: means,
std, n, the test, p, Holm's p, the difference with its 95% CI, the effect size, and the
paper's figure when ``--paper`` is given; ``all_tables.csv.gz`` holds every table's CSV rows
at once (``--no-table-csvs`` writes that file alone). ``problems.md`` lists failed and missing runs
(records that are not complete, and sweep ledger entries without a complete record).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import METHOD_LABELS, load, variant_labels  # noqa: E402
from stats import compare_seeds, holm, stars  # noqa: E402

from td3 import ledger  # noqa: E402  (light: the standard library only)

METRICS = [f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)]
RANKINGS = ("recbole100", "unseen100", "full")
#: The only ranking protocol the paper's figures were measured under: --paper shows them beside it alone.
PAPER_RANKING = "recbole100"
SUMMARY_PROTOCOLS = ("scratch", "paper")
METHOD_ORDER = ["random", "longest", "naive", "farzi", "td3", "full"]
PAPER_DATASET = {"magazine-2018": "magazine", "ml-1m-slice": "ml-1m"}
#: What a stand-in dataset is, said under every table it appears in.
STAND_INS = {
    "magazine-2018": "Amazon Magazine_Subscriptions, 2018 release, standing in for the paper's Magazine (2023 "
                     "release, whose file the replication did not have); the paper's figures beside it are Magazine's",
    "ml-1m-slice": "MovieLens-1M users 1–2999 only, standing in for ML-1M; the paper's figures beside it are "
                   "the whole ML-1M's",
}
#: Datasets left out of the tables unless --datasets names them (smoke tests, the embedded default).
NOT_PAPER_DATASETS = ("synthetic",)
MODEL_LABELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "narm": "NARM", "bert4rec": "BERT4Rec"}
METHOD_COLORS = {"td3": "tab:red", "farzi": "tab:blue", "random": "tab:green", "longest": "tab:orange",
                 "naive": "tab:purple", "full": "gray"}
#: Fewer seeds than this: a cell says n and gets no significance mark.
MIN_SEEDS_FOR_TEST = 3
MISSING = "–"


# ------------------------------------------------------------------ budget
def reference_budget() -> dict:
    """The reference settings' budget (conf/): outer epochs, N, W, training epochs, and the
    epochs a learner trains on a summary. A run below any of them is a reduced budget."""
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf"
    try:
        d = OmegaConf.load(conf / "distill" / "default.yaml")
        e = OmegaConf.load(conf / "evaluation" / "default.yaml")
        t = OmegaConf.load(conf / "train" / "default.yaml")
        return {"outer_epochs": int(d.outer.epochs), "steps": int(d.steps), "window": int(d.window),
                "eval_epochs": int(e.epochs), "train_epochs": int(t.epochs)}
    except (OSError, AttributeError, ValueError):  # analysis/ used away from its repository
        return {"outer_epochs": 30, "steps": 200, "window": 40, "eval_epochs": 200, "train_epochs": 200}


BUDGET_NAMES = {"outer_epochs": "outer epochs", "steps": "N", "window": "W", "eval_epochs": "epochs on the summary",
                "train_epochs": "training epochs"}


def budget_notes(runs: pd.DataFrame, by: list[str], reference: dict) -> dict:
    """{group key: what was cut} of the groups of ``runs`` by the columns ``by`` that have a
    run below the reference budget, e.g. 'outer epochs 2 < 30, N 50 < 200' (a group that is
    not here has the reference budget). Key: the tuple of the group's values of ``by``."""
    low: dict = {}  # {group key: {budget key: values below the reference}}, in the reference's order
    for name, ref in reference.items():
        if name not in runs:
            continue
        vals = pd.to_numeric(runs[name], errors="coerce")
        below = vals < ref  # NaN is never below
        if not below.any():
            continue
        for *key, value in runs.loc[below, by].assign(_value=vals[below]).drop_duplicates().itertuples(
                index=False, name=None):
            low.setdefault(tuple(key), {}).setdefault(name, set()).add(int(value))
    return {key: ", ".join(f"{BUDGET_NAMES[name]} {'/'.join(map(str, sorted(values)))} < {reference[name]}"
                           for name, values in cut.items())
            for key, cut in low.items()}


BUDGET = reference_budget()


# ------------------------------------------------------------------ values
#: The columns of the runs that the tables and Figure 4 group, filter and annotate by.
SEED_VALUE_KEYS = ["dataset", "method", "summary_protocol", "size", "interactions", "seed", "variant", "embedding",
                   "variant_wo_ablation", "fsa", "alt", *BUDGET]


def seed_values(values: pd.DataFrame, runs: pd.DataFrame, ranking: str, model: str = "sasrec",
                split: str = "test") -> pd.DataFrame:
    """One row per (run, metric): the run's value (mean over its learner seeds), with the
    run's SEED_VALUE_KEYS (those it has): each filter of the tables copies every column, and
    the thirty others were most of the bytes copied."""
    v = values[(values["split"] == split) & (values["protocol"] == ranking) & (values["model"] == model)]
    v = v.groupby(["run_dir", "metric"], as_index=False)["value"].mean()
    keys = ["run_dir"] + [k for k in SEED_VALUE_KEYS if k in runs]
    return v.merge(runs[keys], on="run_dir", how="inner")


def row_cells(sv: pd.DataFrame, by: list[str], metrics: list[str]) -> dict:
    """{row key: {metric: {seed: value}}} of the groups of the seed values ``sv`` by the
    columns ``by`` (several runs of one seed: their mean), rows keyed by the tuple of their
    values of ``by``. A group's rows keep their order in the frame: the same means as
    grouping each row's runs alone."""
    means = sv.groupby([*by, "metric", "seed"])["value"].mean()
    out: dict = {}
    if means.empty:
        return out
    # sorted by row, metric and seed: the seeds of one (row, metric) are consecutive entries,
    # made into its {seed: value} at once (entry by entry was most of the time of a table)
    index = means.index
    codes = np.asarray(index.codes[:-1])
    starts = np.flatnonzero(np.r_[True, (np.diff(codes, axis=1) != 0).any(axis=0)])
    ends = np.r_[starts[1:], len(means)]
    seeds, values = index.get_level_values(-1).tolist(), means.tolist()
    for a, b in zip(starts.tolist(), ends.tolist()):
        *key, metric = (level[c[a]] for level, c in zip(index.levels, codes))
        if metric in metrics:
            cells = out.setdefault(tuple(key), {m: {} for m in metrics})
            cells[metric].update(zip(seeds[a:b], values[a:b]))
    return out


class RowValues:
    """What table rows show of their runs, for many rows at once: a row is a group of the
    seed values ``sv`` by the columns ``by``, named by the tuple of its values of them
    (``by=[]``: one row of them all, named ()). One groupby and one budget check for all the
    rows (a dataset's, in the tables): a filter, a groupby and a budget check per row were
    most of the time of a 10,000-run table."""

    def __init__(self, sv: pd.DataFrame, by: list[str], metrics: list[str]):
        self.metrics = metrics
        self._cells = row_cells(sv, by, metrics)
        self._budgets = budget_notes(sv, by, BUDGET)

    def cells(self, key: tuple = ()) -> dict:
        """{metric: {seed: value}} of a row (several runs of one seed: their mean)."""
        return self._cells[key] if key in self._cells else {m: {} for m in self.metrics}

    def budget(self, key: tuple = ()) -> str:
        """'' when every run of a row has the reference budget; else what was cut."""
        return self._budgets.get(key, "")


class Table:
    """Rows × metric columns of seed-value dicts, plus what to compare each row against."""

    def __init__(self, name: str, title: str, columns: list[str]):
        self.name, self.title, self.columns = name, title, columns
        self.rows: list[dict] = []  # {"group", "label", "method", "cells": {col: {seed: v}}, "reference": row index}

    def add(self, group: str, label: str, method: str, cells: dict, reference: int | None = None,
            paper: dict | None = None, extra: dict | None = None, budget: str = "", not_run: bool = False) -> int:
        self.rows.append({"group": group, "label": label, "method": method, "cells": cells,
                          "reference": reference, "paper": paper or {}, "extra": extra or {},
                          "budget": budget, "not_run": not_run})
        return len(self.rows) - 1

    # -------------------------------------------------------------- statistics
    def finish(self, use_holm: bool) -> None:
        tests = []
        for row in self.rows:
            row["stats"] = {}
            ref = self.rows[row["reference"]] if row["reference"] is not None else None
            for col in self.columns:
                vals = row["cells"].get(col, {})
                entry = {"mean": float(np.mean(list(vals.values()))) if vals else math.nan,
                         "std": float(np.std(list(vals.values()), ddof=1)) if len(vals) > 1 else math.nan,
                         "n": len(vals), "seeds": sorted(vals)}
                if ref is not None and vals and ref["cells"].get(col):
                    comp = compare_seeds(vals, ref["cells"][col])
                    entry["comparison"] = comp
                    tests.append((row, col, comp.p))
                row["stats"][col] = entry
        adjusted = holm([p for _, _, p in tests]) if tests else []
        for (row, col, _), p_adj in zip(tests, adjusted):
            row["stats"][col]["p_holm"] = float(p_adj)
        self.use_holm = use_holm
        # the seeds a cell of each column is expected to have: a cell with fewer says n
        self.expected_n = {col: max((r["stats"][col]["n"] for r in self.rows), default=0) for col in self.columns}
        # best per column within a group; "better than the reference"
        groups: dict = {}
        for r in self.rows:
            groups.setdefault(r["group"], []).append(r)
        for col in self.columns:
            for rows in groups.values():
                members = [r for r in rows if r["stats"][col]["n"]]
                if not members:
                    continue
                best = max(r["stats"][col]["mean"] for r in members)
                for r in members:
                    r["stats"][col]["best"] = r["stats"][col]["mean"] == best
        for row in self.rows:
            ref = self.rows[row["reference"]] if row["reference"] is not None else None
            for col in self.columns:
                st = row["stats"][col]
                st["above_reference"] = bool(ref is not None and st["n"] and ref["stats"][col]["n"]
                                             and st["mean"] > ref["stats"][col]["mean"])

    def p_of(self, st: dict) -> float:
        """The p-value a cell is marked by: none when either side has fewer than
        MIN_SEEDS_FOR_TEST seeds or the test is undefined (no spread on either side)."""
        if "comparison" not in st:
            return math.nan
        comp = st["comparison"]
        if min(comp.n_a, comp.n_b) < MIN_SEEDS_FOR_TEST:
            return math.nan
        return st.get("p_holm", math.nan) if self.use_holm else st["comparison"].p

    # ------------------------------------------------------------------ output
    def _cell_text(self, row: dict, col: str, fmt: str) -> str:
        st = row["stats"][col]
        paper = row["paper"].get(col)
        if not st["n"]:
            body = "not run" if row["not_run"] else MISSING
            return body + (f" [{paper:.2f}]" if paper is not None else "")
        body = f"{100 * st['mean']:.2f}"
        if st["n"] > 1:
            body += f" ± {100 * st['std']:.2f}" if fmt == "md" else f" $\\pm$ {100 * st['std']:.2f}"
        mark = stars(self.p_of(st))
        if st["n"] < max(self.expected_n[col], MIN_SEEDS_FOR_TEST):
            body += f" (n={st['n']})"
        if st.get("best"):
            body = f"**{body}**" if fmt == "md" else f"\\textbf{{{body}}}"
        if st.get("above_reference"):
            body = f"<u>{body}</u>" if fmt == "md" else f"\\underline{{{body}}}"
        body += mark if fmt == "md" else (f"$^{{{mark}}}$" if mark else "")
        if paper is not None:
            body += f" [{paper:.2f}]"
        return body

    def notes(self) -> list[str]:
        """What a reader must know about the rows: stand-in datasets, reduced budgets, the
        paper's figures, rows not run."""
        out = []
        groups = " ".join(r["group"] for r in self.rows)
        for dataset, what in STAND_INS.items():
            if dataset in groups:
                out.append(f"{dataset}: {what}.")
        budgets = sorted({r["budget"] for r in self.rows if r["budget"]})
        if budgets:
            out.append("**Reduced budget, not the paper's settings**: " + "; ".join(budgets) + ".")
        if any(r["paper"] for r in self.rows):
            out.append("[the paper's figure in brackets]")
        if any(r["not_run"] for r in self.rows):
            out.append("not run: no run of this dataset in these results (the paper's figures only).")
        return out

    def markdown(self) -> str:
        head = ["", ""] + self.columns
        lines = [f"### {self.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            cells = [row["group"], row["label"]] + [self._cell_text(row, c, "md") for c in self.columns]
            lines.append("| " + " | ".join(cells) + " |")
        notes = self.notes()
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        cols = "ll" + "r" * len(self.columns)
        out = [f"% {self.title}", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
               " & & " + " & ".join(c.replace("@", "@") for c in self.columns) + " \\\\", "\\midrule"]
        for row in self.rows:
            label = row["label"].replace("_", "\\_").replace("%", "\\%")
            out.append(f"{row['group']} & {label} & " + " & ".join(self._cell_text(row, c, "tex") for c in self.columns)
                       + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        out += [f"% {n}" for n in self.notes()]
        return "\n".join(out) + "\n"

    def frame(self) -> pd.DataFrame:
        recs = []
        for row in self.rows:
            for col in self.columns:
                st = row["stats"][col]
                comp = st.get("comparison")
                recs.append({"table": self.name, "group": row["group"], "row": row["label"], "method": row["method"],
                             "column": col, "mean": st["mean"], "std": st["std"], "n": st["n"],
                             "seeds": " ".join(map(str, st["seeds"])),
                             "test": comp.test if comp else "", "p": comp.p if comp else math.nan,
                             "p_holm": st.get("p_holm", math.nan), "diff": comp.diff if comp else math.nan,
                             "ci_low": comp.ci_low if comp else math.nan, "ci_high": comp.ci_high if comp else math.nan,
                             "effect_size": comp.effect if comp else math.nan,
                             "paper": row["paper"].get(col, math.nan), "budget": row["budget"],
                             "not_run": row["not_run"], **row["extra"]})
        return pd.DataFrame(recs)


# -------------------------------------------------------------- paper numbers
class PaperFigures:
    """The paper's figures (``--paper``, paper_tables.csv): ``frame``, one row per figure, and
    ``cells``, one table row's figures by metric. The rows are indexed once: filtering the
    frame for each table row cost more than building the row."""

    COLUMNS = ["table", "dataset", "size", "method", "model", "metric", "mean", "std"]

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self._by_row: dict = {}
        for r in frame.itertuples():
            if pd.notna(r.mean):  # a later duplicate of a metric overrides it, as a dict built in file order did
                key = (r.table, r.dataset, str(r.size), r.method, r.model)
                self._by_row.setdefault(key, {})[r.metric] = float(r.mean)

    def cells(self, table: str, dataset: str, size: str, method: str, model: str = "SASRec") -> dict:
        """{metric: the paper's mean} of one row ({} when the paper has none); ``dataset``
        by our name (PAPER_DATASET maps a stand-in to the paper's)."""
        return dict(self._by_row.get((table, PAPER_DATASET.get(dataset, dataset), size, method, model), {}))


def paper_lookup(path: Path | None) -> PaperFigures:
    if path is None or not Path(path).is_file():
        return PaperFigures(pd.DataFrame(columns=PaperFigures.COLUMNS))
    return PaperFigures(pd.read_csv(path))


def not_run_rows(t: "Table", paper: PaperFigures, absent: list[str], model: str | None = None) -> None:
    """Rows of the paper's datasets that have no run at all: the paper's figures, "not run"
    (in a table that has rows of ours: a table of nothing but the paper's figures says nothing)."""
    if not t.rows:
        return
    order = ["Random", "Longest", "Farzi", "TD3", "Full-Data"]
    figures = paper.frame
    for dataset in absent:
        sub = figures[(figures["table"] == t.name) & (figures["dataset"] == dataset)]
        if model is not None:
            sub = sub[sub["model"] == model]
        if sub.empty:
            continue
        keys = sub[["size", "method"]].drop_duplicates()
        keys = keys.assign(full=keys["method"] == "Full-Data", rank=keys["method"].map(order.index))
        for r in keys.sort_values(["full", "rank"], kind="stable").itertuples():
            size = str(r.size)
            if t.name == "table2":
                group, label = dataset, ("Full-Data" if r.full else f"TD3 {size}")
            elif t.name == "table3":
                group, label = f"{dataset} {size}", r.method
            else:
                group, label = f"{dataset} {MODEL_LABELS.get(model.lower(), model)}", (
                    "full data" if r.full else f"TD3 {size}")
            t.add(group, label, "full" if r.full else r.method.lower(), {},
                  paper=paper.cells(t.name, dataset, size, r.method, model or "SASRec"), not_run=True)


# ------------------------------------------------------------------ tables
def table2(sv: pd.DataFrame, ranking: str, protocol: str, paper: PaperFigures, absent: list[str]) -> Table:
    t = Table("table2", f"Table 2: TD3 by summary size against Full-Data ({ranking} ranking, {protocol} evaluation)",
              METRICS)
    use_paper = ranking == PAPER_RANKING
    for dataset, d in sv.groupby("dataset"):  # in sorted order, without the runs of no dataset
        full = d[d["method"] == "full"]
        td3 = d[(d["method"] == "td3") & (d["summary_protocol"] == protocol)]
        # the FSA × ALT ablation has its own table (6); other variants (ranks) stay as rows
        td3 = td3[~td3["variant"].str.contains(r"(?:^| )(?:fsa|alt)=", regex=True)]
        if td3.empty and full.empty:
            continue
        ref = None
        if not full.empty:
            full_row = RowValues(full, [], METRICS)
            ref = t.add(dataset, "Full-Data", "full", full_row.cells(), budget=full_row.budget(),
                        paper=paper.cells("table2", dataset, "full", "Full-Data") if use_paper else None)
        td3_rows = RowValues(td3, ["size", "variant"], METRICS)
        for (size, variant), g in sorted(td3.groupby(["size", "variant"]), key=lambda kv: (kv[1]["interactions"].iloc[0], kv[0][1])):
            label = f"TD3 {size}" + (f" ({variant})" if variant else "")
            t.add(dataset, label, "td3", td3_rows.cells((size, variant)), reference=ref,
                  budget=td3_rows.budget((size, variant)),
                  paper=paper.cells("table2", dataset, size, "TD3") if use_paper and not variant else None,
                  extra={"size": size, "variant": variant})
    if use_paper:
        not_run_rows(t, paper, absent)
    return t


def table3(sv: pd.DataFrame, ranking: str, protocol: str, paper: PaperFigures, absent: list[str]) -> Table:
    t = Table("table3", f"Table 3: methods at one summary size ({ranking} ranking, {protocol} evaluation of summaries)",
              METRICS)
    use_paper = ranking == PAPER_RANKING
    shown = sv[((sv["summary_protocol"] == protocol) | (sv["summary_protocol"] == "-")) & (sv["variant"] == "")]
    for dataset, d in shown.groupby("dataset"):  # in sorted order, without the runs of no dataset
        sizes = d[d["method"].isin(["random", "longest", "farzi"])]["size"].unique()
        # one row per method and size (Full-Data: one row, whatever the size)
        rows = RowValues(d, ["method", "size"], METRICS)
        present = set(d.groupby(["method", "size"]).groups)  # the (method, size) pairs that ran
        full = d[d["method"] == "full"]
        full_row = RowValues(full, [], METRICS)
        for size in sorted(sizes, key=lambda s: int(s.split("x")[0]) * int(s.split("x")[1])):
            group = f"{dataset} {size}"
            ref = None
            if not full.empty:  # added first, moved last below: the paper puts Full-Data last
                ref = t.add(group, "Full-Data", "full", full_row.cells(), budget=full_row.budget(),
                            paper=paper.cells("table3", dataset, size, "Full-Data") if use_paper else None)
            for method in METHOD_ORDER:
                if method == "full" or (method, size) not in present:
                    continue
                t.add(group, METHOD_LABELS[method], method, rows.cells((method, size)), reference=ref,
                      budget=rows.budget((method, size)), extra={"size": size},
                      paper=paper.cells("table3", dataset, size, METHOD_LABELS[method]) if use_paper else None)
            if ref is not None:
                t.rows.append(t.rows.pop(ref))
                moved = len(t.rows) - 1
                for r in t.rows:
                    if r["group"] == group and r["reference"] == ref:
                        r["reference"] = moved
                    elif r["reference"] is not None and r["reference"] > ref:
                        r["reference"] -= 1
    if use_paper:
        not_run_rows(t, paper, absent)
    return t


def table4(values: pd.DataFrame, runs: pd.DataFrame, ranking: str, protocol: str, paper: PaperFigures,
           absent: list[str]) -> Table:
    cols = ["HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "MRR@20"]
    t = Table("table4", f"Table 4: architectures trained on a SASRec summary / on the full data ({ranking} ranking, "
                        f"{protocol} evaluation)", cols)
    use_paper = ranking == PAPER_RANKING
    # astype: with no record read, the column is all NaN, of floats
    multi = runs[runs["models"].astype(str).str.contains(",", na=False)]
    datasets = sorted(multi["dataset"].dropna().unique())
    for model in ["sasrec", "gru4rec", "narm", "bert4rec"] if datasets else []:  # no such run: nothing to compute
        sv = seed_values(values, runs, ranking, model=model)
        for dataset in datasets:
            d = sv[sv["dataset"] == dataset]
            # TD3's summaries, then any other method's evaluated on several architectures (Farzi's)
            summaries = d[(d["method"] != "full") & (d["summary_protocol"] == protocol) & d["run_dir"].isin(multi["run_dir"])]
            full = d[d["method"] == "full"]
            if not (summaries["method"] == "td3").any():
                continue
            group = f"{dataset} {MODEL_LABELS[model]}"
            # one row per size, method and variant: the set of distilling learners (the run's
            # model alone: no label), and any other setting the run departs in
            summaries = summaries.assign(learners=summaries["variant"])
            full_row = RowValues(full, [], cols)
            rows = RowValues(summaries, ["size", "method", "learners"], cols)
            order = {m: i for i, m in enumerate(METHOD_LABELS)}  # TD3 first, as METHOD_LABELS lists it
            keys = sorted(summaries.groupby(["size", "method", "learners"]).groups,
                          key=lambda k: (k[0], order.get(k[1], len(order)), k[1], k[2]))
            for size in sorted(summaries["size"].unique()):
                ref = None
                if not full.empty:
                    ref = t.add(group, "full data", "full", full_row.cells(), budget=full_row.budget(),
                                paper=paper.cells("table4", dataset, "full", "Full-Data", MODEL_LABELS[model])
                                if use_paper else None, extra={"model": model})
                for _, method, learners in (k for k in keys if k[0] == size):
                    label = f"{METHOD_LABELS.get(method, method)} {size}" + (f" ({learners})" if learners else "")
                    t.add(group, label, method, rows.cells((size, method, learners)),
                          budget=rows.budget((size, method, learners)), reference=ref,
                          extra={"model": model, "size": size, **({"variant": learners} if learners else {})},
                          paper=paper.cells("table4", dataset, size, "TD3", MODEL_LABELS[model])
                          if use_paper and method == "td3" and not learners else None)
    if any((row.get("extra") or {}).get("variant") for row in t.rows):
        t.title = t.title[:-1] + "; learners=...: a summary distilled through several learners; other labels: the settings a summary departs in)"
    if use_paper:
        for model in MODEL_LABELS.values():
            not_run_rows(t, paper, absent, model=model)
    return t


def item_table(sv: pd.DataFrame, ranking: str, protocol: str) -> Table:
    """The inner learner's item table (``distill.inner.embedding``), frozen to the teacher's
    against trainable, per method at each size where both ran; the trainable row is marked
    against the frozen one (underlined: above it), Full-Data beside for scale."""
    t = Table("table_item_table", f"The inner learner's item table, frozen (the teacher's) against trainable "
                                  f"({ranking} ranking, {protocol} evaluation; trainable marked against frozen)",
              METRICS)
    d = sv[sv["method"].isin(["td3", "farzi"]) & (sv["summary_protocol"] == protocol)]
    # the runs that differ from their method's usual settings by the item table alone, or not at all
    d = d[d["variant"].str.replace(r"(?:^| )embedding=\S+", "", regex=True).str.strip() == ""]
    full = sv[sv["method"] == "full"]
    for (dataset, size), g in sorted(d.groupby(["dataset", "size"]), key=lambda kv: (kv[0][0], kv[1]["interactions"].iloc[0])):
        both = [m for m in METHOD_ORDER if set(g.loc[g["method"] == m, "embedding"]) >= {"frozen", "trainable"}]
        if not both:
            continue
        group = f"{dataset} {size}"
        rows = RowValues(g, ["method", "embedding"], METRICS)
        f = full[full["dataset"] == dataset]
        if not f.empty:
            full_row = RowValues(f, [], METRICS)
            t.add(group, "Full-Data", "full", full_row.cells(), budget=full_row.budget())
        for method in both:
            ref = t.add(group, f"{METHOD_LABELS[method]}, frozen", method, rows.cells((method, "frozen")),
                        budget=rows.budget((method, "frozen")), extra={"size": size, "embedding": "frozen"})
            t.add(group, f"{METHOD_LABELS[method]}, trainable", method, rows.cells((method, "trainable")),
                  reference=ref, budget=rows.budget((method, "trainable")),
                  extra={"size": size, "embedding": "trainable"})
    return t


#: The distillation settings the settings table compares (issue 17's small-data defaults).
SETTING_KEYS = ("outer_epochs", "min_steps", "outer_lr", "d1", "d2", "embedding", "learn_lr")
_VARIANT_KEY = re.compile(r"(?:^| )([a-z_0-9]+)=")


def settings_table(sv: pd.DataFrame, ranking: str, protocol: str, against: str) -> Table:
    """TD3 and Farzi at every setting of the outer loop they ran (outer epochs, min_steps,
    outer lr, ranks, item table) at a size where such a setting departs from the usual one,
    each row marked against Random (``against="random"``) or TD3 against Farzi at the same
    setting (``against="farzi"``); Full-Data beside for scale."""
    name = {"random": "table_settings", "farzi": "table_settings_farzi"}[against]
    t = Table(name, f"Distillation settings: TD3 and Farzi against Random ({ranking} ranking, {protocol} evaluation; "
                    "marked against Random)" if against == "random" else
              f"Distillation settings: TD3 against Farzi at the same setting ({ranking} ranking, {protocol} "
              "evaluation; marked against Farzi)", METRICS)
    d = sv[sv["method"].isin(["td3", "farzi"]) & (sv["summary_protocol"] == protocol)]
    if d.empty:
        return t
    keys = d["variant"].map(lambda v: set(_VARIANT_KEY.findall(v)))
    d = d.loc[keys.map(lambda k: k <= set(SETTING_KEYS)).astype(bool)]
    outer = d["variant"].map(lambda v: bool(set(_VARIANT_KEY.findall(v)) - {"embedding"})).astype(bool)
    for (dataset, size), g in sorted(d.groupby(["dataset", "size"]), key=lambda kv: (kv[0][0], kv[1]["interactions"].iloc[0])):
        if not outer.loc[g.index].any():  # the item table alone: the item-table table has it
            continue
        base = sv[(sv["dataset"] == dataset) & (sv["size"] == size) & (sv["variant"] == "")]
        random = base[base["method"] == "random"]
        ran = set(g.groupby(["method", "variant"]).groups)
        if random.empty if against == "random" else not any(("farzi", v) in ran for v in g["variant"].unique()):
            continue  # nothing to compare against at this size
        group = f"{dataset} {size}"
        full = sv[(sv["dataset"] == dataset) & (sv["method"] == "full") & (sv["variant"] == "")]
        if not full.empty:
            full_row = RowValues(full, [], METRICS)
            t.add(group, "Full-Data", "full", full_row.cells(), budget=full_row.budget())
        rows = RowValues(g, ["method", "variant"], METRICS)
        variants = sorted({v for _, v in ran}, key=lambda v: (v != "", v))
        if against == "random":
            random_row = RowValues(random, [], METRICS)
            ref = t.add(group, "Random", "random", random_row.cells(), budget=random_row.budget(), extra={"size": size})
            for method in ("farzi", "td3"):
                for v in variants:
                    if (method, v) in ran:
                        t.add(group, METHOD_LABELS[method] + (f" ({v})" if v else ""), method, rows.cells((method, v)),
                              reference=ref, budget=rows.budget((method, v)), extra={"size": size, "setting": v})
        else:  # Farzi has no ranks: a TD3 setting meets Farzi's at the same setting but d1/d2
            for v in variants:
                shared = re.sub(r"(?:^| )d[12]=\S+", "", v).strip()
                if ("td3", v) not in ran or ("farzi", shared) not in ran:
                    continue
                ref = t.add(group, "Farzi" + (f" ({shared})" if shared else ""), "farzi", rows.cells(("farzi", shared)),
                            budget=rows.budget(("farzi", shared)), extra={"size": size, "setting": shared})
                t.add(group, "TD3" + (f" ({v})" if v else ""), "td3", rows.cells(("td3", v)), reference=ref,
                      budget=rows.budget(("td3", v)), extra={"size": size, "setting": v})
    return t


def table6(sv: pd.DataFrame, ranking: str, protocol: str, paper: PaperFigures) -> Table:
    t = Table("table6", f"Table 6: FSA × ALT ({ranking} ranking, {protocol} evaluation)", METRICS)
    use_paper = ranking == PAPER_RANKING
    td3 = sv[(sv["method"] == "td3") & (sv["summary_protocol"] == protocol)]
    for (dataset, size), d in td3.groupby(["dataset", "size"]):
        combos = d[["fsa", "alt"]].drop_duplicates()
        if len(combos) < 2:
            continue
        d = d[d["variant_wo_ablation"] == ""]
        rows = RowValues(d, ["fsa", "alt"], METRICS)
        for fsa, alt in [(False, False), (True, False), (False, True), (True, True)]:
            if not ((d["fsa"] == fsa) & (d["alt"] == alt)).any():
                continue
            name = {(False, False): "none", (True, False): "FSA", (False, True): "ALT", (True, True): "FSA+ALT"}[(fsa, alt)]
            t.add(f"{dataset} {size}", f"TD3[{name}]", "td3", rows.cells((fsa, alt)), budget=rows.budget((fsa, alt)),
                  paper=paper.cells("table6", dataset, size, f"TD3[{name}]") if use_paper else None,
                  extra={"fsa": fsa, "alt": alt})
    return t


def table5(values: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Cost per dataset at each size: distillation, full-data training, summary training."""
    rows = []
    ok = runs[runs["status"] == "complete"]
    # one row per evaluated learner (its training seconds), whatever protocols it was ranked under
    train = values[(values["split"] == "test") & (values["metric"] == "NDCG@10")].drop_duplicates(
        ["run_dir", "model", "learner_seed"])
    for dataset, d in ok.groupby("dataset"):
        full = d[d["method"] == "full"]
        full_train = train[train["run_dir"].isin(full["run_dir"]) & (train["model"] == "sasrec")]["train_seconds"]
        td3 = d[d["method"] == "td3"]
        variant = td3["variant"] if "variant" in td3 else pd.Series("", index=td3.index)
        made = td3[td3["distill_cached"] == False]  # noqa: E712 - the runs that distilled
        # one row per size and variant (ranks, FSA/ALT off cost differently), smallest size first
        groups = made.groupby([made["size"], variant.loc[made.index].rename("variant")])
        for (size, label), g in sorted(groups, key=lambda kv: (kv[1]["interactions"].iloc[0], kv[0][1])):
            same = td3[(td3["size"] == size) & (variant == label)]
            summ_train = train[train["run_dir"].isin(same["run_dir"]) & (train["model"] == "sasrec")]["train_seconds"]
            rows.append({
                "dataset": dataset, "size": size + (f" ({label})" if label else ""), "runs": len(g),
                "distill_seconds": g["distill_seconds"].mean(), "distill_seconds_std": g["distill_seconds"].std(),
                "seconds_per_outer_step": g["seconds_per_outer_step"].mean(),
                "distill_peak_mb": g["peak_memory_mb"].mean(),
                "full_train_seconds": full_train.mean() if len(full_train) else math.nan,
                "full_train_peak_mb": full["peak_memory_mb"].mean() if len(full) else math.nan,
                "summary_train_seconds": summ_train.mean() if len(summ_train) else math.nan,
                "speedup": (full_train.mean() / summ_train.mean()) if len(full_train) and len(summ_train) else math.nan,
            })
    return pd.DataFrame(rows)


def _duration(seconds: float) -> str:
    if seconds is None or not np.isfinite(seconds):
        return MISSING
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _number(value: float, fmt: str, suffix: str = "") -> str:
    return f"{value:{fmt}}{suffix}" if value is not None and np.isfinite(value) else MISSING


def table5_markdown(df: pd.DataFrame) -> str:
    lines = ["### Table 5: cost (the machine the runs were made on)", "",
             "| dataset | size | runs | distillation | s / outer step | peak MB | full-data training | peak MB | "
             "training on the summary | speed-up |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.dataset} | {r.size} | {r.runs} | {_duration(r.distill_seconds)} | "
                     f"{_number(r.seconds_per_outer_step, '.2f')} | {_number(r.distill_peak_mb, '.0f')} | "
                     f"{_duration(r.full_train_seconds)} | {_number(r.full_train_peak_mb, '.0f')} | "
                     f"{_duration(r.summary_train_seconds)} | {_number(r.speedup, '.1f', '×')} |")
    return "\n".join(lines) + "\n"


TIMES = "$\\times$"


def table5_latex(df: pd.DataFrame) -> str:
    out = ["% Table 5: cost", "\\begin{tabular}{llrrrrrr}", "\\toprule",
           "dataset & size & distillation & peak MB & full-data training & peak MB & summary training & speed-up \\\\",
           "\\midrule"]
    for r in df.itertuples():
        out.append(f"{r.dataset} & {r.size} & {_duration(r.distill_seconds)} & {_number(r.distill_peak_mb, '.0f')} & "
                   f"{_duration(r.full_train_seconds)} & {_number(r.full_train_peak_mb, '.0f')} & "
                   f"{_duration(r.summary_train_seconds)} & {_number(r.speedup, '.1f', TIMES)} \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(out) + "\n"


FIGURE_METHODS = ["td3", "farzi", "random", "longest"]
DATASET_TITLES = {"magazine-2018": "magazine-2018 (for Magazine)", "ml-1m-slice": "ml-1m-slice (for ML-1M)"}


def figure4(sv: pd.DataFrame, ranking: str, protocol: str, path: Path, metric: str = "NDCG@10") -> bool:
    """One panel per dataset; one colour per method across panels and one legend for the
    figure. Written without a timestamp or version stamp, so the same records give the same
    bytes (with the same matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    of_metric = sv[sv["metric"] == metric]
    d = of_metric[of_metric["method"].isin(FIGURE_METHODS) & (of_metric["variant"] == "")
                  & ((of_metric["summary_protocol"] == protocol) | (of_metric["summary_protocol"] == "-"))]
    # split once by dataset and method, not filtered per panel and line
    by_dataset_method = dict(iter(d.groupby(["dataset", "method"])))
    full_by_dataset = dict(iter(of_metric[of_metric["method"] == "full"].groupby("dataset")))
    datasets = sorted({dataset for dataset, _ in by_dataset_method})
    if not datasets:
        return False
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(6.4, 4.2 * len(datasets)), 3.8), squeeze=False)
    shown = set()
    for ax, dataset in zip(axes[0], datasets):
        for method in FIGURE_METHODS:
            g = by_dataset_method.get((dataset, method))
            if g is None:
                continue
            shown.add(method)
            per_seed = g.groupby(["interactions", "seed"])["value"].mean().reset_index()
            agg = per_seed.groupby("interactions")["value"].agg(["mean", "std"]).reset_index()
            ax.errorbar(agg["interactions"], 100 * agg["mean"], yerr=100 * agg["std"].fillna(0), marker="o",
                        capsize=3, color=METHOD_COLORS[method])
        full = full_by_dataset.get(dataset)
        if full is not None:
            shown.add("full")
            ax.axhline(100 * full.groupby("seed")["value"].mean().mean(), color=METHOD_COLORS["full"], ls="--")
        ax.set_xscale("log")
        # ticks at the sizes run, labelled in full: log-scale minor labels collide
        sizes = sorted({int(x) for (ds, _), g in by_dataset_method.items() if ds == dataset
                        for x in g["interactions"].unique()})
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.tick_params(axis="x", labelsize=8, labelrotation=30)
        ax.set_title(DATASET_TITLES.get(dataset, dataset), fontsize=10)
        ax.set_xlabel("summary size (μ·ζ interactions)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=METHOD_COLORS[m], marker=None if m == "full" else "o",
                      ls="--" if m == "full" else "-", label=METHOD_LABELS[m])
               for m in FIGURE_METHODS + ["full"] if m in shown]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"Figure 4: {metric} against summary size\n({ranking} ranking, {protocol} evaluation)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return True


# ---------------------------------------------------------------- problems
def problems(runs: pd.DataFrame, results: Path, all_runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that are not complete, and sweep grid points without a complete record.

    Ledger entries name run directories by the absolute path the sweep wrote them under;
    they are matched by the directory's name (which ends with the run's signature), so a
    relative ``--results`` or a results root copied elsewhere reads the same. ``all_runs``:
    every run read, the datasets left out of the tables too (their grid points are not missing)."""
    out = [{"kind": r.status, "what": r.run_dir, "error": r.error} for r in runs.itertuples()
           if r.status != "complete"]
    name = lambda path: Path(str(path)).name  # noqa: E731
    complete = {name(p) for p in all_runs.loc[all_runs["status"] == "complete", "run_dir"]}
    known = {name(p) for p in all_runs["run_dir"]}
    entries = [(f"{sweep_dir}:{key}", entry) for sweep_dir in ledger.sweep_dirs(results)
               for key, entry in ledger.entries(sweep_dir).items()]
    for where, entry in entries:
        if entry.get("status") == "unreadable":
            out.append({"kind": "unreadable ledger entry", "what": where, "error": entry.get("error", "")})
            continue
        run_dir = name(entry.get("run_dir") or "")
        if run_dir and (run_dir in complete or run_dir in known):
            continue  # complete, or listed above as a run that is not
        out.append({"kind": "missing", "what": " ".join(entry.get("overrides", [])) or where,
                    "error": entry.get("error") or f"no complete record ({entry.get('status')})"})
    return pd.DataFrame(out, columns=["kind", "what", "error"])


# --------------------------------------------------------------------- main
#: Files make_tables writes (and removes from --out before writing, so none is stale).
OUTPUT_PATTERNS = ("table*.md", "table*.tex", "table*.csv", "figure4_*.png", "tables.md", "problems.md",
                   "problems.csv", "all_tables.csv", "all_tables.csv.gz", "manifest.json")
CSV_FLOAT = "%.10g"   # ten significant digits: a last-bit change in a library does not change the file


def select_datasets(runs: pd.DataFrame, values: pd.DataFrame, wanted: str | None):
    """Runs and values of the datasets asked for (default: all but NOT_PAPER_DATASETS)."""
    if wanted == "all":
        return runs, values
    if wanted:
        keep = set(wanted.split(","))
        mask = runs["dataset"].isin(keep)
    else:
        mask = ~runs["dataset"].isin(NOT_PAPER_DATASETS)
    runs = runs[mask | runs["dataset"].isna()]
    return runs, values[values["run_dir"].isin(runs["run_dir"])]


def _versions() -> dict:
    import matplotlib
    import scipy
    return {"python": sys.version.split()[0], "pandas": pd.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "matplotlib": matplotlib.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="runs", help="results root (TD3_RESULTS_DIR of the sweep)")
    ap.add_argument("--out", default="tables")
    ap.add_argument("--paper", default=None, help="paper_tables.csv: the paper's figures beside ours")
    ap.add_argument("--datasets", default=None,
                    help="comma-separated datasets to tabulate, or 'all' (default: every dataset but "
                         + ", ".join(NOT_PAPER_DATASETS) + ")")
    ap.add_argument("--holm", action="store_true", help="Holm-adjust p-values over each table")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--no-table-csvs", action="store_true",
                    help="each table's rows in all_tables.csv.gz alone (its ranking and summary_protocol "
                         "columns tell them apart), not also as table*_<ranking>_<protocol>.csv: for a "
                         "root kept in a repository, where the uncompressed copies are most of the tables' size")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results, out = Path(args.results), Path(args.out)
    if not results.is_dir():
        print(f"make_tables: error: results root {results} does not exist", file=sys.stderr)
        return 2
    # every table reads the test split: the validation values would be half of those parsed
    all_runs, all_values = load(results, splits=("test",))
    t_load = time.perf_counter() - t0
    if all_runs.empty:  # before --out is touched: tables of nothing would hide a wrong --results
        print(f"make_tables: error: no run records under {results} (looked for {results / 'distill'}/*/record.json)",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for pattern in OUTPUT_PATTERNS:
        for stale in out.glob(pattern):
            stale.unlink()
    runs, values = select_datasets(all_runs, all_values, args.datasets)
    ok = runs[runs["status"] == "complete"].copy()
    ok["variant"] = variant_labels(ok, ["dataset", "method"]) if len(ok) else ""
    no_ablation = ok.drop(columns=[c for c in ("fsa", "alt")], errors="ignore")
    ok["variant_wo_ablation"] = variant_labels(no_ablation, ["dataset", "method"]) if len(ok) else ""
    paper = paper_lookup(args.paper)
    covered = {PAPER_DATASET.get(d, d) for d in all_runs.loc[all_runs["status"] == "complete", "dataset"].dropna()}
    absent = sorted(set(paper.frame["dataset"]) - covered)

    shown = sorted(ok["dataset"].dropna().unique())
    md = [f"# Tables from {results}", "",
          f"{len(runs)} run directories of {', '.join(shown) or 'no dataset'}, {len(ok)} complete. Values in %, "
          "mean ± std over seeds (n when fewer than 3); **best** per group, <u>above Full-Data</u>, "
          "* p<0.05, ** p<0.01 against Full-Data" + (" (Holm-adjusted)" if args.holm else "")
          + ", marked only with 3 or more seeds on both sides. Ranking protocols: recbole100 (the paper's, "
          "RecBole's negatives), unseen100 (negatives the user never interacted with), full (every item); "
          "summary evaluation: scratch (fresh learners) or paper (the teacher's item table).", ""]
    frames, written = [], []
    for ranking in RANKINGS:
        sv = seed_values(values, ok, ranking)
        for protocol in SUMMARY_PROTOCOLS:
            tables = [table2(sv, ranking, protocol, paper, absent), table3(sv, ranking, protocol, paper, absent),
                      table4(values, ok, ranking, protocol, paper, absent), table6(sv, ranking, protocol, paper),
                      item_table(sv, ranking, protocol), settings_table(sv, ranking, protocol, "random"),
                      settings_table(sv, ranking, protocol, "farzi")]
            for t in tables:
                if not t.rows:
                    continue
                t.finish(args.holm)
                stem = f"{t.name}_{ranking}_{protocol}"
                (out / f"{stem}.md").write_text(t.markdown())
                (out / f"{stem}.tex").write_text(t.latex())
                f = t.frame().assign(ranking=ranking, summary_protocol=protocol)
                if not args.no_table_csvs:
                    f.to_csv(out / f"{stem}.csv", index=False, float_format=CSV_FLOAT)
                frames.append(f)
                md.append(t.markdown())
                written.append(stem)
            if not args.no_figures and figure4(sv, ranking, protocol, out / f"figure4_{ranking}_{protocol}.png"):
                md.append(f"![Figure 4]({f'figure4_{ranking}_{protocol}.png'})\n")
                written.append(f"figure4_{ranking}_{protocol}")
    t5 = table5(values, ok)
    if len(t5):
        t5.to_csv(out / "table5.csv", index=False, float_format=CSV_FLOAT)
        (out / "table5.md").write_text(table5_markdown(t5))
        (out / "table5.tex").write_text(table5_latex(t5))
        md.append(table5_markdown(t5))
        written.append("table5")
    probs = problems(runs, results, all_runs)
    probs.to_csv(out / "problems.csv", index=False)
    lines = ["## Failed and missing runs", ""]
    if probs.empty:
        lines.append("None: every run of every recorded sweep is complete.")
    else:
        lines += ["| kind | run or grid point | error |", "|---|---|---|"]
        lines += [f"| {p.kind} | {p.what} | {str(p.error or '').splitlines()[0][:200] if p.error else ''} |"
                  for p in probs.itertuples()]
    (out / "problems.md").write_text("\n".join(lines) + "\n")
    md.append("\n".join(lines) + "\n")
    if frames:
        # gzip (mtime 0: the same bytes every time): every table's rows, several MB as text
        pd.concat(frames, ignore_index=True).to_csv(out / "all_tables.csv.gz", index=False, float_format=CSV_FLOAT,
                                                    compression={"method": "gzip", "mtime": 0})
    (out / "tables.md").write_text("\n".join(md))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
             if p.is_file() and p.name != "manifest.json" and any(p.match(pat) for pat in OUTPUT_PATTERNS)}
    manifest = {"command": ["python", "analysis/make_tables.py", *(argv if argv is not None else sys.argv[1:])],
                "runs": len(runs), "complete": len(ok), "datasets": shown, "versions": _versions(), "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"make_tables: {len(runs)} runs ({len(ok)} complete, {len(probs)} problems) read in {t_load:.1f} s, "
          f"{len(written)} tables/figures written to {out} in {time.perf_counter() - t0:.1f} s")
    left_out = sorted(set(all_runs["dataset"].dropna()) - set(runs["dataset"].dropna()))
    if left_out:
        print(f"make_tables: left out {len(all_runs) - len(runs)} runs of {', '.join(left_out)} "
              f"(--datasets {','.join(left_out)} or --datasets all tabulates them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
