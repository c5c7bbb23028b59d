"""The committable part of a results root: ``python -m td3.publish SRC DST``.

A sweep's results root holds what its runs need to resume and reuse (teachers, init
pools, resume checkpoints: hundreds of MB) beside what a reader needs (records, per-user
metrics, summaries: small). This copies the second part into ``DST``, laid out as a
results root, so that ``analysis/make_tables.py --results DST`` and
``python -m td3.audit DST`` work on it:

- ``distill/<run>/`` and ``train/<run>/`` of every *complete* run: ``record.json`` (stored
  on one line: its seal is over its content, not its layout, and a record is 40% smaller on
  disk so; ``python -m json.tool`` shows it laid out) and its sealed files (``per_user.parquet``,
  ``summary.pt``, ``summary.inter``; not ``config.json``, which is the record's config to the
  byte: ``records.read_sealed`` rebuilds it, and its digest checks it); never ``run.log``, ``best.pt``,
  ``pool/``, ``last.pt`` or ``state.pt``. The per-user metrics and the hard sequences are
  stored xz-compressed (``per_user.parquet.xz``,
  ``summary.inter.xz``: ``records.PACKED_FILES``), holding the very bytes their seal names;
  ``records.read_per_user`` and the audit read them as they are. A file over 160 KiB as
  stored (packed, for those; ``records.PUBLISH_LIMIT``) is withheld: ``<name>.withheld`` holds its sha256 and size
  (the audit warns of it);
- ``summaries/<summary>/distill.json`` (the optimisation's history) of the summaries those
  runs used;
- ``sweeps/<name>/<time>/``'s ``multirun.yaml``, ledger (packed into one file, ``jobs.jsonl``:
  ``td3.ledger``) and ``summary.json``, only for sweeps
  whose every grid point has a complete record: a published results root is whole, so its
  audit passes at every commit, and a sweep still running joins it once it is done.

Files are copied atomically and only when new or changed; a run already published with a
different record is refused (a published result is never silently replaced), unless that
record is the same result made again (``same_result``: another session or machine
reproduced a shared teacher or full-data run to the bit): the published record stays, and
the run is counted as reproduced. A summary
file identical to one already published (the runs evaluating one summary under both
protocols, or with other learners, each hold a copy) becomes a relative symbolic link to
it: the same bytes are stored once, and every run directory still reads as complete.
Prints what it copied, what it left out and why, and the size of ``DST``.

``--sweep NAME`` (repeatable) publishes only what the named sweeps made: their grid points'
runs, the teachers and full-data runs those records name, and the sweeps' ledgers (a results
root shared by several experiments, each published to its own ``DST``).

``python -m td3.publish --repack DST`` stores a root published before the current layout in
it (records on one line, files over the size limit withheld, config.json left to the
record) without its source, checking
each record's seal first.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import lzma
import shutil
import sys
from pathlib import Path

from . import layout, ledger, records
from .errors import TD3Error
from .files import atomic_path, file_sha256

#: Files of a run directory that are published (the rest are checkpoints and caches).
#: run.log stays in the sweep's own results root: published results are records, per-user
#: metrics and summaries, under a size limit
RUN_FILES = (records.RECORD_NAME, *records.SEALED_FILES)
UNPUBLISHED_RUN_FILES = ("run.log",)
SUMMARY_FILES = (layout.SUMMARY_MARKER,)  # published xz-packed: the per-step history, 10x smaller
SWEEP_FILES = ("multirun.yaml", "summary.json")
#: Files (as stored) that several run directories hold identical copies of: published once,
#: linked after.
SHARED_FILES = ("summary.pt", "summary.inter" + records.PACKED_SUFFIX)


def _copy(src: Path, dst: Path) -> bool:
    """Copy one file atomically unless ``dst`` already holds the same bytes (itself or
    through a link)."""
    if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
        return False
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return True


def _pack(src: Path, dst: Path, limit: int | None = None) -> bool | None:
    """Store ``src`` xz-compressed as ``dst`` unless ``dst`` already holds its bytes. The
    default preset: its output depends on the bytes alone, so identical files pack to
    identical files (which ``_link_duplicates`` relies on). With ``limit``: None, and
    nothing written, when the packed file would be larger."""
    data = src.read_bytes()
    if dst.is_file():
        try:
            held = dst.read_bytes()
            if lzma.decompress(held) == data:
                return None if limit is not None and len(held) > limit else False
        except lzma.LZMAError:
            pass  # damaged: written again
    packed = lzma.compress(data)
    if limit is not None and len(packed) > limit:
        return None
    with atomic_path(dst) as tmp:
        tmp.write_bytes(packed)
    return True


def _publish_sealed(src: Path, target: Path, record: dict) -> bool:
    """Publish a run's sealed file ``src`` into ``target``: packed if it is one of
    ``records.PACKED_FILES``, withheld when what would be stored is over the size limit (the
    packed file's size for a packed one), replacing what an earlier layout or limit left
    there. Returns whether anything was written."""
    name = src.name
    stand_in = target / (name + records.WITHHELD_SUFFIX)
    if _derivable(src.read_bytes(), name, record):
        return _leave_out_derived(target / name)
    if name in records.PACKED_FILES:
        packed = target / (name + records.PACKED_SUFFIX)
        written = _pack(src, packed, limit=records.PUBLISH_LIMIT)
        if written is None:
            return _withhold(name, src.stat().st_size, target, record)
        (target / name).unlink(missing_ok=True)  # published unpacked before packing existed
    elif src.stat().st_size > records.PUBLISH_LIMIT:
        return _withhold(name, src.stat().st_size, target, record)
    else:
        written = _copy(src, target / name)
    stand_in.unlink(missing_ok=True)  # withheld under a smaller limit, or before packing
    return written


def _derivable(data: bytes, name: str, record: dict) -> bool:
    """Whether a sealed file holds exactly what its record rebuilds (``records.DERIVED_FILES``)."""
    return data == records.rebuilt_bytes(record, name)


def _leave_out_derived(path: Path) -> bool:
    """A derived file is not stored: the record holds its bytes. Removes a copy published
    before; returns whether there was one."""
    if not (path.is_file() or path.is_symlink()):
        return False
    path.unlink()
    return True


#: What a run's result is, beside its signature: the figures, and the digests of its sealed
#: files but config.json (which also holds settings outside the signature: threads, progress).
RESULT_FIELDS = ("kind", "signature", "metrics", "metrics_by_model")


def same_result(published: dict, record: dict) -> bool:
    """Whether two records of one run hold the same result: equal signatures and figures, and
    sealed files of the same bytes (per-user metrics, summary, hard sequences). Timings, the
    commit, the host and the seal may differ: the run was made again and came out the same."""
    def files(r: dict) -> dict:
        return {k: v for k, v in (r.get("files") or {}).items() if k != "config.json"}
    return all(published.get(k) == record.get(k) for k in RESULT_FIELDS) and files(published) == files(record)


def _record_text(record: dict) -> str:
    """A record as published: one line, its keys in the order the run wrote them."""
    return json.dumps(record, separators=(",", ":"), default=str) + "\n"


def _write_record(record: dict, dst: Path) -> bool:
    """Store ``record`` at ``dst`` in its published layout unless it is already there.
    The seal (``records.seal_of``) is over the record's content, so it holds in any layout."""
    text = _record_text(record)
    if dst.is_file() and dst.read_text() == text:
        return False
    records.write_text(dst, text)
    return True


def repack(dst: Path) -> dict:
    """Store every record of a published root in the published layout (one line), leaving
    its content, and so its seal, as it is, and withhold its sealed files over the size
    limit; a record whose seal fails is left untouched and named. Returns counts."""
    counts = {"records": 0, "rewritten": 0, "refused": 0, "derived": 0}
    over = []  # sealed files over records.PUBLISH_LIMIT (published under a larger limit)
    for path in sorted(dst.glob("*/*/" + records.RECORD_NAME)):
        if path.is_symlink():
            continue
        counts["records"] += 1
        record = records.read_record(path.parent)
        if record is None or ("seal" in record and records.seal_of(record) != record["seal"]):
            counts["refused"] += 1
            print(f"not repacked: {path}: unreadable or its seal does not match")
            continue
        counts["rewritten"] += _write_record(record, path)
        for name in records.DERIVED_FILES:
            copy = path.parent / name
            if copy.is_file() and _derivable(copy.read_bytes(), name, record):
                counts["derived"] += _leave_out_derived(copy)
        for name in record.get("files") or {}:
            stored = records.sealed_path(path.parent, name)  # the file, or its packed copy
            if stored is not None and stored.stat().st_size > records.PUBLISH_LIMIT:  # a link: its target's size
                size = len(records.read_sealed(path.parent, name))
                over.append((not stored.is_symlink(), stored, name, size, record))
    # links to such a file (_link_duplicates) first, while the file they read still exists
    counts["withheld"] = sum(_withhold(name, size, stored.parent, record)
                             for _, stored, name, size, record in sorted(over, key=lambda o: o[:2]))
    return counts


def _withhold(name: str, size: int, target: Path, record: dict) -> bool:
    """Publish ``<name>.withheld`` in ``target`` instead of the run's sealed file ``name``
    (``size`` bytes as the run wrote it), which is over ``records.PUBLISH_LIMIT`` as stored."""
    stand_in = target / (name + records.WITHHELD_SUFFIX)
    text = json.dumps({"sha256": record["files"][name], "bytes": size,
                       "kept_in": "the sweep's own results root", "run": target.name}, indent=1) + "\n"
    (target / name).unlink(missing_ok=True)  # published whole before the limit existed
    (target / (name + records.PACKED_SUFFIX)).unlink(missing_ok=True)  # or packed, under a larger one
    if stand_in.is_file() and stand_in.read_text() == text:
        return False
    records.write_text(stand_in, text)
    return True


def _link_duplicates(dst: Path) -> int:
    """Replace every copy of an identical summary file under ``dst/distill`` by a relative
    symbolic link to the first one (in name order); returns how many were linked."""
    first: dict[tuple[str, str], Path] = {}
    linked = 0
    for path in sorted((dst / "distill").glob("*/*")):
        if path.name not in SHARED_FILES or path.is_symlink() or not path.is_file():
            continue
        key = (path.name, file_sha256(path))
        if key not in first:
            first[key] = path
            continue
        link = Path("..") / first[key].parent.name / path.name
        tmp = path.with_name(f".{path.name}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(link)
        tmp.replace(path)
        linked += 1
    return linked


def _grid_complete(sweep_dir: Path, root: Path, index: dict, composed: dict) -> tuple[bool, str]:
    """Whether every grid point of a sweep has a complete record under ``root`` (the run its
    sweep made: ``td3.sweep.grid_runs``)."""
    from .sweep import grid_runs

    points = grid_runs(sweep_dir, root, index, composed)
    missing = sum(not records.is_complete(run_dir, verify=False) for _, run_dir, _ in points)
    return missing == 0, f"{missing} of {len(points)} grid points without a complete record"


def _referenced_runs(record: dict) -> set[str]:
    """The training runs a record names (its teachers, its full-data runs) as ``train/<name>``:
    every string of the record under its own results root's ``train/``."""
    root = str((record.get("config") or {}).get("results_dir") or "").rstrip("/")
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and root and node.startswith(root + "/train/"):
            found.add("train/" + Path(node).name)
    walk(record)
    return found


def sweep_runs(src: Path, names: list[str], composed: dict | None = None) -> set[str]:
    """What the named sweeps made in ``src``, as ``<kind>/<run>``: each recorded launch's grid
    points' runs (``td3.sweep.grid_runs``) and the training runs their records name."""
    from .sweep import grid_runs

    index, composed = ledger.index(src), {} if composed is None else composed
    selected: set[str] = set()
    for name in names:
        launches = sorted(p.parent for p in (src / "sweeps" / name).glob("*/multirun.yaml"))
        if not launches:
            raise TD3Error(f"no sweep named {name!r} under {src / 'sweeps'}")
        for sweep_dir in launches:
            for _, run_dir, _ in grid_runs(sweep_dir, src, index, composed):
                selected.add(f"distill/{run_dir.name}")
                selected |= _referenced_runs(records.read_record(run_dir) or {})
    return selected


def publish(src: Path, dst: Path, sweeps: list[str] | None = None) -> dict:
    """Copy the committable part of ``src`` into ``dst``; returns counts of what happened.
    ``sweeps``: only what these sweeps made (``sweep_runs``) and their ledgers; None: all."""
    counts = {"runs": 0, "files": 0, "incomplete": 0, "reproduced": 0, "sweeps": 0, "sweeps_pending": 0,
              "linked": 0}
    used_summaries = set()
    composed: dict = {}  # grid points composed today, shared by both passes over the sweeps
    selected = sweep_runs(src, sweeps, composed) if sweeps else None
    for kind in ("distill", "train"):
        base = src / kind
        if not base.is_dir():
            continue
        for run_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if selected is not None and f"{kind}/{run_dir.name}" not in selected:
                continue
            record = records.read_record(run_dir)
            if not record or record.get("status") != "complete":
                counts["incomplete"] += 1
                continue
            problem = records.seal_problem(run_dir, record)
            if problem:
                counts["incomplete"] += 1
                print(f"not published: {run_dir}: {problem}")
                continue
            target = dst / kind / run_dir.name
            published = records.read_record(target)
            if published and published.get("seal") != record.get("seal"):
                if not same_result(published, record):
                    raise TD3Error(f"{target} already holds another record of this run "
                                   f"(seal {published.get('seal')}, source {record.get('seal')}); "
                                   f"a published result is not replaced: remove it by hand if you mean to")
                # made again, the same: the published record (and its summary's history) stays
                counts["reproduced"] += 1
                print(f"kept: {target}: made again ({(record.get('git') or {}).get('sha', '?')[:7]}, "
                      f"{record.get('finished')}) with the same figures and files")
                continue
            counts["runs"] += 1
            for name in UNPUBLISHED_RUN_FILES:  # published before the size limit
                (target / name).unlink(missing_ok=True)
            # the record last: a copy interrupted midway leaves no record over missing files
            for name in sorted(RUN_FILES, key=lambda n: n == records.RECORD_NAME):
                if not (run_dir / name).is_file():
                    continue
                if name == records.RECORD_NAME:
                    counts["files"] += _write_record(record, target / name)
                else:
                    counts["files"] += _publish_sealed(run_dir / name, target, record)
            summary_dir = (record.get("summary") or {}).get("dir")
            if summary_dir:
                used_summaries.add(Path(summary_dir).name)
    counts["linked"] = _link_duplicates(dst)
    for name in sorted(used_summaries):
        for file in SUMMARY_FILES:
            path = src / "summaries" / name / file
            if path.is_file():
                target = dst / "summaries" / name / file
                counts["files"] += _pack(path, target.with_name(file + records.PACKED_SUFFIX))
                target.unlink(missing_ok=True)  # published unpacked before
    index = ledger.index(src)
    for sweep_dir in sorted(p.parent for p in (src / "sweeps").glob("*/*/multirun.yaml")):
        if sweeps and sweep_dir.parent.name not in sweeps:
            continue
        complete, why = _grid_complete(sweep_dir, src, index, composed)
        if not complete:
            counts["sweeps_pending"] += 1
            print(f"not yet: sweep {sweep_dir.relative_to(src)} ({why})")
            continue
        counts["sweeps"] += 1
        target = dst / sweep_dir.relative_to(src)
        for name in SWEEP_FILES:
            if (sweep_dir / name).is_file():
                counts["files"] += _copy(sweep_dir / name, target / name)
        # the ledger packed into one file (td3.ledger): its entries, not a disk block apiece
        counts["files"] += ledger.write_packed(target, {**ledger.entries(target), **ledger.entries(sweep_dir)})
    return counts


def size_mb(root: Path) -> float:
    """MB (10**6 bytes) on disk, as ``du`` counts them: whole blocks, links once."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*")) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m td3.publish", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="the sweep's results root (its TD3_RESULTS_DIR); with --repack, the published root")
    ap.add_argument("dst", nargs="?", help="where the committable copy goes (e.g. results/paper)")
    ap.add_argument("--sweep", action="append", metavar="NAME",
                    help="publish only what this sweep made (its grid's runs, their teachers and "
                         "full-data runs) and its ledgers; repeat for several (default: everything)")
    ap.add_argument("--repack", action="store_true",
                    help="store the published root SRC in the current layout (records on one line), in place")
    args = ap.parse_args(argv)
    if args.repack:
        root = Path(args.src)
        if args.dst is not None or not root.is_dir():
            print(f"td3: error: --repack takes one published results root ({root} is not a directory)"
                  if args.dst is None else "td3: error: --repack takes one published results root, not two paths",
                  file=sys.stderr)
            return 2
        counts = repack(root)
        print(json.dumps(counts))
        print(f"{counts['rewritten']} of {counts['records']} records stored anew ({counts['refused']} refused), "
              f"{counts['withheld']} files over {records.PUBLISH_LIMIT >> 10} KiB withheld, "
              f"{counts['derived']} config.json left to the records that hold them; "
              f"{root} holds {size_mb(root):.1f} MB on disk")
        return 1 if counts["refused"] else 0
    if args.dst is None:
        ap.error("the destination DST is missing")
    src, dst = Path(args.src).resolve(), Path(args.dst)
    if not src.is_dir():
        print(f"td3: error: results root {src} does not exist", file=sys.stderr)
        return 2
    if dst.resolve() == src:
        print("td3: error: source and destination are the same directory", file=sys.stderr)
        return 2
    try:
        counts = publish(src, dst, args.sweep)
    except TD3Error as exc:
        print(f"td3: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    print(f"published {counts['runs']} complete runs ({counts['files']} files copied or updated, "
          f"{counts['incomplete']} incomplete left out, {counts['reproduced']} already published and made "
          f"again the same), {counts['sweeps']} complete sweeps "
          f"({counts['sweeps_pending']} still running); {dst} holds {size_mb(dst):.1f} MB on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
