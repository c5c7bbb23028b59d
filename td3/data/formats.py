"""Readers for the raw interaction files the project accepts.

Every reader returns the same table, so the rest of the pipeline never sees a file format:
a pandas DataFrame with columns ``user`` (str), ``item`` (str), ``timestamp`` (float64,
unix seconds; only the order matters) and ``rating`` (float64, NaN when the file has none),
one row per file row, in file order (file order breaks timestamp ties later on).

Parsing has two paths. The fast path is one ``pandas.read_csv`` call with explicit dtypes
(ML-1M has a million rows). It is trusted only when cheap global checks agree with it
(separator count, no empty ids, finite numbers). Otherwise the slow path walks the lines
in Python, and is the authority: it names the first bad line, ``file:line: problem``.

``write_inter`` writes sequences the other way, as a RecBole atomic ``.inter`` file that the
``atomic`` format reads back (a summary's hard sequences, the Random and Longest subsets).

Compression is detected from magic bytes, not from the name: gzip (``.gz``) and zip
archives (the official GroupLens ``ml-100k.zip`` / ``ml-1m.zip``; the member is chosen by
its name, e.g. ``ml-100k/u.data``) are opened transparently.
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from td3.errors import DataError
from td3.files import atomic_path

COLUMNS = ("user", "item", "timestamp", "rating")

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class TextLayout:
    """How one format lays out its lines.

    ``roles`` maps a field position to its column (``user``/``item``/``rating``/
    ``timestamp``) for formats without a header; formats with a header find positions
    from it through ``header_names`` (accepted header names per column).
    """

    name: str
    separator: str
    quoted: bool                      # CSV quoting rules (Amazon CSVs); else fields are raw
    roles: tuple[str | None, ...] = ()
    header: str = "none"              # 'none' | 'atomic' (name:type fields) | 'plain'
    header_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    required: tuple[str, ...] = ("user", "item", "timestamp")
    timestamp_divisor: float = 1.0    # file units per second (Amazon 2023: milliseconds)
    archive_members: tuple[str, ...] = ()   # member base names or '*.suffix' patterns
    integer_ids: bool = False         # user and item ids are positive integers (MovieLens)
    rating_range: tuple[float, float] | None = None   # ratings the format can hold
    nonnegative_time: bool = True     # Unix times: never before 1970

    def describe_separator(self) -> str:
        return {"\t": "TAB", ",": "comma", "::": "'::'"}.get(self.separator, repr(self.separator))


_ATOMIC_NAMES = {
    "user": ("user_id",),
    "item": ("item_id",),
    "rating": ("rating",),
    "timestamp": ("timestamp",),
}

LAYOUTS: dict[str, TextLayout] = {
    "atomic": TextLayout(
        "atomic", "\t", quoted=False, header="atomic", header_names=_ATOMIC_NAMES,
        archive_members=("*.inter",)),
    "ml-100k": TextLayout(
        "ml-100k", "\t", quoted=False, roles=("user", "item", "rating", "timestamp"),
        archive_members=("u.data",), integer_ids=True, rating_range=(1, 5)),
    "ml-1m": TextLayout(
        "ml-1m", "::", quoted=False, roles=("user", "item", "rating", "timestamp"),
        archive_members=("ratings.dat",), integer_ids=True, rating_range=(1, 5)),
    "amazon-2018": TextLayout(
        "amazon-2018", ",", quoted=True, roles=("item", "user", "rating", "timestamp"),
        archive_members=("*.csv",), rating_range=(1, 5)),
    "amazon-2023": TextLayout(
        "amazon-2023", ",", quoted=True, header="plain",
        header_names={"user": ("user_id",), "item": ("parent_asin", "item_id", "asin"),
                      "rating": ("rating",), "timestamp": ("timestamp",)},
        timestamp_divisor=1000.0, rating_range=(1, 5),
        archive_members=("*.csv",)),
}
# Epinions is distributed by RecBole as an atomic file (with an extra price column).
LAYOUTS["epinions"] = LAYOUTS["atomic"]

FORMATS: tuple[str, ...] = tuple(LAYOUTS)


# ----------------------------------------------------------------------------- entry point
def read_interactions(path: str | Path, format: str) -> pd.DataFrame:
    """Read one raw file (plain, gzip or zip) of the given format into the common table."""
    layout = layout_for(format)
    data, where = _read_payload(Path(path), layout)
    return parse_text(data, where, layout)


def layout_for(format: str) -> TextLayout:
    try:
        return LAYOUTS[format]
    except KeyError:
        raise DataError(
            f"unknown file format {format!r}; known formats: {', '.join(FORMATS)}") from None


# ------------------------------------------------------------------------ bytes from disk
def _read_payload(path: Path, layout: TextLayout) -> tuple[bytes, str]:
    """The uncompressed bytes of the file (or of its archive member) and its display name."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if raw.startswith(_GZIP_MAGIC):
        try:
            return gzip.decompress(raw), str(path)
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: corrupt gzip file ({exc})") from None
    if raw.startswith(_ZIP_MAGIC):
        return _read_archive_member(raw, path, layout)
    return raw, str(path)


