"""From a raw file to the processed dataset every experiment uses, cached on disk.

The protocol (docs/protocol.md, "Datasets" and "Data and split"), in order:
1. read the raw file (``formats``), verified by sha256 (``fetch``);
2. filter: items with >= item_min interactions, then users with >= user_min, one pass each;
3. drop users with fewer than 3 interactions (no train/valid/test split possible; counted);
4. remap ids. Items get 1..|V| in order of first appearance in the file (after steps 2-3),
   users 0..U-1 likewise. First appearance is what RecBole's remapping does, and it is
   deterministic; items of dropped users are not in the vocabulary, so |V| counts only items
   that occur;
5. sort each user's interactions by timestamp, stably (ties keep file order);
6. leave-one-out: last item = test target, second to last = validation target, rest = train;
7. negatives, drawn once with a fixed seed (``negatives_seed``) so that every run ranks
   against the same candidates, for two sampled protocols (``docs/protocol.md``):
   - ``recbole100`` (the paper's, RecBole's RepeatableSampler): per split, per user,
     ``num_negatives`` items drawn uniformly with replacement from every item but that
     split's target, so the user's own earlier items can be negatives;
   - ``unseen100``: per user, ``num_negatives`` items drawn uniformly without replacement
     from the items the user never interacted with (one set for both splits).
   Rows are sorted.

The result is cached as one ``.npz`` (flat arrays + offsets, no pickle) at
``<data_dir>/processed/<name>-<key>.npz``; the key hashes the raw file's sha256, every
preprocessing option and ``FORMAT_VERSION``, so a changed file or option can never hit a
stale cache. Writes are atomic; a cache that fails to load or whose content digest does
not match is rebuilt (with a warning), never trusted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from td3.data.batches import pad_sequences
from td3.data.fetch import fetch_file, resolve_data_dir
from td3.files import atomic_path, file_sha256
from td3.data.formats import FORMATS, layout_for, read_interactions
from td3.data.registry import KNOWN_DATASETS, DatasetSpec, ItemUserFilter, get_spec
from td3.data.synthetic import SyntheticConfig, generate_from_config
from td3.errors import ConfigError, DataError

#: Bump whenever preprocessing semantics or the cache layout change.
#: 2: the recbole100 negatives (per split) are stored beside the unseen100 ones.
FORMAT_VERSION = 2
NUM_NEGATIVES = 100
MIN_INTERACTIONS = 3          # a user needs train (>= 1), valid and test
SPLIT_INDEX = {"valid": 0, "test": 1}   # row of recbole_negatives


# ------------------------------------------------------------------------------ dataset
@dataclass(eq=False, repr=False)
class SequenceDataset:
    """A prepared dataset. Item ids are 1..num_items (0 = padding); users are 0..U-1."""

    name: str
    num_users: int
    num_items: int                 # real items; ids 1..num_items
    train: list[np.ndarray]        # per user, int64 ids in time order, all but the last two
    valid: np.ndarray              # (U,) int64 validation target (second to last)
    test: np.ndarray               # (U,) int64 test target (last)
    negatives: np.ndarray          # (U, num_negatives) int64 unseen100: never-interacted, sorted rows
    recbole_negatives: np.ndarray  # (2, U, num_negatives) int64 recbole100 [valid, test]: any item
                                   # but that split's target, with replacement, sorted rows
    sha256: str                    # raw file's digest (synthetic: of the generator config)
    user_ids: np.ndarray           # (U,) raw user id of user index u
    item_ids: np.ndarray           # (num_items + 1,) raw item id of id i; [0] = '[PAD]'
    stats: dict = field(default_factory=dict)

    def history(self, u: int) -> np.ndarray:
        """All items of user u in time order (train + valid + test)."""
        return np.concatenate([self.train[u], [self.valid[u], self.test[u]]]).astype(np.int64)

    def negatives_for(self, protocol: str, split: str) -> np.ndarray:
        """(U, num_negatives) candidates of a sampled ranking protocol on ``split``."""
        if protocol == "unseen100":
            return self.negatives
        if protocol == "recbole100":
            return self.recbole_negatives[SPLIT_INDEX[split]]
        raise ValueError(f"no stored negatives for protocol {protocol!r}")

    def eval_inputs(self, split: str, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Contexts and targets for ranking evaluation.

        'valid': context = train[-max_len:], target = valid.
        'test':  context = (train + [valid])[-max_len:], target = test.
        Returns inputs (U, max_len) left-aligned right-padded, lengths (U,), targets (U,).
        """
        if split == "valid":
            contexts, targets = self.train, self.valid
        elif split == "test":
            contexts = [np.append(t, v) for t, v in zip(self.train, self.valid)]
            targets = self.test
        else:
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        inputs, lengths = pad_sequences(contexts, max_len)
        return inputs, lengths, targets.astype(np.int64, copy=True)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(t) for t in self.train) + 2 * self.num_users)

    def __repr__(self) -> str:
        return (f"SequenceDataset({self.name!r}, users={self.num_users}, "
                f"items={self.num_items}, interactions={self.num_interactions}, "
                f"sha256={self.sha256[:12]}…)")


