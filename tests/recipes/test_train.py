import pytest
import torch

import edgerec.recipes.train as train_mod
from edgerec.checkpoint import load_checkpoint
from edgerec.config import ConfigError
from edgerec.eval import Evaluator
from edgerec.models.loading import load_model
from edgerec.recipes.train import TeacherRunConfig, TrainConfig, position_scale, scheduled_lr, train_teacher
from tests.conftest import tiny_data_config, tiny_model_config


def run_config(epochs=4, **train):
    params = dict(epochs=epochs, batch_size=32, lr=3e-3, patience=50)
    params.update(train)
    return TeacherRunConfig(data=tiny_data_config(), model=tiny_model_config(), train=TrainConfig(**params))


@pytest.mark.slow
@pytest.mark.parametrize("loss, margin", [("ce", 1.5), ("bce", 1.2)])  # one sampled negative learns slower
def test_loss_falls_and_model_beats_popularity(tmp_path, tiny_dataset, loss, margin):
    cfg = run_config(epochs=12, loss=loss)
    res = train_teacher(cfg, tmp_path / loss, progress=False, dataset=tiny_dataset)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.9 * losses[0]
    counts = torch.tensor(tiny_dataset.item_counts[1:], dtype=torch.float32)
    pop = Evaluator(tiny_dataset, tiny_dataset.test, cfg.model.max_len)(lambda b: counts.expand(b.shape[0], -1))
    assert res["test"]["full"]["all"]["NDCG@10"] > margin * pop["full"]["all"]["NDCG@10"]
    # the saved model reproduces the reported test metrics
    model, payload = load_model(tmp_path / loss / "model.pt")
    again = Evaluator(tiny_dataset, tiny_dataset.test, cfg.model.max_len)(model.predict)
    assert again["full"]["all"] == pytest.approx(res["test"]["full"]["all"])
    assert payload["item_ids"] == tiny_dataset.item_ids
    assert payload["config"]["train"]["loss"] == loss


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, tiny_dataset, monkeypatch, schedule):
    def run_config_(**kw):
        return run_config(lr_schedule=schedule, min_lr_ratio=0.1, **kw)

    straight = train_teacher(run_config_(), tmp_path / "a", progress=False, dataset=tiny_dataset)

    real_loss = train_mod.next_item_loss
    calls = {"n": 0}

    def crashing_loss(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2 * 10 + 3:  # in the third epoch (10 batches per epoch)
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    monkeypatch.setattr(train_mod, "next_item_loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(run_config_(), tmp_path / "b", progress=False, dataset=tiny_dataset)
    monkeypatch.setattr(train_mod, "next_item_loss", real_loss)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["training"]["state"]["epoch"] == 2
    assert not (tmp_path / "b" / "model.pt").exists()

    with pytest.raises(ConfigError, match="pass resume=True"):
        train_teacher(run_config_(), tmp_path / "b", progress=False, dataset=tiny_dataset)
    resumed = train_teacher(run_config_(), tmp_path / "b", resume=True, progress=False, dataset=tiny_dataset)

    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    elapsed = [h["elapsed_s"] for h in resumed["history"]]
    assert elapsed == sorted(elapsed), f"elapsed time must accumulate across the resume: {elapsed}"
    a = load_checkpoint(tmp_path / "a" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "model.pt")["state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert resumed["test"]["full"]["all"] == straight["test"]["full"]["all"]
    lrs = [h["lr"] for h in straight["history"]]  # the last step's rate of each epoch
    assert lrs == [h["lr"] for h in resumed["history"]]
    if schedule == "constant":
        assert lrs == [3e-3] * 4
    else:  # falls every epoch, to lr * min_lr_ratio at the last step
        assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(3e-4)


def test_resume_refuses_a_changed_config(tmp_path, tiny_dataset):
    train_teacher(run_config(epochs=1), tmp_path, progress=False, dataset=tiny_dataset)
    # more epochs is fine; a different learning rate is not
    train_teacher(run_config(epochs=2), tmp_path, resume=True, progress=False, dataset=tiny_dataset)
    changed = run_config(epochs=3)
    changed.train.lr = 1e-2
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.003 -> 0\.01"):
        train_teacher(changed, tmp_path, resume=True, progress=False, dataset=tiny_dataset)


def test_early_stopping_selects_on_validation(tmp_path, tiny_dataset):
    cfg = run_config(epochs=30, patience=2)
    cfg.train.lr = 0.05  # overshoots quickly, so validation stops improving
    res = train_teacher(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    values = [h["valid_NDCG@10"] for h in res["history"]]
    assert res["epochs_run"] < 30
    assert res["best_epoch"] == 1 + max(range(len(values)), key=values.__getitem__)
    assert res["valid"]["full"]["all"]["NDCG@10"] == pytest.approx(max(values))


def test_selection_on_the_sampled_protocol(tmp_path, tiny_dataset):
    cfg = run_config(epochs=4, metric="sampled_HR@10")
    res = train_teacher(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    values = [h["valid_sampled_HR@10"] for h in res["history"]]
    assert res["best_epoch"] == 1 + max(range(len(values)), key=values.__getitem__)
    assert res["valid"]["sampled"]["all"]["HR@10"] == pytest.approx(max(values))
    with pytest.raises(ValueError, match="train.metric: must be one of .*got 'sampled_AUC'"):
        TrainConfig(metric="sampled_AUC")


def test_uniform_position_weight_gives_every_position_the_same_weight():
    short = torch.tensor([[0, 0, 3], [0, 4, 5]])  # 3 positions
    long = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # 9 positions
    mean = (3 + 9) / 2
    assert position_scale(short, mean, "batch") == position_scale(long, mean, "batch") == 1.0
    # a batch's mean loss times its factor is its positions' summed loss over the mean per batch
    per_position = [position_scale(t, mean, "uniform") / int((t != 0).sum()) for t in (short, long)]
    assert per_position == pytest.approx([1 / mean, 1 / mean])
    with pytest.raises(ConfigError, match="train.position_weight"):
        TrainConfig(position_weight="sqrt")


def test_cosine_schedule_by_hand():
    expected = [1.0, 0.2 + 0.4 * (1 + 2**-0.5), 0.6, 0.2 + 0.4 * (1 - 2**-0.5), 0.2]
    one_epoch = TrainConfig(lr=1.0, lr_schedule="cosine", min_lr_ratio=0.2, epochs=1)
    assert [scheduled_lr(one_epoch, 0, i, 5) for i in range(5)] == pytest.approx(expected)
    five_epochs = TrainConfig(lr=1.0, lr_schedule="cosine", min_lr_ratio=0.2, epochs=5)
    assert [scheduled_lr(five_epochs, e, 0, 1) for e in range(5)] == pytest.approx(expected)
    assert scheduled_lr(one_epoch, 1, 4, 5) == pytest.approx(0.2)  # past the end: stays at the floor
    assert scheduled_lr(TrainConfig(lr=0.5), 3, 0, 5) == 0.5
    with pytest.raises(ConfigError, match="train.lr_schedule: must be 'constant' or 'cosine', got 'step'"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match=r"train.min_lr_ratio: must be in \[0, 1\], got 1.5"):
        TrainConfig(min_lr_ratio=1.5)