def _read_archive_member(raw: bytes, path: Path, layout: TextLayout) -> tuple[bytes, str]:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            matches = [n for n in names if _member_matches(n, layout.archive_members)]
            if len(matches) != 1:
                wanted = " or ".join(layout.archive_members) or "(no member name known)"
                found = "none" if not matches else ", ".join(matches)
                raise DataError(
                    f"{path}: zip archive must hold exactly one {wanted} file for format "
                    f"{layout.name!r}; matching members: {found}")
            member = matches[0]
            data = archive.read(member)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: corrupt zip archive ({exc})") from None
    if data.startswith(_GZIP_MAGIC):
        data = gzip.decompress(data)
    return data, f"{path}:{member}"


def _member_matches(member: str, patterns: tuple[str, ...]) -> bool:
    base = member.rsplit("/", 1)[-1]
    if base.startswith("._"):          # macOS resource forks inside archives
        return False
    for pattern in patterns:
        if pattern.startswith("*"):
            if base.endswith(pattern[1:]):
                return True
        elif base == pattern:
            return True
    return False


# ------------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class _Plan:
    """What the header (or the layout) says: field count and where each column sits."""

    num_fields: int
    positions: dict[str, int]      # column -> field index
    header_lines: int              # lines before the first data row


def parse_text(data: bytes, where: str, layout: TextLayout) -> pd.DataFrame:
    """Bytes of one file -> the common table. ``where`` names the file in messages."""
    nul = data.find(b"\x00", 0, 1 << 16)
    if nul >= 0:  # a text format never holds NUL: say so rather than echo binary bytes
        raise DataError(f"{where}: not a text file (a NUL byte at offset {nul}); expected the "
                        f"{layout.name!r} format's text lines")
    if layout.separator == "::":
        # pandas' C parser takes one-character separators only; '::' never occurs inside
        # an ML-1M field, so a TAB stands in for it (the slow path still splits on '::').
        fast_data = data.replace(b"::", b"\t")
        fast_sep = "\t"
    else:
        fast_data, fast_sep = data, layout.separator
    plan = _plan(data, where, layout)
    frame = _fast_parse(fast_data, fast_sep, plan, layout)
    if frame is None or not _looks_valid(frame, fast_data, fast_sep, plan, layout):
        # Raises at the first bad line; returns a table if pandas was merely stricter
        # than our rules (e.g. a quoted comma inside a CSV field).
        frame = _slow_parse(data, where, plan, layout)
    if len(frame) == 0:
        raise DataError(f"{where}: no interactions (empty file)")
    _check_fields(frame, data, where, plan, layout)
    return _to_common_table(frame, layout)