# ------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class PrepareOptions:
    """Every knob that changes the processed dataset (all of them enter the cache key)."""

    name: str
    path: str | None = None               # a user's own raw file instead of the registry's
    format: str | None = None
    sha256: str | None = None             # optional pin for a user's own file
    item_min: int = 0
    user_min: int = 0
    num_negatives: int = NUM_NEGATIVES
    negatives_seed: int = 0
    synthetic: SyntheticConfig | None = None

    @property
    def filter(self) -> ItemUserFilter:
        return ItemUserFilter(self.item_min, self.user_min)


_COMMON_KEYS = {"name", "path", "format", "sha256", "item_min", "user_min", "num_negatives",
                "negatives_seed", "data_dir"}
_SYNTHETIC_KEYS = {f.name for f in dataclasses.fields(SyntheticConfig)}


def _resolve_options(name_or_cfg, data_dir, options: dict
                     ) -> tuple[PrepareOptions, DatasetSpec | None, str | Path | None]:
    """Validate a name or mapping plus keyword options -> (options, registry entry or None
    for a user's own file or the generator, data_dir)."""
    if isinstance(name_or_cfg, str):
        merged = {"name": name_or_cfg}
    elif isinstance(name_or_cfg, Mapping):
        merged = {str(k): v for k, v in name_or_cfg.items()}
    else:
        raise ConfigError(f"load_dataset takes a dataset name or a mapping with 'name', "
                          f"got {type(name_or_cfg).__name__}")
    merged.update(options)
    merged = {k: v for k, v in merged.items() if v is not None}   # None = "the default"
    name = merged.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("dataset config needs a 'name' (a known dataset, or any name "
                          "together with path= and format=)")
    if data_dir is None:
        data_dir = merged.get("data_dir")
    path = merged.get("path")
    if path is None:
        get_spec(name)  # an unknown name is the first thing to say, before any option
    is_synthetic = name == "synthetic" and path is None
    allowed = _COMMON_KEYS | (_SYNTHETIC_KEYS if is_synthetic else set())
    unknown = sorted(set(merged) - allowed)
    if unknown:
        hint = ("; 'seed' only seeds the synthetic generator, negatives use negatives_seed"
                if "seed" in unknown else "")
        raise ConfigError(f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}{hint}")

    spec = None
    if path is None:
        spec = get_spec(name)
        default_filter = spec.filter
    else:
        default_filter = KNOWN_DATASETS[name].filter if name in KNOWN_DATASETS else ItemUserFilter()
    fmt = merged.get("format")
    if path is not None:
        fmt = fmt or _format_from_registry(name, Path(path))
        if fmt is None:
            raise ConfigError(f"dataset {name!r}: path= needs format= (one of "
                              f"{', '.join(FORMATS)})")
        layout_for(fmt)  # unknown format -> DataError listing the known ones
    elif fmt is not None or "sha256" in merged:
        raise ConfigError(f"dataset {name!r}: format= and sha256= only apply together with "
                          f"path= (registry datasets carry their own)")

    synthetic = None
    if is_synthetic:
        synthetic_args = {}
        for f in dataclasses.fields(SyntheticConfig):
            if f.name in merged:
                value = merged[f.name]
                synthetic_args[f.name] = (_as_int(name, f.name, value, SyntheticConfig.MINIMUM[f.name])
                                          if isinstance(f.default, int)
                                          else float(_as_number(name, f.name, value)))
        synthetic = SyntheticConfig(**synthetic_args).validate()

    resolved = PrepareOptions(
        name=name,
        path=None if path is None else str(path),
        format=fmt,
        sha256=None if "sha256" not in merged else str(merged["sha256"]).lower(),
        item_min=_as_int(name, "item_min", merged.get("item_min", default_filter.item_min), 0),
        user_min=_as_int(name, "user_min", merged.get("user_min", default_filter.user_min), 0),
        num_negatives=_as_int(name, "num_negatives", merged.get("num_negatives", NUM_NEGATIVES), 1),
        negatives_seed=_as_int(name, "negatives_seed", merged.get("negatives_seed", 0), 0),
        synthetic=synthetic,
    )
    return resolved, (None if is_synthetic else spec), data_dir


