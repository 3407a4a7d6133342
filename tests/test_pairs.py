import numpy as np
import pytest

from reid.data.pairs import sample_pairs


def make():
    pids = [1, 1, 1, 2, 2, 3, 3, 3, 4]  # pid 4 has a single image
    cams = [1, 2, 1, 1, 1, 2, 3, 3, 1]
    return np.array(pids), np.array(cams)


def test_pairs_half_positive_each_anchor_once_and_correct_labels():
    pids, cams = make()
    pairs = sample_pairs(pids, cams, seed=0, epoch=0)
    assert sorted(pairs[:, 0]) == list(range(len(pids)))
    for a, b, same in pairs:
        assert a != b
        assert bool(same) == (pids[a] == pids[b])
    # even positions are positive unless the identity has one image
    for pos, (a, b, same) in enumerate(pairs):
        if pos % 2 == 0 and pids[a] != 4:
            assert same == 1


def test_positive_partner_prefers_another_camera():
    pids, cams = make()
    for epoch in range(20):
        for a, b, same in sample_pairs(pids, cams, 1, epoch):
            if same and pids[a] in (1, 3):
                assert cams[a] != cams[b]


def test_deterministic_by_seed_and_epoch_and_reshuffled():
    pids, cams = make()
    a = sample_pairs(pids, cams, 5, 3)
    assert np.array_equal(a, sample_pairs(pids, cams, 5, 3))
    assert not np.array_equal(a, sample_pairs(pids, cams, 5, 4))
    assert not np.array_equal(a, sample_pairs(pids, cams, 6, 3))


def test_needs_two_identities():
    with pytest.raises(ValueError):
        sample_pairs([1, 1], [1, 2], 0, 0)


def test_random_positive_pairs_ignore_the_camera():
    pids, cams = make()
    same_camera = 0
    for epoch in range(20):
        cross = sample_pairs(pids, cams, 1, epoch)
        anywhere = sample_pairs(pids, cams, 1, epoch, positive="random")
        # the same anchors (drawn first), the same positions positive: the partners' pool differs
        assert (cross[:, 0] == anywhere[:, 0]).all() and (cross[:, 2] == anywhere[:, 2]).all()
        for a, b, same in anywhere:
            assert a != b and bool(same) == (pids[a] == pids[b])
            same_camera += bool(same and cams[a] == cams[b])
    assert same_camera > 0  # "randomly chosen": a partner from the anchor's own camera happens
    with pytest.raises(ValueError, match="train.positive_pairs 'nearest' is unknown"):
        sample_pairs(pids, cams, 1, 0, positive="nearest")