def _check_fields(frame: pd.DataFrame, data: bytes, where: str, plan: _Plan, layout: TextLayout) -> None:
    """Ids and values the format cannot hold, named by file and line (whole columns at
    once; the line is looked up only for the first bad row)."""
    bad = np.zeros(len(frame), dtype=bool)
    reasons = []
    if layout.integer_ids:
        for column in ("user", "item"):
            wrong = ~frame[column].astype(str).str.fullmatch(r"[1-9][0-9]*").to_numpy()
            reasons.append((wrong, f"{column} id {{value!r}} is not a positive integer", column))
    if layout.rating_range is not None and "rating" in frame:
        low, high = layout.rating_range
        r = frame["rating"].to_numpy()
        reasons.append(((r < low) | (r > high), f"rating {{value!r}} is outside {low:g}..{high:g}", "rating"))
    if layout.nonnegative_time:
        reasons.append((frame["timestamp"].to_numpy() < 0, "timestamp {value!r} is negative", "timestamp"))
    for wrong, message, column in reasons:
        bad |= wrong
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    line = next(number for i, (number, _) in enumerate(_iter_data_lines(data, plan)) if i == row)
    for wrong, message, column in reasons:
        if wrong[row]:
            value = frame[column].iloc[row]
            value = value.item() if hasattr(value, "item") else value
            raise DataError(f"{where}:{line}: " + message.format(value=value))


def _plan(data: bytes, where: str, layout: TextLayout) -> _Plan:
    if layout.header == "none":
        positions = {role: i for i, role in enumerate(layout.roles) if role is not None}
        return _Plan(len(layout.roles), positions, 0)
    first_line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not first_line.strip():
        raise DataError(f"{where}: no interactions (empty file)")
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{where}:1: header is not valid UTF-8") from None
    fields = _split_line(text, layout)
    if layout.header == "atomic":
        names = [f.split(":", 1)[0].strip() for f in fields]
    else:
        names = [f.strip() for f in fields]
    positions: dict[str, int] = {}
    for column, accepted in layout.header_names.items():
        for i, name in enumerate(names):
            if name in accepted:
                positions[column] = i
                break
    missing = [c for c in layout.required if c not in positions]
    if missing:
        wanted = ", ".join(layout.header_names[c][0] for c in missing)
        shown = ", ".join(repr(f[:40]) for f in fields[:12]) + (", ..." if len(fields) > 12 else "")
        raise DataError(
            f"{where}:1: header lacks required field(s) {wanted} for format "
            f"{layout.name!r}; header fields: {shown}")
    return _Plan(len(fields), positions, 1)


def _fast_parse(data: bytes, sep: str, plan: _Plan, layout: TextLayout) -> pd.DataFrame | None:
    names = [f"f{i}" for i in range(plan.num_fields)]
    dtypes = {name: str for name in names}
    for column in ("rating", "timestamp"):
        if column in plan.positions:
            dtypes[f"f{plan.positions[column]}"] = "float64"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ParserWarning on trailing separators
            frame = pd.read_csv(
                io.BytesIO(data), sep=sep, header=None, names=names, dtype=dtypes,
                skiprows=plan.header_lines, na_filter=False, index_col=False,
                quoting=csv.QUOTE_MINIMAL if layout.quoted else csv.QUOTE_NONE,
                encoding="utf-8", engine="c")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        return None
    return frame.rename(columns={f"f{i}": c for c, i in plan.positions.items()})


def _looks_valid(frame: pd.DataFrame, data: bytes, sep: str, plan: _Plan,
                 layout: TextLayout) -> bool:
    """Cheap whole-file checks that make the fast result trustworthy.

    pandas pads short rows and drops trailing separators silently; counting separators
    catches both: each row must contribute exactly num_fields - 1 of them.
    """
    body = data
    for _ in range(plan.header_lines):
        body = body.split(b"\n", 1)[1] if b"\n" in body else b""
    if body.count(sep.encode()) != len(frame) * (plan.num_fields - 1):
        return False
    for column in ("user", "item"):
        values = frame[column]
        if values.isna().any() or (values.str.len() == 0).any():
            return False
    for column in ("rating", "timestamp"):
        if column in frame and not np.isfinite(frame[column].to_numpy()).all():
            return False
    return True


