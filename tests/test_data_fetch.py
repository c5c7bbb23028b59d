"""Obtaining raw files: data dir, mirror, download (file:// URLs), checksums, registry."""
from __future__ import annotations

import hashlib
import shutil
import warnings

import pytest

from td3.data import KNOWN_DATASETS, load_dataset
from td3.data.fetch import UnpinnedChecksumWarning, fetch, fetch_file
from td3.files import file_sha256 as sha256_file
from td3.data.registry import DatasetSpec, RawSource, get_spec
from td3.errors import DataError

PAYLOAD = b"1\t2\t3\t4\n5\t6\t7\t8\n"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def files_under(directory):
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def tiny_spec(url=None, sha=PAYLOAD_SHA, mirror_path=None):
    return DatasetSpec(name="tiny", description="test", sources=(
        RawSource(format="ml-100k", file_name="u.data", url=url, sha256=sha,
                  mirror_path=mirror_path),))


@pytest.fixture
def served(tmp_path):
    """A file reachable through a file:// URL (urllib's download path, no network)."""
    path = tmp_path / "server" / "u.data"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


# --------------------------------------------------------------------------- checksum
def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20) + b"tail")                  # several read chunks
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- download
def test_download_verifies_and_stores(data_dir, served):
    path = fetch(tiny_spec(url=served.as_uri()), data_dir)
    assert path == data_dir / "raw" / "tiny" / "u.data"
    assert path.read_bytes() == PAYLOAD
    assert files_under(data_dir) == [path]                        # no temp files left


def test_download_with_wrong_checksum_leaves_nothing(data_dir, served):
    wrong = "0" * 64
    with pytest.raises(DataError) as error:
        fetch(tiny_spec(url=served.as_uri(), sha=wrong), data_dir)
    message = str(error.value)
    assert "sha256 mismatch for u.data" in message
    assert f"expected {wrong}" in message and f"got {PAYLOAD_SHA}" in message
    assert files_under(data_dir) == []
    assert not (data_dir / "raw").exists()                        # no empty dirs either


def test_download_failure_is_a_data_error(data_dir, tmp_path):
    missing = (tmp_path / "absent" / "u.data").as_uri()
    with pytest.raises(DataError, match=r"cannot download file://.*absent/u\.data"):
        fetch(tiny_spec(url=missing), data_dir)
    assert files_under(data_dir) == []


def test_existing_verified_file_is_used_without_fetching(data_dir, tmp_path):
    target = data_dir / "raw" / "tiny" / "u.data"
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    unreachable = (tmp_path / "absent" / "u.data").as_uri()
    assert fetch(tiny_spec(url=unreachable), data_dir) == target


def test_existing_file_with_wrong_digest_is_replaced_by_a_verified_copy(data_dir, served):
    target = data_dir / "raw" / "tiny" / "u.data"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"stale")
    assert fetch(tiny_spec(url=served.as_uri()), data_dir).read_bytes() == PAYLOAD


def test_unpinned_file_is_accepted_with_a_warning_and_its_digest_recorded(data_dir, served):
    with pytest.warns(UnpinnedChecksumWarning, match=PAYLOAD_SHA):
        fetched = fetch_file(tiny_spec(url=served.as_uri(), sha=None), data_dir)
    assert fetched.sha256 == PAYLOAD_SHA and not fetched.pinned


def test_data_dir_defaults_to_env(data_dir, served):
    path = fetch(tiny_spec(url=served.as_uri()))
    assert path.is_relative_to(data_dir)


# ----------------------------------------------------------------------------- mirror
def test_mirror_copy(data_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "tiny").mkdir(parents=True)
    (mirror / "tiny" / "u.data").write_bytes(PAYLOAD)
    monkeypatch.setenv("TD3_DATA_MIRROR", str(mirror))
    path = fetch(tiny_spec(mirror_path="tiny/u.data"), data_dir)
    assert path.read_bytes() == PAYLOAD


