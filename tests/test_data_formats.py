"""Every raw format parsed from small files written here, and every malformed-row error."""
from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pytest

from td3.data.formats import FORMATS, read_interactions
from td3.errors import DataError

U_DATA_ROWS = [("196", "242", 3, 881250949), ("186", "302", 3, 891717742),
               ("22", "377", 1, 878887116), ("196", "51", 2, 880606923)]


def write(path, text: str | bytes):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def u_data_text(rows=U_DATA_ROWS) -> str:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)


def ratings_dat_text(rows=U_DATA_ROWS) -> str:
    return "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows)


def assert_table(frame, users, items, timestamps, ratings):
    assert list(frame.columns) == ["user", "item", "timestamp", "rating"]
    assert frame["timestamp"].dtype == np.float64 and frame["rating"].dtype == np.float64
    assert list(frame["user"]) == users
    assert list(frame["item"]) == items
    assert all(isinstance(x, str) for x in frame["user"]) and all(isinstance(x, str) for x in frame["item"])
    np.testing.assert_array_equal(frame["timestamp"].to_numpy(), np.asarray(timestamps, float))
    np.testing.assert_array_equal(frame["rating"].to_numpy(), np.asarray(ratings, float))


# ------------------------------------------------------------------------ good files
def test_ml100k_u_data(tmp_path):
    frame = read_interactions(write(tmp_path / "u.data", u_data_text()), "ml-100k")
    assert_table(frame, ["196", "186", "22", "196"], ["242", "302", "377", "51"],
                 [881250949, 891717742, 878887116, 880606923], [3, 3, 1, 2])


def test_ml100k_zip_archive_picks_u_data(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/README", "not data\n")
        z.writestr("ml-100k/u1.base", "1\t2\t3\n")          # must not be picked
        z.writestr("ml-100k/u.data", u_data_text())
    frame = read_interactions(archive, "ml-100k")
    assert list(frame["item"]) == ["242", "302", "377", "51"]


def test_zip_without_the_expected_member_is_an_error(tmp_path):
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-1m/movies.dat", "1::Toy Story (1995)::Animation\n")
    with pytest.raises(DataError, match=r"ml-1m\.zip.*ratings\.dat.*matching members: none"):
        read_interactions(archive, "ml-1m")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_ml1m_ratings_dat_plain_and_gzip(tmp_path, compress):
    data = ratings_dat_text().encode()
    name = "ratings.dat.gz" if compress else "ratings.dat"
    path = write(tmp_path / name, gzip.compress(data) if compress else data)
    frame = read_interactions(path, "ml-1m")
    assert_table(frame, ["196", "186", "22", "196"], ["242", "302", "377", "51"],
                 [881250949, 891717742, 878887116, 880606923], [3, 3, 1, 2])


def test_gzip_is_detected_by_magic_bytes_not_name(tmp_path):
    path = write(tmp_path / "ratings.dat", gzip.compress(ratings_dat_text().encode()))
    assert len(read_interactions(path, "ml-1m")) == 4


def test_ml1m_zip_archive(tmp_path):
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("ml-1m/movies.dat", "1::Toy Story (1995)::Animation\n")
        z.writestr("ml-1m/ratings.dat", ratings_dat_text())
    frame = read_interactions(archive, "ml-1m")
    assert list(frame["user"]) == ["196", "186", "22", "196"]


def test_atomic_finds_columns_by_name_in_any_order_and_ignores_extras(tmp_path):
    text = ("item_id:token\tprice:float\ttimestamp:float\tuser_id:token\trating:float\n"
            "i1\t9.99\t100\tu1\t4\n"
            "i2\t\t50\tu2\t5\n")
    frame = read_interactions(write(tmp_path / "x.inter", text), "atomic")
    assert_table(frame, ["u1", "u2"], ["i1", "i2"], [100, 50], [4, 5])


def test_atomic_without_rating_column_gives_nan_ratings(tmp_path):
    text = "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t7\n"
    frame = read_interactions(write(tmp_path / "x.inter", text), "atomic")
    assert frame["timestamp"].tolist() == [7.0]
    assert np.isnan(frame["rating"].to_numpy()).all()


def test_epinions_atomic_with_price_column(tmp_path):
    text = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\tprice:float\n"
            "0\t100\t5.0\t1073001600\t14.99\n"
            "0\t101\t2.0\t1073001600\t0.0\n"
            "7\t100\t4.0\t1040169600\t14.99\n")
    frame = read_interactions(write(tmp_path / "epinions.inter", text), "epinions")
    assert_table(frame, ["0", "0", "7"], ["100", "101", "100"],
                 [1073001600, 1073001600, 1040169600], [5, 2, 4])


