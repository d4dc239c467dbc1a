import numpy as np
import torch

from eg_grpo.sid.rqkmeans import fit_residual_kmeans, kmeans, nearest, residual_quantize


def _blobs(n_per=50, centers=((0, 0), (10, 0), (0, 10), (10, 10)), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat(
        [torch.tensor(c, dtype=torch.float32) + 0.3 * torch.randn(n_per, 2, generator=g) for c in centers]
    )
    return x, torch.arange(len(centers)).repeat_interleave(n_per)


def test_kmeans_recovers_separated_blobs():
    x, label = _blobs()
    c = kmeans(x, 4, seed=1)
    assign, _ = nearest(x, c)
    # one centroid per blob: the assignment is a relabelling of the truth
    for b in range(4):
        assert len(torch.unique(assign[label == b])) == 1
    assert len(torch.unique(assign)) == 4


def test_kmeans_with_fewer_points_than_codes():
    c = kmeans(torch.randn(3, 5), 8)
    assert c.shape == (8, 5) and torch.isfinite(c).all()


def test_nearest_respects_per_row_code_range():
    cb = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    x = torch.tensor([[0.1], [0.1], [2.9]])
    codes, _ = nearest(x, cb, torch.tensor([0, 2, 0]), torch.tensor([4, 4, 2]))
    assert codes.tolist() == [0, 2, 1]


def test_residual_quantize_sums_codewords_and_reduces_error():
    x, _ = _blobs()
    cbs = fit_residual_kmeans(x, levels=3, k=4, seed=0)
    codes, q = residual_quantize(x, cbs)
    assert codes.shape == (len(x), 3)
    manual = sum(cb[codes[:, i]] for i, cb in enumerate(cbs))
    torch.testing.assert_close(q, manual)
    _, q1 = residual_quantize(x, cbs[:1])
    assert ((x - q) ** 2).sum() < ((x - q1) ** 2).sum()


def test_category_slices_in_level_one():
    x, label = _blobs()
    groups = np.array(["a", "a", "b", "b"])[label.numpy()]  # blobs 0,1 -> a ; 2,3 -> b
    slices = {"a": (0, 1), "b": (1, 4)}
    cbs = fit_residual_kmeans(x, 2, 4, l1_groups=groups, l1_slices=slices)
    lo = torch.tensor([slices[g][0] for g in groups])
    hi = torch.tensor([slices[g][1] for g in groups])
    codes, _ = residual_quantize(x, cbs, lo, hi)
    assert set(codes[groups == "a", 0].tolist()) == {0}
    assert set(codes[groups == "b", 0].tolist()) <= {1, 2, 3}
