"""A sweep's ledger: one entry per grid point (its overrides, status, run directory, error).

While a sweep runs, each entry is a file of its own, ``<sweep>/jobs/<key>.json`` (key: the
hash of the point's sorted overrides), written atomically, so that concurrent tasks never
share a file. A published sweep keeps them packed in one file, ``<sweep>/jobs.jsonl`` (a
line per entry, sorted by key: ``{"key": ..., "entry": {...}}``), since a thousand entries
of a few hundred bytes each would take a disk block apiece. Readers see both forms alike; an
entry file wins over a packed line with the same key (it is the newer).

Standard library only: ``analysis/make_tables.py`` reads ledgers without importing the engine.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import records

ENTRIES, PACKED = "jobs", "jobs.jsonl"


def entry_key(overrides: Sequence[str]) -> str:
    return records.signature({"overrides": sorted(overrides)})


def write_entry(sweep_dir: str | Path, overrides: Sequence[str], **fields: Any) -> Path:
    """The sweep's note about one grid point (named by the overrides' hash: the same point
    always has the same entry, however often it is relaunched)."""
    entry = {"overrides": list(overrides), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
    return records.write_json(Path(sweep_dir) / ENTRIES / f"{entry_key(overrides)}.json", entry)


def _unreadable(where: str) -> dict:
    return {"overrides": [], "status": "unreadable", "error": f"ledger entry {where} is unreadable"}


def entries(sweep_dir: str | Path) -> dict[str, dict]:
    """Every entry of a sweep's ledger by key, from either form (see the module's doc)."""
    sweep_dir = Path(sweep_dir)
    out: dict[str, dict] = {}
    packed = sweep_dir / PACKED
    if packed.is_file():
        for number, line in enumerate(packed.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                out[item["key"]] = item["entry"]
            except (ValueError, KeyError, TypeError):
                out[f"{PACKED}:{number}"] = _unreadable(f"{packed}:{number}")
    folder = sweep_dir / ENTRIES
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except ValueError:
                out[path.stem] = _unreadable(str(path))
    return dict(sorted(out.items()))


def entry(sweep_dir: str | Path, overrides: Sequence[str]) -> dict | None:
    """The sweep's note about one grid point, or None if it has none (or it is unreadable).
    For one point; to look up many, read ``entries`` once."""
    found = entries(sweep_dir).get(entry_key(overrides))
    return None if found is None or found.get("status") == "unreadable" else found


def sweep_dirs(results: str | Path) -> Iterator[Path]:
    """``results/sweeps/<name>/<time>/`` of every recorded sweep."""
    base = Path(results, "sweeps")
    if base.is_dir():
        for name in sorted(os.listdir(base)):
            if (base / name).is_dir():
                yield from (p for p in sorted((base / name).iterdir()) if p.is_dir())


def index(results: str | Path) -> dict[tuple, set[str]]:
    """Every ledger's run directory names under ``results/sweeps`` by grid point (its sorted
    overrides): a point a relaunch of a sweep ran is in the relaunch's ledger."""
    out: dict[tuple, set[str]] = {}
    for sweep_dir in sweep_dirs(results):
        for e in entries(sweep_dir).values():
            if e.get("run_dir"):
                out.setdefault(tuple(sorted(e.get("overrides") or [])), set()).add(Path(e["run_dir"]).name)
    return out


def write_packed(sweep_dir: str | Path, everything: dict[str, dict]) -> bool:
    """Make ``everything`` (entries by key) the sweep's whole ledger, packed: ``jobs.jsonl``
    written atomically, then the entry files removed. False if it was so already."""
    sweep_dir = Path(sweep_dir)
    text = "".join(json.dumps({"key": k, "entry": e}, sort_keys=True, separators=(",", ":")) + "\n"
                   for k, e in sorted(everything.items()))
    target, folder = sweep_dir / PACKED, sweep_dir / ENTRIES
    changed = not target.is_file() or target.read_text() != text
    if changed:
        with records.atomic_path(target) as tmp:
            Path(tmp).write_text(text)
    if folder.is_dir():
        for path in folder.glob("*.json"):
            path.unlink()
        folder.rmdir()
        changed = True
    return changed


def pack(sweep_dir: str | Path) -> Path:
    """Pack a sweep's entry files into ``jobs.jsonl`` (what publishing does)."""
    write_packed(sweep_dir, entries(sweep_dir))
    return Path(sweep_dir) / PACKED
