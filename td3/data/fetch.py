"""Obtain a dataset's raw file, verified by sha256, without ever leaving a bad file behind.

Order of preference: a verified copy already in the data directory; a copy from a local
mirror (``TD3_DATA_MIRROR=<dir>``, for machines without internet); the official URL. The
copy or download goes to a temporary file next to its target and is renamed into place only
after its digest matched, so an interrupted or corrupt transfer never looks like data.

When a mirror is configured it is the only remote source: a file missing there is an
error, not a silent fall-back to the network.

Layout of the data directory: ``<data_dir>/raw/<dataset>/<file name>`` (per dataset, since
two datasets may share a file name such as ``ratings.dat.gz``) and
``<data_dir>/processed/`` for prepared datasets (see ``prepare``).
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from td3.errors import DataError
from td3.files import atomic_path, file_sha256
from td3.data.registry import DatasetSpec, RawSource

DATA_DIR_ENV = "TD3_DATA_DIR"
MIRROR_ENV = "TD3_DATA_MIRROR"
_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60


class UnpinnedChecksumWarning(UserWarning):
    """A raw file was accepted without a pinned sha256 to check it against."""


@dataclass(frozen=True)
class FetchedFile:
    """A raw file ready to read: where it is, which layout it is, and its digest."""

    path: Path
    source: RawSource
    sha256: str
    pinned: bool          # True when sha256 was checked against the registry


# ------------------------------------------------------------------------------ locations
def default_data_dir() -> Path:
    """``$TD3_DATA_DIR`` if set, else ``~/.cache/td3/data``."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "td3" / "data"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return default_data_dir() if data_dir is None else Path(data_dir).expanduser()


def raw_file_path(spec: DatasetSpec, source: RawSource, data_dir: str | Path | None) -> Path:
    return resolve_data_dir(data_dir) / "raw" / spec.name / source.file_name


# ------------------------------------------------------------------------------- checksum
# ---------------------------------------------------------------------------------- fetch
def fetch(spec: DatasetSpec, data_dir: str | Path | None = None) -> Path:
    """Path of the dataset's verified raw file in ``data_dir`` (fetched if needed)."""
    return fetch_file(spec, data_dir).path


def fetch_file(spec: DatasetSpec, data_dir: str | Path | None = None) -> FetchedFile:
    """Like ``fetch`` but also says which raw layout was found and its digest."""
    if not spec.sources:
        raise DataError(f"dataset {spec.name!r} has no raw file to fetch (it is generated)")
    stale: list[str] = []
    for source in spec.sources:
        local = raw_file_path(spec, source, data_dir)
        if local.is_file():
            found = _accept_existing(spec, source, local)
            if found is not None:
                return found
            stale.append(f"{local} exists but its sha256 does not match the pinned value")

    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return _fetch_from_mirror(spec, Path(mirror).expanduser(), data_dir, stale)
    for source in spec.sources:
        if source.url:
            return _download(spec, source, raw_file_path(spec, source, data_dir), stale)
    places = ", ".join(str(raw_file_path(spec, s, data_dir)) for s in spec.sources)
    raise DataError(
        f"dataset {spec.name!r} has no public download URL; set {MIRROR_ENV} to a mirror "
        f"directory holding {' or '.join(s.mirror_path for s in spec.sources if s.mirror_path)}"
        f", or put the file at {places}" + _stale_note(stale))


def _accept_existing(spec: DatasetSpec, source: RawSource, local: Path) -> FetchedFile | None:
    digest = file_sha256(local)
    if source.sha256 is None:
        _warn_unpinned(spec, local, digest)
        return FetchedFile(local, source, digest, pinned=False)
    if digest == source.sha256:
        return FetchedFile(local, source, digest, pinned=True)
    return None


def _fetch_from_mirror(spec: DatasetSpec, mirror: Path, data_dir, stale: list[str]) -> FetchedFile:
    tried = []
    for source in spec.sources:
        if not source.mirror_path:
            continue
        candidate = mirror / source.mirror_path
        if candidate.is_file():
            target = raw_file_path(spec, source, data_dir)
            with open(candidate, "rb") as stream:
                digest = _store_verified(stream, target, source, origin=str(candidate))
            return _fetched(spec, source, target, digest)
        tried.append(str(candidate))
    if not tried:
        raise DataError(f"dataset {spec.name!r} has no mirror path; unset {MIRROR_ENV} to "
                        f"download it" + _stale_note(stale))
    raise DataError(
        f"dataset {spec.name!r}: file not found in mirror {MIRROR_ENV}={mirror}: looked for "
        f"{' and '.join(tried)}" + _stale_note(stale))


def _download(spec: DatasetSpec, source: RawSource, target: Path, stale: list[str]) -> FetchedFile:
    request = urllib.request.Request(source.url, headers={"User-Agent": "td3-data-fetch"})
    try:
        with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            digest = _store_verified(response, target, source, origin=source.url)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"cannot download {source.url} ({reason}); set {MIRROR_ENV} to a mirror "
            f"directory or put the file at {target}" + _stale_note(stale)) from None
    return _fetched(spec, source, target, digest)


def _fetched(spec: DatasetSpec, source: RawSource, target: Path, digest: str) -> FetchedFile:
    if source.sha256 is None:
        _warn_unpinned(spec, target, digest)
    return FetchedFile(target, source, digest, pinned=source.sha256 is not None)


def _warn_unpinned(spec: DatasetSpec, path: Path, digest: str) -> None:
    warnings.warn(
        f"dataset {spec.name!r}: {path.name} has no pinned sha256 in the registry; accepted "
        f"unchecked (observed sha256 {digest}, recorded with the prepared dataset)",
        UnpinnedChecksumWarning, stacklevel=4)


def _stale_note(stale: list[str]) -> str:
    return ("; note: " + "; ".join(stale)) if stale else ""


# ------------------------------------------------------------------------- atomic storing
def _store_verified(stream: BinaryIO, target: Path, source: RawSource, origin: str) -> str:
    """Copy ``stream`` to ``target`` atomically, checking the digest before the rename.

    On any failure nothing is left: neither the temp file nor directories made for it.
    """
    digest = hashlib.sha256()
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
            handle.write(chunk)
        actual = digest.hexdigest()
        if source.sha256 is not None and actual != source.sha256:
            raise DataError(
                f"sha256 mismatch for {source.file_name} (from {origin}): expected "
                f"{source.sha256}, got {actual}; the file was not kept")
    return actual


__all__ = ["fetch", "fetch_file", "default_data_dir", "resolve_data_dir",
           "raw_file_path", "FetchedFile", "UnpinnedChecksumWarning", "DATA_DIR_ENV",
           "MIRROR_ENV"]
