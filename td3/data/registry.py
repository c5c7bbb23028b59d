"""The named datasets: where each raw file comes from, how to check it, how to filter it.

A name must pin down exactly which bytes a result was computed from, so every entry
carries the sha256 of its raw file where a trustworthy value is known. Where none is known
(``sha256=None``) the file is accepted with a warning and its observed digest is recorded
with the processed dataset, so two runs on different bytes still never look alike.

One dataset may accept more than one raw layout (``sources``), e.g. ML-100K either as the
RecBole atomic file a mirror holds or as the official GroupLens zip. They hold the same
rows in the same order, so they prepare to the same sequences; they are tried in order.

Checksum provenance (never invented; see each entry):
- ``ml-100k.inter``: the data mirror's README (``$TD3_DATA_MIRROR/README.md``).
- GroupLens ``ml-100k.zip`` / ``ml-1m.zip``: TensorFlow Datasets,
  ``tensorflow_datasets/url_checksums/movielens.txt`` (same values, and the same byte
  sizes 4,924,029 / 5,917,549, appear in several independent projects).
- ``ml-1m-users1-2999/ratings.dat.gz``, ``Magazine_Subscriptions.csv`` (2018): the mirror
  README.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

from td3.errors import DataError


@dataclass(frozen=True)
class ItemUserFilter:
    """Keep items with >= item_min interactions, then users with >= user_min, one pass each.

    Deliberately not an iterative k-core: the paper's Magazine numbers come from a single
    pass (items first, then users), after which some items may have < item_min left.
    """

    item_min: int = 0
    user_min: int = 0

    @property
    def is_identity(self) -> bool:
        return self.item_min <= 1 and self.user_min <= 1


NO_FILTER = ItemUserFilter()


@dataclass(frozen=True)
class RawSource:
    """One accepted raw layout of a dataset.

    file_name: the name the file is stored under in the data directory.
    mirror_path: where it sits below a mirror root (``TD3_DATA_MIRROR``), or None.
    url: the official download, or None when the file only exists on mirrors.
    sha256: the pinned digest of the file as downloaded, or None when unknown.
    """

    format: str
    file_name: str
    url: str | None
    sha256: str | None
    mirror_path: str | None


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset. ``sources`` are tried in order; ``filter`` is the default
    preprocessing (overridable per call); ``optional_filter`` is the documented
    alternative (Epinions: the paper's 5/5 option)."""

    name: str
    description: str
    sources: tuple[RawSource, ...] = ()
    filter: ItemUserFilter = NO_FILTER
    optional_filter: ItemUserFilter | None = None
    generated: bool = False       # True for the synthetic dataset: no raw file at all

    # The primary layout's fields, for callers that think of one file per dataset.
    @property
    def format(self) -> str | None:
        return self.sources[0].format if self.sources else None

    @property
    def file_name(self) -> str | None:
        return self.sources[0].file_name if self.sources else None

    @property
    def url(self) -> str | None:
        return next((s.url for s in self.sources if s.url), None)

    @property
    def sha256(self) -> str | None:
        return self.sources[0].sha256 if self.sources else None

    @property
    def mirror_path(self) -> str | None:
        return self.sources[0].mirror_path if self.sources else None


_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_PAPER_MAGAZINE_FILTER = ItemUserFilter(item_min=3, user_min=5)

