"""Published summaries back into a results root's cache: ``python -m td3.restore PUBLISHED ROOT``.

A distillation's summary is cached under ``ROOT/summaries/<summary>/`` (``td3.layout``), and
every run whose config distils the same summary (other learners, evaluation budgets,
protocols, seeds of the learners) evaluates that cached summary instead of distilling it
again. A published root (``td3.publish``) keeps each summary beside the runs that evaluated
it: ``distill/<run>/summary.pt`` and ``summary.inter.xz``, sealed by the run's record, and
``summaries/<summary>/distill.json.xz``, the optimisation's description. This puts them back
where a results root caches them, so that a new evaluation of a published summary costs its
learners' training only, on another machine, long after the distillation's checkpoints are
gone.

Only what the records' seals vouch for is restored: a run whose record or sealed files were
changed is refused, naming the file. A summary already in ROOT's cache is left as it is.
``summary.pt`` refers to its teacher's item table by digest: the teacher is trained again
from its config where ROOT does not have it, and a run that finds another table refuses the
summary (``td3.summary``), so a restored summary is used only on the teacher it was
distilled on. Training is reproducible to the bit on one kind of machine, not across all:
on another CPU a teacher can come out different in its last bits (docs/performance.md,
"Threads per process"), and its summaries are then refused, not evaluated on a near copy. ``distill.json``, the cache's mark of a complete summary, is written last and
every file atomically: an interrupted restore leaves a summary the runs distil again, never
a half-written one.
"""
from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

from . import layout, records
from .errors import TD3Error


def _summary_name(record: dict) -> str | None:
    """The cache directory's name of the summary a record evaluated, or None (no summary)."""
    directory = (record.get("summary") or {}).get("dir")
    return Path(directory).name if directory else None


def _description(published: Path, name: str) -> bytes | None:
    """The summary's distill.json as its distillation wrote it (published xz-packed)."""
    directory = published / "summaries" / name
    packed = directory / (layout.SUMMARY_MARKER + records.PACKED_SUFFIX)
    if packed.is_file():
        return lzma.decompress(packed.read_bytes())
    plain = directory / layout.SUMMARY_MARKER
    return plain.read_bytes() if plain.is_file() else None


def restore(published: Path, root: Path) -> dict:
    """Restore every summary of ``published``'s complete distillation runs into ``root``'s
    cache; returns counts (restored, present, unavailable) and what could not be restored.
    Every seal is checked before anything is written: a refused root restores nothing."""
    counts = {"restored": 0, "present": 0, "unavailable": 0, "problems": []}
    todo: dict[str, tuple[Path, bytes]] = {}  # summary name -> (the run holding it, its description)
    base = published / "distill"
    for run_dir in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        record = records.read_record(run_dir)
        name = _summary_name(record or {})
        if not record or record.get("status") != "complete" or name is None or name in todo:
            continue
        if records.sealed_path(run_dir, "summary.pt") is None:  # withheld (Farzi's are large)
            continue
        problem = records.seal_problem(run_dir, record)
        if problem:
            raise TD3Error(f"{run_dir.name}: {problem}; no summary of {published} is restored")
        description = _description(published, name)
        if description is None:
            counts["unavailable"] += 1
            counts["problems"].append(f"{name}: no summaries/{name}/{layout.SUMMARY_MARKER}(.xz) in {published}")
            continue
        try:
            json.loads(description)
        except ValueError as exc:
            raise TD3Error(f"{published / 'summaries' / name}: {layout.SUMMARY_MARKER} cannot be read ({exc}); "
                           f"no summary of {published} is restored") from exc
        todo[name] = (run_dir, description)
    for name, (run_dir, description) in todo.items():
        target = root / "summaries" / name
        if (target / layout.SUMMARY_MARKER).is_file():
            counts["present"] += 1
            continue
        with records.exclusive(target):  # a run distilling this summary now holds it
            if (target / layout.SUMMARY_MARKER).is_file():
                counts["present"] += 1
                continue
            for file in ("summary.pt", "summary.inter"):
                if records.sealed_path(run_dir, file) is not None:
                    records.write_bytes(target / file, records.read_sealed(run_dir, file))
            records.write_bytes(target / layout.SUMMARY_MARKER, description)
        counts["restored"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m td3.restore", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("published", help="a published results root (e.g. results/learners-tuned)")
    ap.add_argument("root", help="the results root whose summary cache receives them (its TD3_RESULTS_DIR)")
    args = ap.parse_args(argv)
    published, root = Path(args.published), Path(args.root)
    if not (published / "distill").is_dir():
        print(f"td3: error: {published} is no published results root (it has no distill/)", file=sys.stderr)
        return 2
    try:
        counts = restore(published, root)
    except TD3Error as exc:
        print(f"td3: error: {exc}", file=sys.stderr)
        return 2
    for problem in counts["problems"]:
        print(f"not restored: {problem}")
    print(f"{counts['restored']} summaries restored into {root / 'summaries'}, {counts['present']} already "
          f"there, {counts['unavailable']} without their description")
    return 0


if __name__ == "__main__":
    sys.exit(main())
