"""Residual quantisation primitives (k-means, nearest-code search) and the RQ-KMeans baseline.

RQ-KMeans quantises the (normalised) text vectors directly: level 1 is k-means on the vectors,
level 2 k-means on what level 1 left over, and so on. No network is trained. The same
:func:`kmeans` initialises the RQ-VAE codebooks and :func:`residual_quantize` is the one
nearest-code search used everywhere (training, building, assigning new items, queries), so a
SID is always computed the same way.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

logger = logging.getLogger(__name__)

_CHUNK = 32768  # rows per distance block: bounds memory at chunk x K floats


def _sq_dists(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``(n, k)`` between rows of ``x (n, d)`` and ``c (k, d)``."""
    c_sq = (c * c).sum(1) if c_sq is None else c_sq
    return (x * x).sum(1, keepdim=True) - 2.0 * x @ c.T + c_sq[None, :]


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding on ``x (n, d)``; returns ``(k, d)``."""
    n = x.shape[0]
    centers = [x[torch.randint(n, (1,), generator=gen).to(x.device)].squeeze(0)]
    d2 = _sq_dists(x, centers[0][None]).squeeze(1).clamp_min(0)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: pick any
            idx = torch.randint(n, (1,), generator=gen).to(x.device)
        else:
            idx = torch.multinomial((d2 / total).cpu(), 1, generator=gen).to(x.device)  # CPU generator
        centers.append(x[idx].squeeze(0))
        d2 = torch.minimum(d2, _sq_dists(x, x[idx]).squeeze(1).clamp_min(0))
    return torch.stack(centers)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, sample: int = 20000) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; empty clusters are re-seeded at the worst-fit points.

    Args:
        x: points ``(n, d)``.
        k: number of centroids. With ``n < k`` the extra centroids are copies of points plus tiny
            noise (they become dead codes that training may revive).
        iters: Lloyd iterations.
        seed: RNG seed (deterministic for a seed).
        sample: seeding uses at most this many random points (k-means++ is sequential in k).

    Returns:
        Centroids ``(k, d)`` on ``x``'s device.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = x.float()
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means on an empty set of points")
    if n <= k:
        extra = x[torch.randint(n, (k - n,), generator=gen).to(x.device)]
        noise = 1e-4 * torch.randn(extra.shape, generator=gen).to(x.device)
        return torch.cat([x, extra + noise])
    pick = torch.randperm(n, generator=gen)[: min(n, sample)].to(x.device)
    centers = _kmeans_pp(x[pick], k, gen)
    for _ in range(iters):
        assign, best = nearest(x, centers)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp_min(1)[:, None].float())
        if empty.any():  # re-seed at the points farthest from their centroid
            worst = torch.topk(best, int(empty.sum())).indices
            centers[empty] = x[worst]
    return centers


def _nearest_all(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # argmin_c ||x - c||^2 = argmin_c (||c||^2 / 2 - x.c): one fused matmul per block, no (n, k)
    # temporaries for ||x||^2 (that term is added back only to the winners).
    half_c_sq = 0.5 * (codebook * codebook).sum(1)
    codes = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], _CHUNK):
        block = x[s : s + _CHUNK]
        score = torch.addmm(half_c_sq[None, :], block, codebook.T, alpha=-1.0)  # (chunk, k)
        best, codes[s : s + _CHUNK] = score.min(1)
        dists[s : s + _CHUNK] = (2.0 * best + (block * block).sum(1)).clamp_min(0)
    return codes, dists


@torch.no_grad()
def nearest(
    x: torch.Tensor, codebook: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and squared distance of the nearest code for each row, optionally within ``[lo, hi)``.

    Args:
        x: ``(n, d)``.
        codebook: ``(k, d)``.
        lo, hi: per-row allowed code range ``(n,)`` (the category slice at level 1), or None.
            Rows sharing a range are searched together against that slice only, which is also
            cheaper than masking a full ``(n, k)`` distance table.

    Returns:
        ``(codes (n,) long, sq_dist (n,))``.
    """
    if lo is None:
        return _nearest_all(x, codebook)
    codes = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    width = int(hi.max()) + 1
    keys, which = torch.unique(lo * width + hi, return_inverse=True)  # one key per (lo, hi) range
    order = torch.argsort(which, stable=True)
    bounds = torch.cumsum(torch.bincount(which, minlength=len(keys)), 0).tolist()
    start = 0
    for key, end in zip(keys.tolist(), bounds):
        r_lo, r_hi = divmod(key, width)
        rows = order[start:end]
        c, d = _nearest_all(x[rows], codebook[r_lo:r_hi])
        codes[rows], dists[rows] = c + r_lo, d
        start = end
    return codes, dists


