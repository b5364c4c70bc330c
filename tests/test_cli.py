import json

import pytest

from edgerec.cli import main


def test_train_then_evaluate_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    overrides = [
        "data.synthetic.num_users=150", "data.synthetic.num_items=80", "data.synthetic.num_clusters=4",
        "model.dim=16", "model.blocks=1", "model.max_len=10", "train.epochs=2", "eval.negatives=20",
    ]
    assert main(["-q", "train", "--out", str(out), "--no-progress", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "NDCG@10" in printed and str(out / "model.pt") in printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["dim"] == 16 and saved["train"]["epochs"] == 2

    assert main(["-q", "evaluate", "--checkpoint", str(out / "model.pt"), "--split", "valid",
                 "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    reported = json.loads((out / "results.json").read_text())["valid"]
    assert result["full"]["all"]["NDCG@10"] == pytest.approx(reported["full"]["all"]["NDCG@10"])

    student = tmp_path / "student"
    # a dry run prints the plan and trains nothing
    assert main(["-q", "compress", "--teacher", str(out / "model.pt"), "--ratio", "3", "--out", str(student),
                 "--dry-run", "compress.linear_rank=2"]) == 0
    printed = capsys.readouterr().out
    assert "fewer than the teacher" in printed and "ranks (2,), t=2" in printed and not student.exists()
    assert main(["-q", "compress", "--teacher", str(out / "model.pt"), "--ratio", "3", "--out", str(student),
                 "--no-progress", "train.epochs=1"]) == 0
    printed = capsys.readouterr().out
    assert "student (stp, " in printed and "teacher" in printed
    assert main(["-q", "evaluate", "--checkpoint", str(student / "model.pt")]) == 0
    assert "student" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "model.dimension=3"], "unknown config key 'model.dimension'"),
        (["train", "train.lr=-1"], "train.lr: must be > 0"),
        (["train", "--data", "/nonexistent/file.txt"], "/nonexistent/file.txt: file not found"),
        (["evaluate", "--checkpoint", "/nonexistent.pt"], "/nonexistent.pt: checkpoint not found"),
        (["compress", "--teacher", "/nonexistent.pt"], "/nonexistent.pt: checkpoint not found"),
        (["compress", "--teacher", "/nonexistent.pt", "compress.t=0"], "compress.t: must be >= 1"),
    ],
)
def test_bad_input_exits_with_a_clear_error(tmp_path, capsys, argv, message):
    if argv[0] == "train":
        argv = [argv[0], "--out", str(tmp_path / "r"), *argv[1:]]
    assert main(["-q", *argv]) == 2
    assert message in capsys.readouterr().err
