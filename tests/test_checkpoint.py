import os

import pytest
import torch

from edgerec.checkpoint import CheckpointError, atomic_write_text, load_checkpoint, save_checkpoint


def test_round_trip_and_kind_check(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"kind": "teacher", "state_dict": {"w": torch.ones(2)}, "item_ids": ["<pad>", "7"]})
    payload = load_checkpoint(path, kind="teacher")
    assert payload["item_ids"] == ["<pad>", "7"] and torch.equal(payload["state_dict"]["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match="kind is 'teacher', expected one of \\['student'\\]"):
        load_checkpoint(path, kind="student")


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not an edgerec checkpoint"):
        load_checkpoint(other)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"kind": "x", "bad": Boom()})
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