def _format_from_registry(name: str, path: Path) -> str | None:
    if name not in KNOWN_DATASETS:
        return None
    for source in KNOWN_DATASETS[name].sources:
        if source.file_name == path.name:
            return source.format
    return None


def _as_int(name: str, key: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"dataset {name!r}: {key} must be an integer >= {minimum}, "
                          f"got {value!r}")
    return int(value)


def _as_number(name: str, key: str, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"dataset {name!r}: {key} must be a number, got {value!r}")
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------- entry point
def load_dataset(name_or_cfg, data_dir: str | Path | None = None, *, cache: bool = True,
                 **options) -> SequenceDataset:
    """The processed dataset for a name (``'ml-100k'``) or a config mapping.

    Options (keyword or mapping keys): ``item_min``, ``user_min`` (override the registry's
    filter), ``num_negatives`` (100), ``negatives_seed`` (0), ``path`` + ``format`` (a file
    of your own; any name; optional ``sha256`` pin), and for ``synthetic`` the generator's
    ``num_users``, ``num_items``, ``num_clusters``, ``min_len``, ``max_len``, ``seed``, ...
    Unknown options are a ``ConfigError`` (a typo must not silently change the data).
    ``data_dir`` defaults to ``$TD3_DATA_DIR`` or ``~/.cache/td3/data``.
    """
    opts, spec, data_dir = _resolve_options(name_or_cfg, data_dir, options)
    root = resolve_data_dir(data_dir)

    if opts.synthetic is not None:
        config_json = json.dumps(opts.synthetic.as_dict(), sort_keys=True)
        raw_sha = hashlib.sha256(config_json.encode()).hexdigest()
        source = {"kind": "synthetic", "config": opts.synthetic.as_dict()}
        read = lambda: generate_from_config(opts.synthetic)  # noqa: E731
    elif opts.path is not None:
        path = Path(opts.path).expanduser()
        if not path.is_file():
            raise DataError(f"dataset {opts.name!r}: file not found: {path}")
        raw_sha = file_sha256(path)
        if opts.sha256 is not None and raw_sha != opts.sha256:
            raise DataError(f"sha256 mismatch for {path}: expected {opts.sha256}, "
                            f"got {raw_sha}")
        source = {"kind": "file", "file": path.name, "format": opts.format}
        read = lambda: read_interactions(path, opts.format)  # noqa: E731
    else:
        fetched = fetch_file(spec, root)
        raw_sha = fetched.sha256
        opts = dataclasses.replace(opts, format=fetched.source.format)
        source = {"kind": "registry", "file": fetched.path.name,
                  "format": fetched.source.format, "sha256_pinned": fetched.pinned}
        read = lambda: read_interactions(fetched.path, fetched.source.format)  # noqa: E731

    key = cache_key(opts, raw_sha)
    cache_path = root / "processed" / f"{_safe_name(opts.name)}-{key}.npz"
    if cache and cache_path.is_file():
        cached = _read_cache(cache_path, key)
        if cached is not None:
            return cached
    dataset = build_dataset(read(), opts, raw_sha, source)
    if cache:
        _write_cache(cache_path, dataset, key)
    return dataset


