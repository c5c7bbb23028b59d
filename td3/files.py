"""Writing files so that a killed process never leaves half of one, and their checksums.

Every file td3 writes (records, checkpoints, summaries, processed datasets, downloaded raw
files) goes through ``atomic_path``: the content is written to a temporary file in the
target's directory, flushed to disk, and renamed over the target, so readers see the old
file or the new one, never a part. Standard library only: the data layer and the run
records both build on it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)
_CHUNK = 1 << 20


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an exception,
    fsync it and rename it over ``path``. On any failure nothing is left behind: neither the
    temporary file nor the directories made for it."""
    path = Path(path)
    created = _make_parents(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        for directory in reversed(created):
            try:
                directory.rmdir()  # only succeeds when empty
            except OSError:
                break
        if isinstance(exc, OSError):  # disk full, read-only: name the file being written, not the temporary one
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, streamed (raw files can be larger than memory should hold)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _make_parents(directory: Path) -> list[Path]:
    """mkdir -p that reports which directories it created (outermost first)."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; best effort (not every platform or file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
