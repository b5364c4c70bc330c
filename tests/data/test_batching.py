import numpy as np
import torch

from edgerec.data import TrainBatches, pad_left


def test_pad_left_truncates_to_most_recent():
    out = pad_left([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int64)], 3)
    assert out.tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]


def test_train_batches_shift_targets_and_cover_every_sequence():
    seqs = [np.arange(1, n + 1) for n in (2, 5, 9, 3, 1)]
    tb = TrainBatches(seqs, max_len=4, batch_size=2, seed=0)
    assert len(tb) == 2  # the length-1 sequence has no target
    seen = []
    for inp, tgt in tb.epoch(0):
        assert inp.shape == tgt.shape and inp.dtype == torch.int64
        for row_in, row_tgt in zip(inp.tolist(), tgt.tolist()):
            valid = [(a, b) for a, b in zip(row_in, row_tgt) if a]
            assert all(b == a + 1 for a, b in valid)  # target = next item
            assert all(b == 0 for a, b in zip(row_in, row_tgt) if not a)
            seen.append(max(b for _, b in valid))
    assert sorted(seen) == [2, 3, 5, 9]  # the last item of every usable sequence is a target
    # long sequences keep their most recent window: 9 items -> inputs 5..8
    assert tb.inputs[2].tolist() == [5, 6, 7, 8]


def test_epoch_order_is_seeded():
    seqs = [np.arange(1, 4 + i % 5) for i in range(50)]
    tb = TrainBatches(seqs, max_len=6, batch_size=8, seed=1)
    first = [b[0].tolist() for b in tb.epoch(3)]
    assert first == [b[0].tolist() for b in tb.epoch(3)]
    assert first != [b[0].tolist() for b in tb.epoch(4)]


def test_bucketing_groups_lengths_and_random_batches_mix_them():
    lengths = [2 + i % 20 for i in range(400)]  # 1..20 targets each
    seqs = [np.arange(1, n + 1) for n in lengths]

    def batch_lengths(bucket):
        tb = TrainBatches(seqs, max_len=25, batch_size=20, seed=0, bucket=bucket)
        out = [(tgt != 0).sum(1).tolist() for _, tgt in tb.epoch(0)]
        assert sorted(n for b in out for n in b) == sorted(n - 1 for n in lengths)  # every sequence once
        return out

    spread = lambda batches: np.mean([max(b) - min(b) for b in batches])  # noqa: E731
    # 20 sequences per batch over 20 lengths: sorted chunks give near-uniform batches, random
    # ones span almost the whole range
    assert spread(batch_lengths(True)) <= 2
    assert spread(batch_lengths(False)) >= 15