def cache_key(opts: PrepareOptions, raw_sha256: str) -> str:
    """16 hex digits identifying (raw bytes, every preprocessing option, code version)."""
    described = {
        "format_version": FORMAT_VERSION,
        "raw_sha256": raw_sha256,
        "format": opts.format,
        "item_min": opts.item_min,
        "user_min": opts.user_min,
        "num_negatives": opts.num_negatives,
        "negatives_seed": opts.negatives_seed,
        "min_interactions": MIN_INTERACTIONS,
        "synthetic": None if opts.synthetic is None else opts.synthetic.as_dict(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


# -------------------------------------------------------------------------- the pipeline
def build_dataset(frame: pd.DataFrame, opts: PrepareOptions, raw_sha256: str,
                  source: dict | None = None) -> SequenceDataset:
    """Steps 2-7 of the protocol on an already-read table (see the module docstring)."""
    raw_users, raw_user_ids = pd.factorize(frame["user"], sort=False)
    raw_items, _ = pd.factorize(frame["item"], sort=False)
    keep = _one_pass_filter(raw_users, raw_items, opts.filter)       # (N,) bool

    user_counts = np.bincount(raw_users[keep], minlength=len(raw_user_ids))
    dropped_short = int(np.count_nonzero((user_counts > 0) & (user_counts < MIN_INTERACTIONS)))
    keep &= user_counts[raw_users] >= MIN_INTERACTIONS
    if not keep.any():
        raise DataError(
            f"dataset {opts.name!r}: no user has >= {MIN_INTERACTIONS} interactions after "
            f"filtering (item_min={opts.item_min}, user_min={opts.user_min}; "
            f"{len(frame)} raw interactions)")

    kept = frame.loc[keep]
    users, user_ids = pd.factorize(kept["user"], sort=False)         # (M,) 0..U-1
    items, item_ids = pd.factorize(kept["item"], sort=False)         # (M,) 0..V-1
    items = items.astype(np.int64) + 1                               # ids 1..V
    num_users, num_items = len(user_ids), len(item_ids)
    timestamps = kept["timestamp"].to_numpy(dtype=np.float64)

    # Stable time order per user: file position breaks timestamp ties explicitly.
    order = np.lexsort((np.arange(len(items)), timestamps, users))
    sequence_items = items[order]                                    # (M,) grouped by user
    lengths = np.bincount(users, minlength=num_users)                # (U,)
    ends = np.cumsum(lengths)                                        # (U,) exclusive
    test = sequence_items[ends - 1]
    valid = sequence_items[ends - 2]
    in_train = np.ones(len(sequence_items), dtype=bool)
    in_train[ends - 1] = False
    in_train[ends - 2] = False
    train_flat = sequence_items[in_train]
    train_offsets = np.concatenate([[0], np.cumsum(lengths - 2)])    # (U+1,)

    negatives = sample_negatives(sequence_items, ends - lengths, lengths, num_items,
                                 opts.num_negatives, opts.negatives_seed,
                                 opts.name, np.asarray(user_ids, dtype=str))
    recbole_negatives = np.stack([
        sample_recbole_negatives(targets, num_items, opts.num_negatives,
                                 recbole_seed(opts.negatives_seed, split), opts.name)
        for split, targets in (("valid", valid), ("test", test))])
    stats = {
        "users": num_users,
        "items": num_items,
        "interactions": int(len(sequence_items)),
        "avg_len": float(len(sequence_items) / num_users),
        "filter": {"item_min": opts.item_min, "user_min": opts.user_min,
                   "one_pass": True, "applied": not opts.filter.is_identity},
        "dropped_short_users": dropped_short,
        "min_interactions": MIN_INTERACTIONS,
        "raw": {"interactions": int(len(frame)), "users": int(len(raw_user_ids)),
                "items": int(raw_items.max() + 1) if len(raw_items) else 0},
        "num_negatives": opts.num_negatives,
        "negatives_seed": opts.negatives_seed,
        "negatives": {"unseen100": "per user, without replacement, among items the user never "
                                   "interacted with (one set for both splits)",
                      "recbole100": "per split and user, with replacement, among all items but "
                                    "the split's target (RecBole's RepeatableSampler)"},
        "item_order": "first appearance in the raw file",
        "source": source or {},
    }
    return SequenceDataset(
        name=opts.name, num_users=num_users, num_items=num_items,
        train=_split_flat(train_flat, train_offsets), valid=valid.astype(np.int64),
        test=test.astype(np.int64), negatives=negatives, recbole_negatives=recbole_negatives,
        sha256=raw_sha256,
        user_ids=np.asarray(user_ids, dtype=str),
        item_ids=np.asarray(["[PAD]", *map(str, item_ids)], dtype=str),
        stats=json.loads(json.dumps(stats)),   # plain JSON types, same as after a cache load
    )


def _one_pass_filter(users: np.ndarray, items: np.ndarray, rule: ItemUserFilter) -> np.ndarray:
    """Rows kept by: items with >= item_min rows, then (on those) users with >= user_min."""
    keep = np.ones(len(users), dtype=bool)
    if rule.item_min > 1:
        keep &= np.bincount(items)[items] >= rule.item_min
    if rule.user_min > 1:
        keep &= np.bincount(users[keep], minlength=users.max() + 1)[users] >= rule.user_min
    return keep


def sample_negatives(sequence_items: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                     num_items: int, num_negatives: int, seed: int, name: str,
                     user_ids: np.ndarray) -> np.ndarray:
    """(U, num_negatives) int64: per user, uniform without replacement over the items the
    user never interacted with; one Generator(seed) consumed user by user; rows sorted."""
    if num_items < num_negatives + 1:
        raise DataError(
            f"dataset {name!r} too small: {num_items} items, but ranking a target against "
            f"{num_negatives} negatives needs at least {num_negatives + 1}")
    rng = np.random.default_rng(seed)
    negatives = np.empty((len(lengths), num_negatives), dtype=np.int64)
    allowed = np.ones(num_items + 1, dtype=bool)
    for u, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
        history = sequence_items[start:start + length]
        allowed[1:] = True
        allowed[0] = False
        allowed[history] = False
        candidates = np.flatnonzero(allowed)
        if len(candidates) < num_negatives:
            raise DataError(
                f"dataset {name!r} too small: user {user_ids[u]} interacted with "
                f"{num_items - len(candidates)} of {num_items} items, leaving "
                f"{len(candidates)} < {num_negatives} candidate negatives")
        chosen = rng.choice(candidates, size=num_negatives, replace=False)
        negatives[u] = np.sort(chosen)
    return negatives


def recbole_seed(seed: int, split: str) -> np.random.SeedSequence:
    """The recbole100 draws' seed for a split: independent of the unseen100 stream (which
    keeps ``default_rng(seed)``, so its negatives are those of datasets prepared before)."""
    return np.random.SeedSequence([seed, 100, SPLIT_INDEX[split]])


def sample_recbole_negatives(targets: np.ndarray, num_items: int, num_negatives: int,
                             seed: int | np.random.SeedSequence, name: str = "") -> np.ndarray:
    """(U, num_negatives) int64: RecBole's RepeatableSampler as its sequential models use it
    (``repeatable=True``): per user, each negative uniform over items 1..num_items except
    that user's target, drawn independently (with replacement); the user's other items,
    earlier ones included, can be drawn. Rows sorted.

    A draw from the num_items - 1 allowed ids is ``r ~ U{1..num_items-1}``, shifted up by
    one where ``r >= target``: exactly uniform over the allowed ids, with no rejection loop."""
    targets = np.asarray(targets, dtype=np.int64)
    if num_items < 2:
        raise DataError(f"dataset {name!r} too small: {num_items} item(s); a sampled negative "
                        f"must differ from the target, which needs at least 2 items")
    if targets.size and (targets.min() < 1 or targets.max() > num_items):
        raise DataError(f"dataset {name!r}: targets must be item ids in 1..{num_items}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(1, num_items, size=(len(targets), num_negatives), dtype=np.int64)
    draws += draws >= targets[:, None]
    return np.sort(draws, axis=1)


def _split_flat(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[u]:offsets[u + 1]] for u in range(len(offsets) - 1)]


# ---------------------------------------------------------------------------------- cache
_ARRAY_KEYS = ("train_items", "train_offsets", "valid", "test", "negatives", "recbole_negatives",
               "user_ids", "item_ids")


def _cache_arrays(dataset: SequenceDataset) -> dict[str, np.ndarray]:
    lengths = np.fromiter((len(t) for t in dataset.train), dtype=np.int64,
                          count=len(dataset.train))
    flat = (np.concatenate(dataset.train) if dataset.train else np.zeros(0)).astype(np.int64)
    return {
        "train_items": flat,
        "train_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "valid": dataset.valid, "test": dataset.test, "negatives": dataset.negatives,
        "recbole_negatives": dataset.recbole_negatives,
        "user_ids": dataset.user_ids, "item_ids": dataset.item_ids,
    }


def _content_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in _ARRAY_KEYS:
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _write_cache(path: Path, dataset: SequenceDataset, key: str) -> None:
    """Written atomically (``td3.files``); a cache that cannot be written is only a warning."""
    arrays = _cache_arrays(dataset)
    meta = {"key": key, "format_version": FORMAT_VERSION, "name": dataset.name,
            "num_users": dataset.num_users, "num_items": dataset.num_items,
            "sha256": dataset.sha256, "stats": dataset.stats,
            "content_sha256": _content_digest(arrays)}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    except OSError as exc:
        warnings.warn(f"could not write the processed-dataset cache {path}: {exc}; "
                      f"continuing without it", RuntimeWarning, stacklevel=3)


def _read_cache(path: Path, key: str) -> SequenceDataset | None:
    """The cached dataset, or None (with a warning) if the file is unusable in any way."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"][()]))
            arrays = {k: archive[k] for k in _ARRAY_KEYS}
        problem = _cache_problem(meta, arrays, key)
    except Exception as exc:  # any unreadable file: truncated zip, bad CRC, wrong dtype...
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        warnings.warn(f"processed-dataset cache {path} is corrupt ({problem}); rebuilding it",
                      RuntimeWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        return None
    return SequenceDataset(
        name=meta["name"], num_users=meta["num_users"], num_items=meta["num_items"],
        train=_split_flat(arrays["train_items"], arrays["train_offsets"]),
        valid=arrays["valid"], test=arrays["test"], negatives=arrays["negatives"],
        recbole_negatives=arrays["recbole_negatives"], sha256=meta["sha256"],
        user_ids=arrays["user_ids"], item_ids=arrays["item_ids"],
        stats=meta["stats"])


def _cache_problem(meta: dict, arrays: dict[str, np.ndarray], key: str) -> str:
    if meta.get("key") != key or meta.get("format_version") != FORMAT_VERSION:
        return "key or format version does not match"
    if _content_digest(arrays) != meta.get("content_sha256"):
        return "content digest does not match"
    users, items = meta["num_users"], meta["num_items"]
    offsets = arrays["train_offsets"]
    shapes_ok = (
        offsets.shape == (users + 1,) and offsets[0] == 0
        and offsets[-1] == len(arrays["train_items"]) and np.all(np.diff(offsets) >= 1)
        and arrays["valid"].shape == (users,) and arrays["test"].shape == (users,)
        and arrays["negatives"].ndim == 2 and arrays["negatives"].shape[0] == users
        and arrays["recbole_negatives"].shape == (2, users, arrays["negatives"].shape[1])
        and arrays["user_ids"].shape == (users,) and arrays["item_ids"].shape == (items + 1,))
    if not shapes_ok:
        return "array shapes are inconsistent"
    return ""
