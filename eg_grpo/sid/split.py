"""Oversized-cluster split: no SID holds more than ``max_cluster_size`` items.

A SID is a cluster, but an unbounded one defeats recall (the ranking stage would have to sort a
whole category). For each SID with ``n > max_cluster_size`` items:

1. **Partition, keeping similar items together.** The cluster's latents are cut into
   ``m = ceil(n / max_cluster_size)`` parts by recursive balanced bisection along the principal
   direction (a PCA tree): a part of ``n'`` items destined for ``m'`` sub-parts is cut at the
   ``n' * ceil(m'/2) / m'``-th point of its projection. Neighbours along the direction of most
   variance stay in one part, and every part ends with at most ``max_cluster_size`` items (plain
   k-means gives no size guarantee).
2. **Allocate new SIDs.** Part 0 (the one whose centroid is closest to the original codeword
   sum, i.e. the cluster's "core") keeps the original SID. The other parts take *spare* codes:
   first unused last-level codes under the same ``L-1``-level prefix (so they stay siblings in
   the trie), in increasing code order; when that prefix has no spare code left, an unused code
   one level up (a fresh prefix under the same ``L-2`` levels, whose last level is then free).
   Level 1 is never changed, so the category guarantee survives splitting; if no spare SID exists
   under the level-1 code a ValueError asks for a larger ``codebook_size`` or ``max_cluster_size``.
3. **Remember the split** (original SID -> part centroids and part SIDs), so that
   :meth:`SIDCodebook.assign` sends a new item that quantises to a split SID to its nearest part.
   New items are not capacity-checked: a cluster may grow past the limit until the next rebuild.
"""

from __future__ import annotations

import math

import numpy as np


def sid_keys(codes: np.ndarray, k: int) -> np.ndarray:
    """One int64 per SID row (mixed radix ``k``); ``codes (n, L)`` -> ``(n,)``."""
    keys = np.zeros(codes.shape[0], dtype=np.int64)
    for level in range(codes.shape[1]):
        keys = keys * k + codes[:, level].astype(np.int64)
    return keys


def _balanced_parts(latents: np.ndarray, rows: np.ndarray, parts: int) -> list[np.ndarray]:
    """Recursive PCA bisection of ``rows`` into ``parts`` groups of near-equal size."""
    if parts <= 1:
        return [rows]
    x = latents[rows] - latents[rows].mean(0)
    # principal direction via the top right-singular vector ((n, d) -> (d,))
    direction = np.linalg.svd(x, full_matrices=False)[2][0] if len(rows) > 1 else np.zeros(x.shape[1])
    order = rows[np.argsort(x @ direction, kind="stable")]
    left_parts = math.ceil(parts / 2)
    cut = int(round(len(rows) * left_parts / parts))
    return _balanced_parts(latents, order[:cut], left_parts) + _balanced_parts(
        latents, order[cut:], parts - left_parts
    )


class _SpareSIDs:
    """Finds unused SIDs close (in the trie) to a given one. Tracks used prefixes of every length."""

    def __init__(self, codes: np.ndarray, k: int):
        self.k, self.levels = k, codes.shape[1]
        self.used = [
            set(map(tuple, np.unique(codes[:, : d + 1], axis=0).tolist())) for d in range(self.levels)
        ]

    def take(self, sid: tuple[int, ...]) -> tuple[int, ...]:
        for depth in range(self.levels - 1, 0, -1):  # depth = level whose code changes; never level 0
            prefix = sid[:depth]
            for code in range(self.k):
                candidate = (*prefix, code)
                if candidate in self.used[depth]:
                    continue
                new = candidate + (0,) * (self.levels - depth - 1)  # the rest of a fresh prefix is free
                for d in range(depth, self.levels):
                    self.used[d].add(new[: d + 1])
                return new
        return self._take_from_a_relative(sid)

    def _take_from_a_relative(self, sid: tuple[int, ...]) -> tuple[int, ...]:
        # The cluster's own branch is full (every code at every level below level 1 is taken on its
        # path). Any leaf prefix under the same level-1 code with a free last-level code will do; the
        # one sharing the longest prefix with `sid` first (then in code order, for determinism).
        def shared(prefix):
            return next((d for d, (a, b) in enumerate(zip(prefix, sid)) if a != b), len(prefix))

        leaves = sorted(
            (p for p in self.used[self.levels - 2] if p[0] == sid[0]), key=lambda p: (-shared(p), p)
        )
        for prefix in leaves:
            for code in range(self.k):
                candidate = (*prefix, code)
                if candidate not in self.used[self.levels - 1]:
                    self.used[self.levels - 1].add(candidate)
                    return candidate
        raise ValueError(
            f"no spare SID left under level-1 code {sid[0]} to split an oversized cluster; raise "
            "codebook_size or max_cluster_size"
        )


def split_oversized(
    codes: np.ndarray, latents: np.ndarray, k: int, max_cluster_size: int, reference: np.ndarray | None = None
) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Splits every SID holding more than ``max_cluster_size`` items (see the module docstring).

    Args:
        codes: ``(n, L)`` codes per item.
        latents: ``(n, d)`` the representation the quantiser saw (similarity for the split).
        k: codes per level.
        max_cluster_size: the limit (>= 1).
        reference: ``(n, d)`` each item's quantised latent (the codeword sum), used to pick which
            part keeps the original SID; None picks the largest part.

    Returns:
        ``(new_codes (n, L), splits)`` with ``splits[original_key] = (centroids (m, d), sids (m, L))``.
    """
    if max_cluster_size < 1:
        raise ValueError(f"max_cluster_size must be >= 1, got {max_cluster_size}")
    codes = codes.copy()
    keys = sid_keys(codes, k)
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    oversized = np.flatnonzero(counts > max_cluster_size)
    splits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if len(oversized) == 0:
        return codes, splits
    spare = _SpareSIDs(codes, k)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    for u in oversized:
        rows = order[starts[u] : starts[u + 1]]
        sid = tuple(int(c) for c in codes[rows[0]])
        parts = _balanced_parts(latents, rows, math.ceil(len(rows) / max_cluster_size))
        centroids = np.stack([latents[p].mean(0) for p in parts]).astype(np.float32)
        core = 0
        if reference is not None:
            core = int(np.argmin(((centroids - reference[rows[0]]) ** 2).sum(1)))
        part_sids = []
        for j, p in enumerate(parts):
            new = sid if j == core else spare.take(sid)
            codes[p] = new
            part_sids.append(new)
        splits[int(uniq[u])] = (centroids, np.asarray(part_sids, dtype=np.int64))
    return codes, splits


def apply_splits(
    codes: np.ndarray, latents: np.ndarray, k: int, splits: dict[int, tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Sends rows whose SID was split at build time to the nearest part (for new items / queries)."""
    if not splits:
        return codes
    codes = codes.copy()
    keys = sid_keys(codes, k)
    hit = np.isin(keys, np.fromiter(splits.keys(), dtype=np.int64))
    for key in np.unique(keys[hit]):
        rows = np.flatnonzero(keys == key)
        centroids, part_sids = splits[int(key)]
        d = ((latents[rows, None, :] - centroids[None]) ** 2).sum(-1)  # (rows, m)
        codes[rows] = part_sids[d.argmin(1)]
    return codes
