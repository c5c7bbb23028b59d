"""Run identity and run records: the unit every later piece (sweeps, tables, audits) reads.

A run is identified by the *signature* of its resolved config: a hash of the config minus
the keys that do not change its results (where it writes, how many threads, whether a
progress bar shows). Two launches of the same config share a signature, hence a run
directory: a complete record there means the run is done; a checkpoint means it resumes.

Everything is written atomically (temporary file in the same directory, fsync, rename),
so a killed process never leaves a half-written record or checkpoint behind.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from .errors import TD3Error
from .files import atomic_path, file_sha256  # noqa: F401  (records' own writes build on them)

log = logging.getLogger("td3.records")

RECORD_SCHEMA = 1
RECORD_NAME = "record.json"

#: Config keys (dotted paths) that never change a run's results.
NON_RESULT_KEYS = ("results_dir", "progress", "threads", "device", "eval.batch_size", "hydra", "sweep",
                   "distill.snapshots")

#: Config keys added after runs existed, with the value that computes what those runs did.
#: At that value a key leaves the signature out, so adding a setting neither orphans the
#: results and summaries already made nor makes a rerun of their command start afresh.
#: A new key goes here with its neutral value; a key whose default changes does not.
NEUTRAL_VALUES = {"evaluation.eval_every": 1, "distill.sampled_items": 0, "distill.learners": [],
                  "distill.outer.min_steps": 0, "distill.inner.learn_lr": False, "distill.inner.lr_lr": 0.01,
                  "distill.inner.bidirectional_loss": "cloze", "distill.validate_learners": "model",
                  "distill.average_last": 0.0}

def _learns_inner_lr(cfg: dict) -> bool:
    return _same_value(_get(cfg, "distill.inner.learn_lr"), True)


def _has_several_learners(cfg: dict) -> bool:
    """An inner learner other than the run's model (``distill.learners``)."""
    return any(name != _get(cfg, "model.name") for name in _get(cfg, "distill.learners") or [])


def _trains_bert4rec(cfg: dict) -> bool:
    """BERT4Rec distils (the run's model or one of its learners) or is trained on the summary."""
    names = [_get(cfg, "model.name"), *(_get(cfg, "distill.learners") or []), *(_get(cfg, "evaluation.models") or [])]
    return "bert4rec" in names


#: Keys that compute nothing unless a condition on the config holds (``key: condition``):
#: left out of the signature otherwise, so that a sweep over them where they compute nothing
#: does not make copies of one run under several names, nor a changed default of theirs
#: move runs it does not concern.
INERT_UNLESS = {"distill.inner.lr_lr": _learns_inner_lr,
                "distill.inner.bidirectional_loss": _trains_bert4rec,
                "distill.validate_learners": _has_several_learners}

#: Packages whose versions go in every record.
PACKAGES = ("td3", "torch", "numpy", "pandas", "scipy", "hydra-core", "omegaconf", "higher",
            "submitit", "ray")


# ------------------------------------------------------------------ identity
_ANY = object()


def _drop(cfg: dict, dotted: str, only_if: Any = _ANY) -> None:
    head, _, rest = dotted.partition(".")
    if head not in cfg:
        return
    if rest:
        if isinstance(cfg[head], dict):
            _drop(cfg[head], rest, only_if)
    elif only_if is _ANY or _same_value(cfg[head], only_if):
        del cfg[head]