def residual_quantize(
    z: torch.Tensor,
    codebooks: list[torch.Tensor],
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual quantisation: level l picks the code nearest to what levels < l left over.

    Args:
        z: latents ``(n, d)``.
        codebooks: one ``(k_l, d)`` tensor per level.
        lo, hi: allowed level-1 code range per row ``(n,)`` (category guidance), or None for all codes.

    Returns:
        ``(codes (n, L) long, quantised (n, d))`` where ``quantised`` is the sum of the chosen codewords.
    """
    residual = z
    quantised = torch.zeros_like(z)
    codes = []
    for level, cb in enumerate(codebooks):
        idx, _ = nearest(residual, cb, lo, hi) if level == 0 else nearest(residual, cb)
        chosen = cb[idx]
        quantised = quantised + chosen
        residual = residual - chosen
        codes.append(idx)
    return torch.stack(codes, 1), quantised


@torch.no_grad()
def fit_residual_kmeans(
    z: torch.Tensor,
    levels: int,
    k: int,
    iters: int = 20,
    seed: int = 0,
    l1_groups: np.ndarray | None = None,
    l1_slices: dict | None = None,
) -> list[torch.Tensor]:
    """Fits residual k-means codebooks on ``z (n, d)``; returns ``levels`` tensors ``(k, d)``.

    With ``l1_groups`` (a group key per row) and ``l1_slices`` (group -> ``(lo, hi)``), level 1 is
    fitted per group inside its slice of codes, so no level-1 code is shared by two groups.
    """
    codebooks = []
    residual = z.float()
    for level in range(levels):
        if level == 0 and l1_slices is not None:
            cb = torch.zeros(k, z.shape[1], device=z.device)
            for g, (lo, hi) in l1_slices.items():
                rows = torch.as_tensor(np.flatnonzero(l1_groups == g), device=z.device)
                if len(rows):
                    cb[lo:hi] = kmeans(residual[rows], hi - lo, iters, seed + level)
        else:
            cb = kmeans(residual, k, iters, seed + level)
        if level == 0 and l1_slices is not None:
            lo, hi = slices_per_row(l1_groups, l1_slices, z.device)
            idx, _ = nearest(residual, cb, lo, hi)
        else:
            idx, _ = nearest(residual, cb)
        residual = residual - cb[idx]
        codebooks.append(cb)
    return codebooks


def slices_per_row(groups: np.ndarray, slices: dict, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(lo, hi)`` level-1 code ranges from each row's group; unknown groups are a KeyError."""
    names = list(slices)
    pos = pd.Index(names).get_indexer(np.asarray(groups, dtype=object))  # hash lookup, -1 = unknown
    if (pos < 0).any():
        unknown = sorted({str(g) for g in np.asarray(groups, dtype=object)[pos < 0]})
        raise KeyError(
            f"top-level categor(ies) {unknown[:5]} have no level-1 codes in this codebook "
            f"(known: {sorted(names)[:10]}); rebuild the SIDs to add a category"
        )
    bounds = np.asarray([slices[g] for g in names], dtype=np.int64)  # (groups, 2)
    return torch.as_tensor(bounds[pos, 0], device=device), torch.as_tensor(bounds[pos, 1], device=device)