_SPECS = (
    DatasetSpec(
        name="ml-100k",
        description="MovieLens 100K, no filtering (943 users, 1682 items, 100,000 ratings)",
        sources=(
            RawSource(
                format="atomic", file_name="ml-100k.inter", url=None,
                # the data mirror's README ($TD3_DATA_MIRROR/README.md)
                sha256="4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                mirror_path="ml-100k/ml-100k.inter"),
            RawSource(
                format="ml-100k", file_name="ml-100k.zip", url=f"{_GROUPLENS}/ml-100k.zip",
                # TensorFlow Datasets url_checksums/movielens.txt (4,924,029 bytes)
                sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                mirror_path="ml-100k/ml-100k.zip"),
        ),
    ),
    DatasetSpec(
        name="ml-1m",
        description="MovieLens 1M, no filtering (6040 users, 3706 items, 1,000,209 ratings)",
        sources=(
            RawSource(
                format="ml-1m", file_name="ml-1m.zip", url=f"{_GROUPLENS}/ml-1m.zip",
                # TensorFlow Datasets url_checksums/movielens.txt (5,917,549 bytes)
                sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                mirror_path="ml-1m/ml-1m.zip"),
        ),
    ),
    DatasetSpec(
        name="ml-1m-slice",
        description="MovieLens 1M users 1-2999 only (a real long-sequence slice for scale "
                    "tests; mirror only)",
        sources=(
            RawSource(
                format="ml-1m", file_name="ratings.dat.gz", url=None,
                # the data mirror's README ($TD3_DATA_MIRROR/README.md)
                sha256="2fedcf5405373a49df4041e3d3fe1e8db9eacf2c77c209ae1f686ea06b7a16d9",
                mirror_path="ml-1m-users1-2999/ratings.dat.gz"),
        ),
    ),
    DatasetSpec(
        name="magazine",
        description="Amazon Reviews 2023 Magazine_Subscriptions (0core, rating only); items "
                    ">=3 then users >=5, one pass each (the paper's dataset)",
        sources=(
            RawSource(
                format="amazon-2023", file_name="Magazine_Subscriptions.csv.gz",
                url="https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/benchmark/"
                    "0core/rating_only/Magazine_Subscriptions.csv.gz",
                # Not pinned: the only published digest found (in one third-party loader)
                # could not be corroborated; the observed digest is recorded instead.
                sha256=None,
                mirror_path="magazine-2023/Magazine_Subscriptions.csv.gz"),
            RawSource(
                format="amazon-2023", file_name="Magazine_Subscriptions.csv", url=None,
                sha256=None, mirror_path="magazine-2023/Magazine_Subscriptions.csv"),
        ),
        filter=_PAPER_MAGAZINE_FILTER,
    ),
    DatasetSpec(
        name="magazine-2018",
        description="Amazon Review Data 2018 Magazine_Subscriptions ratings; items >=3 then "
                    "users >=5, one pass each (stands in for the 2023 file here)",
        sources=(
            RawSource(
                format="amazon-2018", file_name="Magazine_Subscriptions.csv",
                url="https://jmcauley.ucsd.edu/data/amazon_v2/categoryFilesSmall/"
                    "Magazine_Subscriptions.csv",
                # the data mirror's README ($TD3_DATA_MIRROR/README.md)
                sha256="6e1b48a78f7d4713a3f15abb028d5a1258e3c06d04b258b9d478f55d057a6696",
                mirror_path="magazine-2018/Magazine_Subscriptions.csv"),
        ),
        filter=_PAPER_MAGAZINE_FILTER,
    ),
    DatasetSpec(
        name="epinions",
        description="Epinions (Zhao, McAuley, King, CIKM'14), RecBole atomic file as is; the "
                    "paper's one-pass 5/5 filter is an option (item_min=5, user_min=5)",
        sources=(
            RawSource(
                format="epinions", file_name="epinions.inter", url=None, sha256=None,
                mirror_path="epinions/epinions.inter"),
            RawSource(
                format="epinions", file_name="epinions.zip",
                url="https://recbole.s3-accelerate.amazonaws.com/ProcessedDatasets/"
                    "Epinions/epinions.zip",
                sha256=None, mirror_path="epinions/epinions.zip"),
        ),
        optional_filter=ItemUserFilter(item_min=5, user_min=5),
    ),
    DatasetSpec(
        name="synthetic",
        description="Generated clustered Markov sequences (no file); see td3.data.synthetic",
        generated=True,
    ),
)

#: name -> DatasetSpec, read-only.
KNOWN_DATASETS: types.MappingProxyType[str, DatasetSpec] = types.MappingProxyType(
    {spec.name: spec for spec in _SPECS})


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; an unknown name lists the known ones."""
    try:
        return KNOWN_DATASETS[name]
    except (KeyError, TypeError):
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(KNOWN_DATASETS)} "
            f"(or pass path= and format= for a file of your own)") from None
