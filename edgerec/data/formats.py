"""Parsers for the common sequential-recommendation file formats.

Each parser reads raw ids (integers, as written in the file) and keeps, for every
interaction, the line it came from so later checks can point at the exact place in
the file. Nothing here remaps ids; :mod:`edgerec.data.dataset` does that.

Formats
-------
``pairs``      one ``user item`` pair per line, chronological per user (SASRec files).
``lines``      one user per line: ``user item item ...`` in chronological order.
``movielens``  ``user::item::rating::timestamp`` (MovieLens ``ratings.dat``).
``csv``        a CSV file with a header naming user, item and timestamp columns.
``sessions``   a directory (or file pair) of anonymous sessions: one training session per
               line, plus a test file of ``next_item<TAB>prefix items`` lines.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

logger = logging.getLogger(__name__)

Format = Literal["auto", "pairs", "lines", "movielens", "csv", "sessions"]
FORMATS: tuple[str, ...] = ("pairs", "lines", "movielens", "csv", "sessions")

SESSION_TRAIN_NAMES = ("train_sessions.txt", "train.txt")
SESSION_TEST_NAMES = ("test.tsv", "test.txt")

CSV_COLUMNS = {
    "user": ("user", "user_id", "userid", "uid"),
    "item": ("item", "item_id", "itemid", "iid", "movieid", "movie_id"),
    "timestamp": ("timestamp", "time", "ts", "datetime"),
    "rating": ("rating", "score"),
}


class DataFormatError(ValueError):
    """Malformed input. The message starts with ``file:line`` where a line is at fault."""


@dataclass
class UserLog:
    """Chronological interactions of one user: raw item ids and source line numbers."""

    user: int
    items: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


@dataclass
class SessionData:
    """Raw session data: training sessions and ``(prefix, next_item)`` test samples."""

    train_path: Path
    test_path: Path
    train: list[list[int]]
    train_lines: list[int]
    test_prefixes: list[list[int]]
    test_targets: list[int]
    test_lines: list[int]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text without the line break)`` for non-blank lines; error on an empty file."""
    if not path.exists():
        raise DataFormatError(f"{path}: file not found")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a directory, expected a file")
    seen = False
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        try:
            for number, raw in enumerate(fh, start=1):
                text = raw.rstrip("\r\n")
                if text.strip():
                    seen = True
                    yield number, text
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not seen:
        raise DataFormatError(f"{path}: file is empty (no non-blank lines)")