def test_ids_stay_strings_even_when_they_look_like_numbers_or_nan(tmp_path):
    text = "user_id:token\titem_id:token\ttimestamp:float\n007\tNA\t1\nnan\t1.0\t2\n"
    frame = read_interactions(write(tmp_path / "x.inter", text), "atomic")
    assert list(frame["user"]) == ["007", "nan"] and list(frame["item"]) == ["NA", "1.0"]


def test_amazon_2018_csv_item_first(tmp_path):
    text = "B00005N7P0,AH2IFH762VY5U,5.0,1005177600\nB00005N7OJ,A3JPFWKS83R49V,3.0,1174694400\n"
    frame = read_interactions(write(tmp_path / "Magazine.csv", text), "amazon-2018")
    assert_table(frame, ["AH2IFH762VY5U", "A3JPFWKS83R49V"], ["B00005N7P0", "B00005N7OJ"],
                 [1005177600, 1174694400], [5, 3])


def test_amazon_2023_csv_with_header_and_millisecond_timestamps(tmp_path):
    text = ("user_id,parent_asin,rating,timestamp\n"
            "AGKHLEW2SOWHNMFQIJGBECAF7INQ,B00HLMA6V0,5.0,1427846400000\n"
            "AFKZENTNBQ7A7V7UXW5JJI6UGRYQ,B07H3J8H5K,4.0,1534539577321\n")
    path = write(tmp_path / "Magazine_Subscriptions.csv.gz", gzip.compress(text.encode()))
    frame = read_interactions(path, "amazon-2023")
    assert_table(frame, ["AGKHLEW2SOWHNMFQIJGBECAF7INQ", "AFKZENTNBQ7A7V7UXW5JJI6UGRYQ"],
                 ["B00HLMA6V0", "B07H3J8H5K"], [1427846400.0, 1534539577.321], [5, 4])


def test_csv_quoted_field_with_comma_goes_through_the_slow_path(tmp_path):
    text = 'B1,"A,1",5.0,100\nB2,A2,4.0,200\n'
    frame = read_interactions(write(tmp_path / "m.csv", text), "amazon-2018")
    assert list(frame["user"]) == ["A,1", "A2"]


def test_windows_line_endings_and_blank_lines(tmp_path):
    text = "1\t2\t3\t4\r\n\r\n5\t6\t4\t8\r\n"
    frame = read_interactions(write(tmp_path / "u.data", text), "ml-100k")
    assert list(frame["item"]) == ["2", "6"] and frame["timestamp"].tolist() == [4.0, 8.0]


def test_all_advertised_formats_exist():
    assert {"atomic", "ml-100k", "ml-1m", "amazon-2018", "amazon-2023", "epinions"} <= set(FORMATS)


# ------------------------------------------------------------------------- bad files
def many_good_rows(n):
    return [(str(k % 7 + 1), str(k + 1), 3, 880000000 + k) for k in range(n)]