def _get(cfg: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def _same_value(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # True is not 1 here


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def signature(config: dict, ignore: tuple[str, ...] = NON_RESULT_KEYS) -> str:
    """12 hex digits identifying what a config computes."""
    cfg = json.loads(canonical_json(config))  # deep copy, plain types
    for key in ignore:
        _drop(cfg, key)
    for key, computes in INERT_UNLESS.items():
        if not computes(cfg):
            _drop(cfg, key)
    for key, neutral in NEUTRAL_VALUES.items():
        _drop(cfg, key, only_if=neutral)
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:12]


# ----------------------------------------------------------------- manifest
def git_state(cwd: str | Path | None = None) -> dict:
    cwd = Path(cwd or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=cwd,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:  # not a checkout, or no commit yet
            return {"sha": None, "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    return {"sha": head.stdout.strip(), "dirty": bool(dirty)}


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def cpu_model() -> str | None:
    """The CPU's model name (Linux's /proc/cpuinfo, else the platform's word for it)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(device: str | None = None) -> dict:
    """Where a run computes. ``device``: the config's setting, recorded as resolved
    (``auto`` -> cuda or cpu). Like the thread count it is left out of the signature, yet a
    GPU run does not repeat a CPU run to the bit: dropout draws from the device's own
    random generator (docs/gpu.md)."""
    import torch

    from .device import resolve_device
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # which CPU, and the vector level of torch's own kernels: two machines whose runs of
        # one config differ in their last bits (docs/performance.md, "Threads per process")
        # can then be told apart
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": str(resolve_device(device)),
        "argv": sys.argv,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / 2**20, 1)


# ------------------------------------------------------------- atomic writes
@contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>/.lock`` (``flock``; released when the process dies).

    Concurrent jobs of a sweep share work: every distillation of a dataset needs the same
    teacher, every evaluation of a summary the same summary. The first job to get the lock
    computes it; the others wait and then find it complete. A holder that wrote nothing (its
    input was refused) removes the lock and the directory it created: bad input leaves no
    trace. A waiter that then gets the lock of a removed file notices and locks afresh."""
    directory = Path(path)
    lock = directory / ".lock"
    created = not directory.exists()
    # the directories this call creates (the run's and any missing parent, e.g. results/train)
    made = [p for p in (directory, *directory.parents) if not p.exists()]
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s: another process is making it (a launch of the same run, or of a "
                     "run that shares this teacher or summary)", directory)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            current = os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()
    try:
        yield
    finally:
        try:
            if [p.name for p in directory.iterdir()] == [".lock"]:
                lock.unlink()
                if created:
                    for made_dir in made:  # innermost first; stops at one another process uses
                        made_dir.rmdir()
        except OSError:
            pass
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def held_elsewhere(path: str | Path) -> bool:
    """Whether another process holds ``exclusive(path)`` now (it is making that run). Creates
    nothing; the answer may be stale by the time it is used, so it only orders work."""
    try:
        handle = open(Path(path) / ".lock", "r")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically, through a file object: saved to a path, torch names the
    archive's inner folder after the (temporary, random) file name, so identical contents
    would give different bytes, and a checkpoint's digest would never reproduce."""
    import torch
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as handle:
                torch.save(obj, handle)
        except RuntimeError as exc:  # torch's zip writer wraps the OSError (e.g. disk full)
            if not isinstance(exc.__context__, OSError):
                raise
            raise exc.__context__ from exc
    return Path(path)


#: Files of a run directory whose sha256 goes into its record (when present).
SEALED_FILES = ("per_user.parquet", "summary.pt", "summary.inter", "config.json")
#: Sealed files that a published results root (``td3.publish``) stores xz-compressed, as
#: ``<name>.xz``: the compressed file holds the very bytes the record's digest names, so the
#: seal is checked on them as written; they compress three- to five-fold, which keeps a
#: whole paper's results small enough to commit.
PACKED_FILES = ("per_user.parquet", "summary.inter")
PACKED_SUFFIX = ".xz"


#: A published results root keeps no file over 160 KiB as stored (a packed file's packed
#: size): a larger sealed file (Farzi's latent summaries at 25x20 and above, 0.18-1.7 MB,
#: and summaries that store the teacher's item table; TD3's factors alone take tens to
#: 150 KB) is withheld, so that every root fits the repository's 50 MB, and
#: ``<name>.withheld`` (JSON: its sha256, size and where the full results root keeps it)
#: stands in; the audit names it. ``td3.publish --repack`` applies the limit to a root
#: published under a larger one.
PUBLISH_LIMIT = 160 << 10
WITHHELD_SUFFIX = ".withheld"

#: Sealed files whose bytes the record itself holds: a run writes ``config.json`` as its
#: record's config in canonical JSON (``config_bytes``), so a published root leaves it out
#: (a disk block per run) and it is read back from the record; its digest, in the record,
#: still checks that the two agree.
DERIVED_FILES = ("config.json",)


def config_bytes(config: dict) -> bytes:
    """``config.json`` as a run writes it."""
    return (canonical_json(config) + "\n").encode()


def rebuilt_bytes(record: dict | None, name: str) -> bytes | None:
    """The bytes of sealed file ``name`` as ``record`` rebuilds them; None unless ``name`` is
    one of ``DERIVED_FILES`` and the record holds a config."""
    if name not in DERIVED_FILES or not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        return None
    return config_bytes(record["config"])


def derived_bytes(run_dir: str | Path, name: str) -> bytes | None:
    """A sealed file of ``DERIVED_FILES`` rebuilt from the run's record; None if it has none."""
    return rebuilt_bytes(read_record(run_dir), name) if name in DERIVED_FILES else None


def withheld(run_dir: str | Path, name: str) -> dict | None:
    """The stand-in of a sealed file withheld from a published root, or None."""
    path = Path(run_dir) / (name + WITHHELD_SUFFIX)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sealed_path(run_dir: str | Path, name: str) -> Path | None:
    """The file holding a run's sealed file ``name``: itself, else its packed copy; None if neither."""
    path = Path(run_dir) / name
    if path.is_file():
        return path
    packed = path.with_name(name + PACKED_SUFFIX)
    return packed if name in PACKED_FILES and packed.is_file() else None


def read_sealed(run_dir: str | Path, name: str) -> bytes:
    """The bytes of a run's sealed file ``name`` as the run wrote them (unpacked if packed,
    rebuilt from the record if derived and left out)."""
    path = sealed_path(run_dir, name)
    if path is None:
        derived = derived_bytes(run_dir, name)
        if derived is not None:
            return derived
        raise FileNotFoundError(f"{Path(run_dir) / name} (nor {name}{PACKED_SUFFIX})")
    import lzma
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(PACKED_SUFFIX) else data


def sealed_sha256(run_dir: str | Path, name: str) -> str | None:
    """sha256 of a sealed file's bytes as written (packed or not); None when it is missing."""
    path = sealed_path(run_dir, name)
    if path is None:
        stand_in = withheld(run_dir, name)
        if stand_in:
            return stand_in.get("sha256")
        derived = derived_bytes(run_dir, name)
        return None if derived is None else hashlib.sha256(derived).hexdigest()
    if not path.name.endswith(PACKED_SUFFIX):
        return file_sha256(path)
    return hashlib.sha256(read_sealed(run_dir, name)).hexdigest()


def read_per_user(run_dir: str | Path, name: str = "per_user.parquet"):
    """A run's per-user metrics (a DataFrame), packed or not."""
    import io

    import pandas as pd
    return pd.read_parquet(io.BytesIO(read_sealed(run_dir, name)))


def seal_of(record: dict) -> str:
    """sha256 of the record's canonical JSON without its seal: any later edit changes it."""
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "seal"}).encode()).hexdigest()