def _int_id(token: str, path: Path, number: int, what: str, text: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataFormatError(
            f"{path}:{number}: {what} {token!r} is not an integer id (line: {text[:80]!r})"
        ) from None


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its name and first lines.

    A directory is a session dataset; ``*.csv`` is CSV; ``::`` separators mean MovieLens;
    a file whose lines all hold exactly two tokens is ``pairs``, otherwise ``lines``.
    """
    path = Path(path)
    if path.is_dir():
        return "sessions"
    if not path.exists():
        raise DataFormatError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        return "csv"
    widths: set[int] = set()
    for count, (_, text) in enumerate(_lines(path)):
        if "::" in text:
            return "movielens"
        widths.add(len(text.split()))
        if count >= 2000 and len(widths) > 1:
            break
    if widths == {2}:
        return "pairs"
    return "lines"


def read_pairs(path: Path) -> list[UserLog]:
    """``user item`` per line; order of lines is the chronological order per user."""
    logs: dict[int, UserLog] = {}
    for number, text in _lines(path):
        tokens = text.split()
        if len(tokens) != 2:
            raise DataFormatError(
                f"{path}:{number}: expected 2 fields 'user item', got {len(tokens)} (line: {text[:80]!r})"
            )
        user = _int_id(tokens[0], path, number, "user", text)
        item = _int_id(tokens[1], path, number, "item", text)
        log = logs.setdefault(user, UserLog(user))
        log.items.append(item)
        log.lines.append(number)
    return list(logs.values())


def read_lines(path: Path) -> list[UserLog]:
    """``user item item ...`` per line."""
    logs: dict[int, UserLog] = {}
    for number, text in _lines(path):
        tokens = text.split()
        user = _int_id(tokens[0], path, number, "user", text)
        if user in logs:
            raise DataFormatError(
                f"{path}:{number}: user {user} already appeared on line {logs[user].lines[0]}; "
                "this format expects one line per user"
            )
        items = [_int_id(t, path, number, "item", text) for t in tokens[1:]]
        logs[user] = UserLog(user, items, [number] * len(items))
    return list(logs.values())


def _sort_by_time(rows: dict[int, list[tuple[float, int, int]]]) -> list[UserLog]:
    out = []
    for user, events in rows.items():
        events.sort(key=lambda e: (e[0], e[2]))  # timestamp, then file order
        out.append(UserLog(user, [e[1] for e in events], [e[2] for e in events]))
    return out


def read_movielens(path: Path, min_rating: float | None = None) -> list[UserLog]:
    """MovieLens ``user::item::rating::timestamp``; sorted by timestamp per user."""
    rows: dict[int, list[tuple[float, int, int]]] = {}
    dropped = 0
    for number, text in _lines(path):
        fields = text.split("::")
        if len(fields) != 4:
            raise DataFormatError(
                f"{path}:{number}: expected 4 fields 'user::item::rating::timestamp', got {len(fields)} "
                f"(line: {text[:80]!r})"
            )
        user = _int_id(fields[0], path, number, "user", text)
        item = _int_id(fields[1], path, number, "item", text)
        try:
            rating = float(fields[2])
            stamp = float(fields[3])
        except ValueError:
            raise DataFormatError(f"{path}:{number}: rating and timestamp must be numbers (line: {text[:80]!r})") from None
        if min_rating is not None and rating < min_rating:
            dropped += 1
            continue
        rows.setdefault(user, []).append((stamp, item, number))
    if dropped:
        logger.info("%s: dropped %d interactions with rating < %s", path, dropped, min_rating)
    return _sort_by_time(rows)


def _csv_column(header: list[str], role: str, path: Path, required: bool) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for alias in CSV_COLUMNS[role]:
        if alias in lowered:
            return lowered.index(alias)
    if required:
        raise DataFormatError(
            f"{path}:1: header {header} has no {role} column (accepted names: {list(CSV_COLUMNS[role])})"
        )
    return None


def read_csv(path: Path, min_rating: float | None = None) -> list[UserLog]:
    """CSV with a header naming user, item and timestamp columns (rating optional)."""
    if not path.exists():
        raise DataFormatError(f"{path}: file not found")
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise DataFormatError(f"{path}: file is empty (expected a header line)")
        cu = _csv_column(header, "user", path, True)
        ci = _csv_column(header, "item", path, True)
        ct = _csv_column(header, "timestamp", path, True)
        cr = _csv_column(header, "rating", path, min_rating is not None)
        rows: dict[int, list[tuple[float, int, int]]] = {}
        dropped = 0
        for row in reader:
            number = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            text = ",".join(row)
            if len(row) != len(header):
                raise DataFormatError(
                    f"{path}:{number}: expected {len(header)} columns as in the header, got {len(row)} "
                    f"(line: {text[:80]!r})"
                )
            user = _int_id(row[cu].strip(), path, number, "user", text)
            item = _int_id(row[ci].strip(), path, number, "item", text)
            try:
                stamp = float(row[ct])
            except ValueError:
                raise DataFormatError(f"{path}:{number}: timestamp {row[ct]!r} is not a number") from None
            if cr is not None and min_rating is not None:
                try:
                    rating = float(row[cr])
                except ValueError:
                    raise DataFormatError(f"{path}:{number}: rating {row[cr]!r} is not a number") from None
                if rating < min_rating:
                    dropped += 1
                    continue
            rows.setdefault(user, []).append((stamp, item, number))
    if not rows:
        raise DataFormatError(f"{path}: no interactions after the header")
    if dropped:
        logger.info("%s: dropped %d interactions with rating < %s", path, dropped, min_rating)
    return _sort_by_time(rows)


def session_paths(path: Path, test_path: str | Path | None) -> tuple[Path, Path]:
    """Resolve the training-session file and the test file of a session dataset."""
    if path.is_dir():
        train = next((path / n for n in SESSION_TRAIN_NAMES if (path / n).exists()), None)
        if train is None:
            raise DataFormatError(f"{path}: session directory has none of {list(SESSION_TRAIN_NAMES)}")
        if test_path is None:
            test = next((path / n for n in SESSION_TEST_NAMES if (path / n).exists()), None)
            if test is None:
                raise DataFormatError(f"{path}: session directory has none of {list(SESSION_TEST_NAMES)}")
            return train, test
        return train, Path(test_path)
    if test_path is None:
        raise DataFormatError(f"{path}: a session training file needs data.test_path (the next_item<TAB>prefix file)")
    return path, Path(test_path)


def read_sessions(path: Path, test_path: str | Path | None = None) -> SessionData:
    """Training sessions (``item item ...`` per line) and test samples (``next<TAB>prefix``)."""
    train_path, test_file = session_paths(path, test_path)
    train, train_lines = [], []
    for number, text in _lines(train_path):
        train.append([_int_id(t, train_path, number, "item", text) for t in text.split()])
        train_lines.append(number)
    prefixes, targets, test_lines = [], [], []
    for number, text in _lines(test_file):
        if "\t" not in text:
            raise DataFormatError(
                f"{test_file}:{number}: expected 'next_item<TAB>prefix items', found no tab (line: {text[:80]!r})"
            )
        head, tail = text.split("\t", 1)
        target = _int_id(head.strip(), test_file, number, "next item", text)
        prefix = [_int_id(t, test_file, number, "prefix item", text) for t in tail.split()]
        if not prefix:
            raise DataFormatError(f"{test_file}:{number}: empty prefix; a test sample needs at least one item")
        prefixes.append(prefix)
        targets.append(target)
        test_lines.append(number)
    return SessionData(train_path, test_file, train, train_lines, prefixes, targets, test_lines)


def read_user_logs(path: Path, fmt: str, min_rating: float | None = None) -> list[UserLog]:
    """Dispatch to the reader of a user-based format."""
    if fmt == "pairs":
        return read_pairs(path)
    if fmt == "lines":
        return read_lines(path)
    if fmt == "movielens":
        return read_movielens(path, min_rating)
    if fmt == "csv":
        return read_csv(path, min_rating)
    raise DataFormatError(f"{path}: {fmt!r} is not a user-based format (expected one of pairs, lines, movielens, csv)")