def _split_line(text: str, layout: TextLayout) -> list[str]:
    if layout.quoted:
        return next(csv.reader([text], delimiter=layout.separator), [])
    return text.split(layout.separator)


def _iter_data_lines(data: bytes, plan: _Plan):
    """(1-based line number, raw line) for every non-blank data line."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number <= plan.header_lines:
            continue
        raw = raw.rstrip(b"\r")
        if raw:
            yield number, raw


def _check_line(number: int, raw: bytes, where: str, plan: _Plan,
                layout: TextLayout) -> tuple[str, list[str]]:
    """Return ('', fields) for a good line, or (message, []) naming what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"{where}:{number}: line is not valid UTF-8", []
    fields = _split_line(text, layout)
    if len(fields) != plan.num_fields:
        return (f"{where}:{number}: expected {plan.num_fields} "
                f"{layout.describe_separator()}-separated fields, got {len(fields)}"), []
    for column in ("user", "item"):
        if fields[plan.positions[column]] == "":
            return f"{where}:{number}: empty {column} id", []
    for column in ("rating", "timestamp"):
        if column not in plan.positions:
            continue
        value = fields[plan.positions[column]]
        try:
            number_value = float(value)
        except ValueError:
            return f"{where}:{number}: {column} {value!r} is not a number", []
        if not math.isfinite(number_value):
            return f"{where}:{number}: {column} {value!r} is not a finite number", []
    return "", fields


def _slow_parse(data: bytes, where: str, plan: _Plan, layout: TextLayout) -> pd.DataFrame:
    """Line-by-line parse: the authority on what a valid line is. Raises ``DataError``
    naming the first bad line; only runs when the fast path cannot be trusted."""
    columns: dict[str, list] = {c: [] for c in plan.positions}
    for number, raw in _iter_data_lines(data, plan):
        problem, fields = _check_line(number, raw, where, plan, layout)
        if problem:
            raise DataError(problem)
        for column, i in plan.positions.items():
            value = fields[i]
            columns[column].append(float(value) if column in ("rating", "timestamp") else value)
    return pd.DataFrame(columns)


def _to_common_table(frame: pd.DataFrame, layout: TextLayout) -> pd.DataFrame:
    timestamps = frame["timestamp"].to_numpy(dtype=np.float64) / layout.timestamp_divisor
    if "rating" in frame:
        ratings = frame["rating"].to_numpy(dtype=np.float64)
    else:
        ratings = np.full(len(frame), np.nan)
    return pd.DataFrame({
        "user": frame["user"].astype(str).reset_index(drop=True),
        "item": frame["item"].astype(str).reset_index(drop=True),
        "timestamp": timestamps,
        "rating": ratings,
    })


# ------------------------------------------------------------------ writing
#: RecBole atomic header; timestamps are positions, only their order matters.
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float"


def write_inter(sequences: Sequence[np.ndarray], path: str | Path,
                item_ids: Sequence | np.ndarray | None = None) -> Path:
    """Write sequences as a RecBole atomic ``.inter`` file, atomically.

    Users are ``s0``, ``s1``, ... in list order; a user's timestamps are 0, 1, ... in
    sequence order. ``item_ids`` maps an id to the dataset's raw item token
    (``SequenceDataset.item_ids``, index 0 = padding) so that another library sees the
    dataset's own item tokens; without it the ids 1..|V| are written.
    """
    lines = [INTER_HEADER]
    tokens = None if item_ids is None else np.asarray(item_ids)
    for user, sequence in enumerate(sequences):
        ids = np.asarray(sequence, dtype=np.int64).reshape(-1)
        if len(ids) and ids.min() < 1:
            raise ValueError(f"sequence {user} holds id {ids.min()}; item ids start at 1 (0 is padding)")
        if tokens is not None and len(ids) and ids.max() >= len(tokens):
            raise ValueError(f"sequence {user} holds id {ids.max()} beyond item_ids "
                             f"(length {len(tokens)})")
        names = ids if tokens is None else tokens[ids]
        lines.extend(f"s{user}\t{name}\t{position}" for position, name in enumerate(names))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return Path(path)