def write_record(run_dir: str | Path, record: dict) -> Path:
    """Write ``record.json`` last and atomically, with the sha256 of the run's files and a
    seal over the whole record, so that an audit detects a file or a record edited later."""
    run_dir = Path(run_dir)
    record["files"] = {name: file_sha256(run_dir / name) for name in SEALED_FILES if (run_dir / name).is_file()}
    record["seal"] = seal_of(record)
    return write_json(run_dir / RECORD_NAME, record)


def read_record(run_dir: str | Path) -> dict | None:
    """The run's record, or None if there is none (or it cannot be parsed)."""
    path = Path(run_dir) / RECORD_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def seal_problem(run_dir: str | Path, record: dict) -> str:
    """'' when a record and the files it seals are as they were written; else what changed.
    Records written before seals existed have none and are taken as they are."""
    if "seal" not in record:
        return ""
    if seal_of(record) != record["seal"]:
        return "record.json was changed after it was written (its seal no longer matches)"
    for name, digest in (record.get("files") or {}).items():
        try:
            actual = sealed_sha256(run_dir, name)
        except Exception as exc:  # noqa: BLE001 - a damaged packed copy (lzma's error is no OSError)
            return f"{name} cannot be read ({exc})"
        if actual is None:
            return f"{name}, which the record seals, is missing"
        if actual != digest:
            return f"{name} was changed after the record was written"
    return ""


def is_complete(run_dir: str | Path, verify: bool = True) -> bool:
    """Whether the run in ``run_dir`` is done: its record says ``complete``.

    With ``verify`` (what a launch relies on before skipping a run), a complete record must
    also match its seal: a record or sealed file edited since raises ``TD3Error`` naming
    it, rather than being trusted. A ``record.json`` that cannot be parsed (a damaged file:
    records are written atomically) is said on stderr, and the run counts as not done."""
    path = Path(run_dir) / RECORD_NAME
    record = read_record(run_dir)
    if record is None:
        if verify and path.exists():
            log.warning("%s cannot be read (damaged or truncated); the run is not complete and runs again", path)
        return False
    if record.get("status") != "complete":
        return False
    if verify:
        problem = seal_problem(run_dir, record)
        if problem:
            raise TD3Error(f"{run_dir}: {problem}; move the run directory away to run it again")
    return True


# --------------------------------------------------------------- the record
class Timer:
    """Named sections: ``with timer("train"): ...`` adds the section's wall seconds to
    timer.seconds['train'] and the process's CPU seconds (every thread's) to timer.cpu['train'].
    Wall time is what a run took; CPU time is what it cost, whatever else shared the cores."""

    def __init__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)
            self.cpu[name] = round(self.cpu.get(name, 0.0) + time.process_time() - c0, 3)

    def as_dict(self) -> dict:
        return {**self.seconds, "total": round(time.perf_counter() - self.start, 3),
                "cpu_seconds": {**self.cpu, "total": round(time.process_time() - self.cpu_start, 3)}}


def new_record(kind: str, config: dict, sig: str) -> dict:
    """The fields every record carries, filled at the start of a run."""
    return {
        "schema": RECORD_SCHEMA,
        "kind": kind,
        "status": "running",
        "signature": sig,
        "config": config,
        "seed": config.get("seed"),
        "git": git_state(),
        "packages": package_versions(),
        "environment": environment(config.get("device")),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
