"""Is a results root reproducible? ``python -m td3.audit DIR [--rerun K] [--tolerance T]``.

Checks every run record under ``DIR/distill`` and ``DIR/train``:

- readable: ``record.json`` parses (a truncated file does not);
- complete: status ``complete`` (a failed or unfinished run is listed with its error);
- sealed: the record's seal (sha256 of the record without it, written with the record)
  still matches, and so do the sha256 of its files (per-user metrics, summary, config):
  any later edit of a record or of its files is detected. Records written before seals
  existed are reported as unsealed (a warning);
- signature: the signature recomputed from the record's config equals the record's and the
  directory's name, and ``config.json`` holds the same config (a hand-edited config fails;
  a published root leaves it out and its digest is checked against the record's config);
- metrics: the record's test metrics equal the mean of its per-user values;
- protocols: which ranking protocols each record holds; a record without ``recbole100``
  (the paper's) is a warning, and one written before ``unseen100`` had its name says that
  its ``uni100`` is ``unseen100``;
- consistent: one dataset checksum per dataset (several fail); several git shas or sets of
  package versions are listed as a warning (a replication made over several sessions);
- no duplicates (two directories with one signature) and no orphans (run directories
  without a record, summaries no run uses);
- grid: every grid point of every recorded sweep (``DIR/sweeps/*/*/multirun.yaml``) has a
  complete record;
- rerun (``--rerun K``): K runs drawn at random (``--seed``) are run again from their
  configs in a scratch results root (their teacher copied, not retrained) and their
  metrics compared: bitwise on the machine, packages and commit that made them, within
  ``--tolerance`` elsewhere.

Prints a verdict table and exits 1 on any failure (2 on bad usage).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from . import layout, ledger, records


@dataclass
class Check:
    name: str
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def verdict(self) -> str:
        return "FAIL" if self.failures else ("WARN" if self.warnings else "PASS")


class Audit:
    def __init__(self, root: Path):
        self.root = root
        self.checks: dict[str, Check] = {}
        self.runs: dict[Path, dict] = {}  # run dir -> record (readable ones)

    def check(self, name: str) -> Check:
        return self.checks.setdefault(name, Check(name))

    # ------------------------------------------------------------ per record
    def run_dirs(self) -> list[Path]:
        out = []
        for kind in ("distill", "train"):
            base = self.root / kind
            if base.is_dir():
                out += sorted(p for p in base.iterdir() if p.is_dir())
        return out

    def read_all(self) -> None:
        readable, complete, orphans = self.check("readable"), self.check("complete"), self.check("orphans")
        for run_dir in self.run_dirs():
            path = run_dir / records.RECORD_NAME
            if not path.exists():
                orphans.checked += 1
                what = "a checkpoint, no record (unfinished or killed)" if any(
                    (run_dir / n).exists() for n in ("last.pt", "config.json")) else "no record"
                orphans.failures.append(f"{run_dir}: {what}")
                continue
            readable.checked += 1
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                readable.failures.append(f"{path}: unreadable ({exc})")
                continue
            self.runs[run_dir] = record
            complete.checked += 1
            if record.get("status") != "complete":
                complete.failures.append(f"{run_dir}: status {record.get('status')!r}: {record.get('error')}")

    def check_seals(self) -> None:
        c = self.check("sealed")
        for run_dir, record in self.runs.items():
            c.checked += 1
            if "seal" not in record:
                c.warnings.append(f"{run_dir}: unsealed (written before records carried a seal)")
                continue
            if records.seal_of(record) != record["seal"]:
                c.failures.append(f"{run_dir}: record.json was edited after it was written (seal mismatch)")
            for name, digest in (record.get("files") or {}).items():
                try:
                    actual = records.sealed_sha256(run_dir, name)
                except Exception as exc:  # noqa: BLE001 - a damaged packed file is the finding
                    actual = f"unreadable ({exc})"
                if records.sealed_path(run_dir, name) is None and records.withheld(run_dir, name):
                    c.warnings.append(f"{run_dir}: {name} withheld from this root (larger than "
                                      f"{records.PUBLISH_LIMIT >> 10} KiB); its digest is the record's")
                if actual is None:
                    c.failures.append(f"{run_dir}: {name} is missing")
                elif actual != digest:
                    c.failures.append(f"{run_dir}: {name} changed after the record was written")

    def check_signatures(self) -> None:
        c = self.check("signature")
        by_signature = defaultdict(list)
        for run_dir, record in self.runs.items():
            c.checked += 1
            config = record.get("config")
            if not isinstance(config, dict):
                c.failures.append(f"{run_dir}: no config in the record")
                continue
            sig = records.signature(config)
            by_signature[sig].append(run_dir)
            if sig != record.get("signature"):
                c.failures.append(f"{run_dir}: config hashes to {sig}, record says {record.get('signature')}")
            if not run_dir.name.endswith(sig):
                c.failures.append(f"{run_dir}: directory name does not end with the config's signature {sig}")
            cfg_file = run_dir / "config.json"
            if cfg_file.is_file():
                try:
                    if json.loads(cfg_file.read_text()) != json.loads(records.canonical_json(config)):
                        c.failures.append(f"{run_dir}: config.json differs from the record's config")
                except ValueError:
                    c.failures.append(f"{run_dir}: config.json is unreadable")
        d = self.check("duplicates")
        d.checked = len(by_signature)
        for sig, dirs in by_signature.items():
            if len(dirs) > 1:
                d.failures.append(f"signature {sig} in {len(dirs)} directories: {', '.join(map(str, dirs))}")

    def check_metrics(self) -> None:
        c = self.check("metrics")
        for run_dir, record in self.runs.items():
            if record.get("status") != "complete" or not record.get("per_user"):
                continue
            c.checked += 1
            try:
                frame = records.read_per_user(run_dir, record["per_user"])
            except Exception as exc:  # noqa: BLE001 - any unreadable file is the finding
                c.failures.append(f"{run_dir}: per-user metrics unreadable ({exc})")
                continue
            expected = _per_user_means(record, frame)
            for key, value in expected.items():
                split, protocol, metric = key
                stated = (record.get("metrics") or {}).get(split, {}).get(protocol, {}).get(metric)
                if stated is None or not math.isclose(stated, value, rel_tol=1e-9, abs_tol=1e-12):
                    c.failures.append(f"{run_dir}: {split}/{protocol}/{metric} is {stated}, its per-user mean {value:.6g}")
                    break

    def check_protocols(self) -> None:
        from .evaluate import LEGACY_PROTOCOLS, PROTOCOLS

        c = self.check("protocols")
        legacy = 0
        for run_dir, record in self.runs.items():
            held = list(((record.get("metrics") or {}).get("test") or {}))
            if record.get("status") != "complete" or not held:
                continue
            c.checked += 1
            unknown = [p for p in held if p not in PROTOCOLS and p not in LEGACY_PROTOCOLS]
            if unknown:
                c.failures.append(f"{run_dir}: unknown ranking protocol(s) {unknown}")
            if "recbole100" not in held:
                c.warnings.append(f"{run_dir}: no recbole100 (the paper's ranking protocol); holds "
                                  + ", ".join(f"{p} (= {LEGACY_PROTOCOLS[p]})" if p in LEGACY_PROTOCOLS else p
                                              for p in held))
            legacy += any(p in LEGACY_PROTOCOLS for p in held)
        if legacy:
            c.notes.append(f"{legacy} record(s) name unseen100 by its earlier name uni100")

    def check_consistency(self) -> None:
        c = self.check("consistent")
        datasets, shas, packages = defaultdict(set), defaultdict(list), defaultdict(list)
        for run_dir, record in self.runs.items():
            c.checked += 1
            ds = record.get("dataset") or {}
            if ds.get("name"):
                datasets[ds["name"]].add(ds.get("sha256"))
            shas[(record.get("git") or {}).get("sha")].append(run_dir)
            packages[records.canonical_json({k: v for k, v in (record.get("packages") or {}).items()})].append(run_dir)
            if (record.get("git") or {}).get("dirty"):
                c.warnings.append(f"{run_dir}: made from a checkout with uncommitted changes")
        for name, sums in datasets.items():
            if len(sums) > 1:
                c.failures.append(f"dataset {name}: {len(sums)} different checksums across runs: {sorted(map(str, sums))}")
        # A results root built over several sessions (a replication that takes days) holds
        # runs of several code versions and machines: said, not failed; --rerun checks that
        # a run still reproduces with the code and packages at hand.
        if len(shas) > 1:
            c.warnings.append(f"runs of {len(shas)} code versions: "
                              + ", ".join(f"{str(s)[:12]} ({len(d)} runs)" for s, d in shas.items()))
        if len(packages) > 1:
            differ = sorted({name for key in packages for name, version in json.loads(key).items()
                             if any(json.loads(other).get(name) != version for other in packages)})
            c.warnings.append(f"runs of {len(packages)} sets of package versions (differing: {', '.join(differ)})")

    def check_orphan_summaries(self) -> None:
        c = self.check("orphans")
        # by name, not by the absolute path a record holds: a results root copied off the
        # cluster (rsync, a tarball) is audited where it now is
        used = {Path(r["summary"]["dir"]).name for r in self.runs.values() if (r.get("summary") or {}).get("dir")}
        base = self.root / "summaries"
        if base.is_dir():
            for d in sorted(p for p in base.iterdir() if p.is_dir()):
                c.checked += 1
                marker = layout.SUMMARY_MARKER
                finished = any((d / n).exists() for n in (marker, marker + records.PACKED_SUFFIX))
                if d.name not in used and finished:
                    c.warnings.append(f"{d}: a summary no run record uses")
                elif not finished:
                    c.warnings.append(f"{d}: an unfinished summary (its distillation did not complete)")

    def check_grid(self) -> None:
        from .sweep import grid_runs

        c = self.check("grid")
        index, composed = ledger.index(self.root), {}
        for multirun in sorted((self.root / "sweeps").glob("*/*/multirun.yaml")):
            try:
                points = grid_runs(multirun.parent, self.root, index, composed)
            except Exception as exc:  # noqa: BLE001
                c.failures.append(f"{multirun.parent}: the grid cannot be expanded ({exc})")
                continue
            for job, run_dir, _ in points:
                c.checked += 1
                if not records.is_complete(run_dir, verify=False):  # seals: the "sealed" check
                    c.failures.append(f"{multirun.parent.parent.name}: grid point {' '.join(job)} has no complete "
                                      f"record ({run_dir.name})")
            moved = sum(m for _, _, m in points)
            if moved:
                c.warnings.append(f"{multirun.parent}: {moved} of {len(points)} grid points compose today into runs "
                                  f"other than the ones the sweep ran (a default changed since): relaunching "
                                  f"this sweep as it was would run them again")

    # -------------------------------------------------------------- reruns
    def rerun(self, k: int, seed: int, tolerance: float) -> None:
        from .run import run

        c = self.check("reproduces")
        candidates = sorted(d for d, r in self.runs.items()
                            if r.get("status") == "complete" and r.get("kind") == "distill")
        sample = random.Random(seed).sample(candidates, min(k, len(candidates)))
        # the commit too: a later commit may change the numbers' last bits (a sum reordered),
        # which the package versions do not show while td3's own version stays
        here = records.environment()["host"], records.package_versions(), records.git_state().get("sha")
        for run_dir in sample:
            c.checked += 1
            record = self.runs[run_dir]
            cfg = json.loads(json.dumps(record["config"]))
            with tempfile.TemporaryDirectory(prefix="td3-audit-") as scratch:
                cfg["results_dir"] = scratch
                cfg["progress"] = False
                # with the original's thread count: it is not in the signature, yet a
                # different count changes float summation order and so the numbers
                cfg["threads"] = (record.get("environment") or {}).get("torch_threads") or cfg.get("threads")
                # and on its device: a GPU draws dropout from its own generator (docs/gpu.md)
                cfg["device"] = (record.get("environment") or {}).get("device") or cfg.get("device")
                teacher = (record.get("teacher") or {}).get("run")
                if teacher and Path(teacher).is_dir():  # copy the teacher: the audit re-runs the distillation
                    shutil.copytree(teacher, Path(scratch) / "train" / Path(teacher).name)
                result = run(cfg)
                if result.status not in ("complete", "skipped"):
                    c.failures.append(f"{run_dir.name}: the re-run failed: {result.error}")
                    continue
                again = records.read_record(result.run_dir)
            same_place = ((record.get("environment") or {}).get("host"), record.get("packages"),
                          (record.get("git") or {}).get("sha")) == here
            worst = _max_difference(record.get("metrics") or {}, again.get("metrics") or {})
            if same_place and worst != 0.0:
                c.failures.append(f"{run_dir.name}: re-run differs (max |Δ| = {worst:.3g}); same machine, "
                                  f"packages and commit, so it should be bitwise")
            elif not same_place and worst > tolerance:
                c.failures.append(f"{run_dir.name}: re-run differs by {worst:.3g} > tolerance {tolerance}")
            else:
                how = "bitwise" if worst == 0.0 else f"within {tolerance} (max |Δ| = {worst:.3g})"
                c.notes.append(f"{run_dir.name}: reproduces {how}")

    # -------------------------------------------------------------- report
    def report(self) -> int:
        order = ["readable", "complete", "sealed", "signature", "metrics", "protocols", "duplicates", "orphans",
                 "consistent", "grid", "reproduces"]
        rows = [self.checks[n] for n in order if n in self.checks]
        width = max(len(r.name) for r in rows) if rows else 10
        print(f"td3 audit of {self.root}: {len(self.runs)} records")
        print(f"  {'check':<{width}}  verdict  checked  problems")
        for r in rows:
            print(f"  {r.name:<{width}}  {r.verdict:<7}  {r.checked:>7}  {len(r.failures) + len(r.warnings)}")
        for r in rows:
            for line in r.failures:
                print(f"FAIL {r.name}: {line}")
            for line in r.warnings:
                print(f"warn {r.name}: {line}")
            for line in r.notes:
                print(f"ok   {r.name}: {line}")
        failed = any(r.failures for r in rows)
        print("verdict:", "FAIL" if failed else "PASS")
        return 1 if failed else 0


def _per_user_means(record: dict, frame) -> dict:
    """{(split, protocol, metric): mean over users} of what the record's ``metrics`` summarise:
    a training run's users, or a distillation run's first evaluated model over its learner
    seeds (every seed ranks the same users, so the mean of the seeds' means is this mean)."""
    if "model" in frame.columns:
        first = ((record.get("evaluations") or [{}])[0]).get("model")
        frame = frame[frame["model"] == first]
    return frame.groupby(["split", "protocol", "metric"])["value"].mean().to_dict()


def _max_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for split, by_protocol in a.items():
        for protocol, metrics in by_protocol.items():
            for metric, value in metrics.items():
                other = b.get(split, {}).get(protocol, {}).get(metric)
                if other is None:
                    return math.inf
                worst = max(worst, abs(value - other))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m td3.audit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results root (TD3_RESULTS_DIR of the sweep)")
    ap.add_argument("--rerun", type=int, default=0, metavar="K", help="re-run K runs drawn at random")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draw of runs to re-run")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="largest metric difference accepted from a re-run on another machine or packages")
    ap.add_argument("--no-grid", action="store_true", help="skip the grid-completeness check")
    args = ap.parse_args(argv)
    root = Path(args.results)
    if not root.is_dir():
        print(f"td3: error: results root {root} does not exist", file=sys.stderr)
        return 2
    audit = Audit(root.resolve())
    audit.read_all()
    audit.check_seals()
    audit.check_signatures()
    audit.check_metrics()
    audit.check_protocols()
    audit.check_consistency()
    audit.check_orphan_summaries()
    if not args.no_grid:
        audit.check_grid()
    if args.rerun:
        audit.rerun(args.rerun, args.seed, args.tolerance)
    return audit.report()


if __name__ == "__main__":
    sys.exit(main())
