import numpy as np
import pytest

from eg_grpo.sid.split import apply_splits, sid_keys, split_oversized


def _two_blob_cluster(n=40, seed=0):
    rng = np.random.default_rng(seed)
    lat = np.concatenate([rng.normal(-5, 0.1, (n // 2, 3)), rng.normal(5, 0.1, (n // 2, 3))]).astype(
        np.float32
    )
    return lat


def test_split_bounds_size_keeps_blobs_and_level1():
    lat = _two_blob_cluster(40)
    codes = np.tile([2, 1, 0], (40, 1))
    codes = np.concatenate([codes, [[3, 0, 0], [3, 0, 1]]])  # two small untouched clusters
    lat = np.concatenate([lat, np.zeros((2, 3), np.float32)])
    new, splits = split_oversized(codes, lat, k=4, max_cluster_size=20)
    _, counts = np.unique(new, axis=0, return_counts=True)
    assert counts.max() <= 20
    assert (new[:, 0] == codes[:, 0]).all()  # level 1 never changes
    np.testing.assert_array_equal(new[40:], codes[40:])
    # each blob is one new SID (similar items together), and the two SIDs differ
    assert len(np.unique(new[:20], axis=0)) == 1 and len(np.unique(new[20:40], axis=0)) == 1
    assert not (new[0] == new[25]).all()
    assert tuple(new[0]) == (2, 1, 0) or tuple(new[25]) == (2, 1, 0)  # one part keeps the SID
    assert list(splits) == [int(sid_keys(np.array([[2, 1, 0]]), 4)[0])]


def test_split_uses_a_fresh_prefix_when_last_level_is_full():
    # prefix (0, 0) already uses both last-level codes; its oversized cluster must move up a level
    codes = np.array([[0, 0, 0]] * 6 + [[0, 0, 1]])
    lat = np.arange(7, dtype=np.float32)[:, None].repeat(2, 1)
    new, _ = split_oversized(codes, lat, k=2, max_cluster_size=3)
    assert np.unique(new, axis=0, return_counts=True)[1].max() <= 3
    assert (new[:, 0] == 0).all()
    assert {tuple(r) for r in new[:6]} - {(0, 0, 0)} <= {(0, 1, 0), (0, 1, 1)}


def test_split_takes_a_free_leaf_of_a_relative_when_its_own_branch_is_full():
    # k=2: under level-1 code 0 both level-2 codes are used and (0, 0) has no free last code, so the
    # oversized (0, 0, 0) must move to the free leaf (0, 1, 1) of its relative (0, 1).
    codes = np.array([[0, 0, 0]] * 2 + [[0, 0, 1], [0, 1, 0]])
    lat = np.arange(4, dtype=np.float32)[:, None].repeat(2, 1)
    new, _ = split_oversized(codes, lat, k=2, max_cluster_size=1)
    assert sorted(map(tuple, new.tolist())) == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)]


def test_split_fails_clearly_without_spare_codes():
    codes = np.array([[0, 0]] * 5 + [[0, 1]])
    with pytest.raises(ValueError, match="no spare SID left under level-1 code 0"):
        split_oversized(codes, np.random.default_rng(0).normal(size=(6, 2)), k=2, max_cluster_size=2)


def test_apply_splits_sends_new_points_to_nearest_part():
    lat = _two_blob_cluster(40)
    codes = np.tile([2, 1, 0], (40, 1))
    new, splits = split_oversized(codes, lat, k=4, max_cluster_size=20)
    probe = np.array([[-5, -5, -5], [5, 5, 5]], np.float32)
    got = apply_splits(np.tile([2, 1, 0], (2, 1)), probe, 4, splits)
    np.testing.assert_array_equal(got[0], new[0])
    np.testing.assert_array_equal(got[1], new[25])
    untouched = apply_splits(np.array([[1, 1, 1]]), probe[:1], 4, splits)
    assert untouched.tolist() == [[1, 1, 1]]