@pytest.mark.parametrize("bad_line, message", [
    ("1\t2\t3", r"u\.data:57: expected 4 TAB-separated fields, got 3"),
    ("1\t2\t3\t4\t5", r"u\.data:57: expected 4 TAB-separated fields, got 5"),
    ("1\t2\t3\t4\t", r"u\.data:57: expected 4 TAB-separated fields, got 5"),
    ("1\t2\t3\tyesterday", r"u\.data:57: timestamp 'yesterday' is not a number"),
    ("1\t2\tgood\t4", r"u\.data:57: rating 'good' is not a number"),
    ("1\t2\t3\tnan", r"u\.data:57: timestamp 'nan' is not a finite number"),
    ("\t2\t3\t4", r"u\.data:57: empty user id"),
    ("1\t\t3\t4", r"u\.data:57: empty item id"),
    # values the format cannot hold, named by file and line too
    ("-3\t2\t3\t4", r"u\.data:57: user id '-3' is not a positive integer"),
    ("1\tx7\t3\t4", r"u\.data:57: item id 'x7' is not a positive integer"),
    ("1\t2\t3\t-4", r"u\.data:57: timestamp -4.0 is negative"),
    ("1\t2\t9\t4", r"u\.data:57: rating 9.0 is outside 1..5"),
])
def test_malformed_row_names_file_and_line(tmp_path, bad_line, message):
    lines = u_data_text(many_good_rows(100)).splitlines()
    lines[56] = bad_line                                   # 1-based line 57
    path = write(tmp_path / "u.data", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        read_interactions(path, "ml-100k")


def test_a_binary_file_is_named_as_such_without_echoing_its_bytes(tmp_path):
    path = write(tmp_path / "ml-100k.inter", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(DataError) as info:
        read_interactions(path, "atomic")
    message = str(info.value)
    assert "not a text file (a NUL byte at offset 8)" in message and "\x00" not in message
    assert message.isprintable()


def test_malformed_row_line_number_counts_the_atomic_header(tmp_path):
    rows = "".join(f"{k}\t{k}\t1\t{k}\n" for k in range(1, 10))
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + rows + "10\t10\t1\n"
    with pytest.raises(DataError, match=r"ml-100k\.inter:11: expected 4 TAB-separated fields, got 3"):
        read_interactions(write(tmp_path / "ml-100k.inter", text), "atomic")


def test_atomic_row_missing_an_extra_column_is_caught(tmp_path):
    # pandas silently pads a short row when only a string column is missing.
    text = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\tprice:float\n"
            "1\t1\t1\t1\t1.0\n1\t2\t1\t2\n")
    with pytest.raises(DataError, match=r"epinions\.inter:3: expected 5 TAB-separated fields, got 4"):
        read_interactions(write(tmp_path / "epinions.inter", text), "epinions")


def test_malformed_row_in_gzip_ml1m(tmp_path):
    text = ratings_dat_text(many_good_rows(20)) + "3::4::5\n"
    path = write(tmp_path / "ratings.dat.gz", gzip.compress(text.encode()))
    with pytest.raises(DataError, match=r"ratings\.dat\.gz:21: expected 4 '::'-separated fields, got 3"):
        read_interactions(path, "ml-1m")


def test_malformed_row_inside_zip_names_the_member(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.data", u_data_text() + "1\t2\tthree\t4\n")
    with pytest.raises(DataError, match=r"ml-100k\.zip:ml-100k/u\.data:5: rating 'three'"):
        read_interactions(archive, "ml-100k")


def test_amazon_csv_bad_rating(tmp_path):
    text = "B1,A1,5.0,100\nB2,A2,five,200\n"
    with pytest.raises(DataError, match=r"m\.csv:2: rating 'five' is not a number"):
        read_interactions(write(tmp_path / "m.csv", text), "amazon-2018")


@pytest.mark.parametrize("content", ["", "\n\n"], ids=["empty", "blank"])
def test_empty_file(tmp_path, content):
    with pytest.raises(DataError, match=r"u\.data: no interactions \(empty file\)"):
        read_interactions(write(tmp_path / "u.data", content), "ml-100k")


def test_header_only_atomic_file_is_empty(tmp_path):
    text = "user_id:token\titem_id:token\ttimestamp:float\n"
    with pytest.raises(DataError, match=r"no interactions \(empty file\)"):
        read_interactions(write(tmp_path / "x.inter", text), "atomic")


def test_atomic_header_without_timestamp(tmp_path):
    text = "user_id:token\titem_id:token\trating:float\n1\t2\t3\n"
    with pytest.raises(DataError, match=r"x\.inter:1: header lacks required field\(s\) timestamp"):
        read_interactions(write(tmp_path / "x.inter", text), "atomic")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match=r"nope\.data: file not found"):
        read_interactions(tmp_path / "nope.data", "ml-100k")
    with pytest.raises(DataError, match=r"unknown file format 'parquet'; known formats: atomic"):
        read_interactions(write(tmp_path / "u.data", u_data_text()), "parquet")
