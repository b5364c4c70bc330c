"""Loaders for every supported format, format detection and bad input."""

from pathlib import Path

import numpy as np
import pytest

from edgerec.data import DataConfig, DataFormatError, detect_format, load_dataset


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path: Path, **kw):
    return load_dataset(DataConfig(source=str(path), **kw))


def test_pairs_format_keeps_file_order_and_remaps(tmp_path):
    path = write(tmp_path, "pairs.txt", "7 100\n7 200\n9 300\n7 300\n9 100\n9 200\n7 400\n")
    assert detect_format(path) == "pairs"
    ds = load(path)
    # items mapped by first appearance: 100->1, 200->2, 300->3, 400->4; 0 is padding
    assert ds.item_ids == ["<pad>", "100", "200", "300", "400"]
    assert ds.user_ids == ["7", "9"]
    # user 7: 100 200 300 400 -> train [1, 2], valid target 3, test target 4
    np.testing.assert_array_equal(ds.train[0], [1, 2])
    assert ds.valid.targets.tolist() == [3, 1]
    assert ds.test.targets.tolist() == [4, 2]
    np.testing.assert_array_equal(ds.test.histories[0], [1, 2, 3])
    np.testing.assert_array_equal(ds.valid.histories[1], [3])
    assert ds.item_counts.tolist() == [0, 1, 1, 1, 0]


def test_lines_format(tmp_path):
    path = write(tmp_path, "lines.txt", "1 5 6 7 8\n2 6 5 9\n")
    assert detect_format(path) == "lines"
    ds = load(path)
    assert ds.num_items == 5
    assert [t.tolist() for t in ds.train] == [[1, 2], [2]]


def test_movielens_sorts_by_timestamp_and_filters_ratings(tmp_path):
    path = write(tmp_path, "ratings.dat", "1::10::5::300\n1::11::2::100\n1::12::4::200\n1::13::5::400\n1::14::5::150\n")
    assert detect_format(path) == "movielens"
    ds = load(path)
    # chronological: 11(100) 14(150) 12(200) 10(300) 13(400)
    assert [ds.item_ids[i] for i in ds.test.histories[0]] + [ds.item_ids[ds.test.targets[0]]] == [
        "11", "14", "12", "10", "13"]
    ds = load(path, min_rating=4)
    assert [ds.item_ids[i] for i in ds.test.histories[0]] == ["14", "12", "10"]


def test_csv_with_header_aliases(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,timestamp,item_id\n3,20,8\n3,10,9\n3,30,7\n")
    assert detect_format(path) == "csv"
    ds = load(path)
    assert [ds.item_ids[i] for i in ds.train[0]] == ["9"]
    assert ds.item_ids[ds.test.targets[0]] == "7"


def test_sessions_directory(tmp_path):
    d = tmp_path / "sess"
    d.mkdir()
    (d / "train_sessions.txt").write_text("1 2 3\n2 3\n4 5 1 2\n3 4\n5 1\n1 4\n2 5\n3 1\n4 2\n5 3\n")
    (d / "test.tsv").write_text("3\t1 2\n9\t4\n")
    assert detect_format(d) == "sessions"
    ds = load(d, valid_fraction=0.2)
    assert ds.kind == "sessions"
    assert len(ds.test) == 2 and ds.num_items == 6  # item 9 only occurs in the test file
    assert ds.item_ids[ds.test.targets[0]] == "3"
    np.testing.assert_array_equal([ds.item_ids[i] for i in ds.test.histories[0]], ["1", "2"])
    # two held-out sessions: their prefixes become validation samples; the rest train
    assert len(ds.train) == 8
    # 23 items in 10 sessions; a held-out session of length n gives n - 1 validation samples
    assert sum(len(s) for s in ds.train) + len(ds.valid) + 2 == 23


@pytest.mark.parametrize(
    "name, text, fmt, pattern",
    [
        ("p.txt", "1 2\n1 3\n1 x4\n", "pairs", r"p\.txt:3: item 'x4' is not an integer id"),
        ("p.txt", "1 2\n1 3 4 5\n", "pairs", r"p\.txt:2: expected 2 fields"),
        ("l.txt", "1 2 3 4\nu2 3 4 5\n", "lines", r"l\.txt:2: user 'u2' is not an integer id"),
        ("l.txt", "1 2 3 4\n1 3 4 5\n", "lines", r"l\.txt:2: user 1 already appeared on line 1"),
        ("r.dat", "1::2::5::9\n1::3::5\n", "movielens", r"r\.dat:2: expected 4 fields"),
        ("r.dat", "1::2::five::9\n", "movielens", r"r\.dat:1: rating and timestamp must be numbers"),
        ("c.csv", "user,item,time\n1,2,3\n1,2\n", "csv", r"c\.csv:3: expected 3 columns"),
        ("c.csv", "user,thing,time\n1,2,3\n", "csv", r"c\.csv:1: header .* has no item column"),
        ("e.txt", "\n\n  \n", "pairs", r"e\.txt: file is empty"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, name, text, fmt, pattern):
    path = write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=pattern):
        load(path, format=fmt)


def test_missing_file_and_bad_session_lines(tmp_path):
    with pytest.raises(DataFormatError, match="file not found"):
        load(tmp_path / "nope.txt")
    d = tmp_path / "s"
    d.mkdir()
    (d / "train_sessions.txt").write_text("1 2 3\n")
    (d / "test.tsv").write_text("3\t1 2\n4 1 2\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: expected 'next_item<TAB>prefix items', found no tab"):
        load(d)
    (d / "test.tsv").write_text("3\t\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:1: empty prefix"):
        load(d)


def test_too_short_history_errors_with_line_or_drops_with_count(tmp_path, caplog):
    path = write(tmp_path, "p.txt", "1 10\n1 11\n1 12\n2 10\n2 11\n3 12\n3 10\n3 11\n")
    with pytest.raises(DataFormatError, match=r"p\.txt:4: user 2 has 2 interaction\(s\); leave-one-out needs at least 3"):
        load(path)
    with caplog.at_level("WARNING"):
        ds = load(path, short_users="drop")
    assert ds.user_ids == ["1", "3"]
    assert "dropped 1 users with fewer than 3 interactions" in caplog.text


def test_short_training_session_is_named(tmp_path, caplog):
    d = tmp_path / "s"
    d.mkdir()
    (d / "train_sessions.txt").write_text("1 2 3\n4\n2 3\n3 1\n")
    (d / "test.tsv").write_text("3\t1 2\n")
    with pytest.raises(DataFormatError, match=r"train_sessions\.txt:2: training session has fewer than 2 items"):
        load(d)
    with caplog.at_level("WARNING"):
        ds = load(d, short_users="drop", valid_fraction=0.3)
    assert "dropped 1 training sessions with fewer than 2 items" in caplog.text
    assert len(ds.train) + 1 == 3


def test_kcore_filters_iteratively(tmp_path, caplog):
    # item 99 occurs once; dropping it leaves user 3 with 2 items, so user 3 goes too
    lines = ["1 10 11 12", "2 10 11 12", "3 10 99 12", "4 11 12 10"]
    path = write(tmp_path, "l.txt", "\n".join(lines) + "\n")
    with caplog.at_level("INFO"):
        ds = load(path, kcore=3)
    assert ds.user_ids == ["1", "2", "4"]
    assert "99" not in ds.item_ids
    assert "3-core filter" in caplog.text