def test_second_layout_is_used_when_the_first_is_absent(data_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "tiny").mkdir(parents=True)
    (mirror / "tiny" / "u.data").write_bytes(PAYLOAD)
    monkeypatch.setenv("TD3_DATA_MIRROR", str(mirror))
    spec = DatasetSpec(name="tiny", description="test", sources=(
        RawSource(format="atomic", file_name="tiny.inter", url=None, sha256="1" * 64,
                  mirror_path="tiny/tiny.inter"),
        RawSource(format="ml-100k", file_name="u.data", url=None, sha256=PAYLOAD_SHA,
                  mirror_path="tiny/u.data")))
    fetched = fetch_file(spec, data_dir)
    assert fetched.source.format == "ml-100k" and fetched.pinned
    assert fetched.path == data_dir / "raw" / "tiny" / "u.data"


def test_missing_mirror_file_names_the_path(data_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir()
    monkeypatch.setenv("TD3_DATA_MIRROR", str(mirror))
    with pytest.raises(DataError, match=r"not found in mirror.*empty-mirror/ml-100k/ml-100k\.inter"):
        load_dataset("ml-100k")
    assert files_under(data_dir) == []


def test_no_url_and_no_mirror_explains_what_to_do(data_dir):
    with pytest.raises(DataError, match=r"'ml-1m-slice' has no public download URL; set "
                                        r"TD3_DATA_MIRROR.*ml-1m-users1-2999/ratings\.dat\.gz"):
        load_dataset("ml-1m-slice")


def test_corrupt_mirror_file_is_rejected_and_nothing_is_left(data_dir, shared_datasets,
                                                            tmp_path, monkeypatch):
    mirror = tmp_path / "bad-mirror"
    (mirror / "ml-100k").mkdir(parents=True)
    corrupt = mirror / "ml-100k" / "ml-100k.inter"
    shutil.copyfile(shared_datasets / "ml-100k" / "ml-100k.inter", corrupt)
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0x01                                     # one flipped bit
    corrupt.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    monkeypatch.setenv("TD3_DATA_MIRROR", str(mirror))

    with pytest.raises(DataError) as error:
        load_dataset("ml-100k")
    message = str(error.value)
    assert "sha256 mismatch for ml-100k.inter" in message
    assert "expected 4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff" in message
    assert f"got {actual}" in message
    assert files_under(data_dir) == []                              # no raw file, no cache


# --------------------------------------------------------------------------- registry
def test_unknown_dataset_lists_known_names(data_dir):
    with pytest.raises(DataError) as error:
        load_dataset("ml-10m")
    message = str(error.value)
    assert "unknown dataset 'ml-10m'" in message
    for name in ("ml-100k", "ml-1m", "ml-1m-slice", "magazine", "magazine-2018", "epinions",
                 "synthetic"):
        assert name in message


def test_registry_entries_are_complete_and_frozen():
    expected = {"ml-100k", "ml-1m", "ml-1m-slice", "magazine", "magazine-2018", "epinions",
                "synthetic"}
    assert set(KNOWN_DATASETS) == expected
    for spec in KNOWN_DATASETS.values():
        for source in spec.sources:
            assert source.sha256 is None or len(source.sha256) == 64
            assert source.url or source.mirror_path, spec.name
    magazine = get_spec("magazine-2018")
    assert (magazine.filter.item_min, magazine.filter.user_min) == (3, 5)
    assert get_spec("magazine").filter == magazine.filter
    assert get_spec("ml-100k").filter.is_identity and get_spec("epinions").filter.is_identity
    assert get_spec("ml-1m-slice").url is None
    assert get_spec("ml-100k").url == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    with pytest.raises(Exception):
        magazine.name = "other"                                      # frozen dataclass


def test_real_mirror_files_match_their_pinned_digests(shared_datasets):
    for name in ("ml-100k", "magazine-2018", "ml-1m-slice"):
        source = get_spec(name).sources[0]
        assert sha256_file(shared_datasets / source.mirror_path) == source.sha256, name


def test_fetch_from_the_real_mirror_without_warnings(mirror_data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = fetch(get_spec("magazine-2018"))
    assert path == mirror_data_dir / "raw" / "magazine-2018" / "Magazine_Subscriptions.csv"
