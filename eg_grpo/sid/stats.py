"""Statistics of a SID assignment (``stats.json``).

- ``num_items``, ``num_sids``; ``cluster_size`` {mean, p50, p99, max} (items per SID);
- ``level_utilization``: per level, the share of that level's codes used by at least one item;
- ``level_perplexity``: per level, ``exp(entropy)`` of the code distribution over items (how many
  codes are effectively in use);
- ``l1_category_purity``: share of items whose level-1 code's majority top-level category is
  their own (null without a taxonomy);
- ``query_item_agreement`` {l1, l12}: over valid-split (query, clicked item) pairs, the share
  whose quantised query equals the item's SID at level 1, and at levels 1-2 (null when the
  method has no model to quantise a query with, e.g. reference SIDs);
- ``build_seconds``.
"""

from __future__ import annotations

import numpy as np


def cluster_size_stats(codes: np.ndarray) -> dict:
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return {
        "mean": float(counts.mean()),
        "p50": float(np.percentile(counts, 50)),
        "p99": float(np.percentile(counts, 99)),
        "max": int(counts.max()),
    }


def level_utilization(codes: np.ndarray, codebook_sizes) -> list[float]:
    return [len(np.unique(codes[:, level])) / k for level, k in enumerate(codebook_sizes)]


def level_perplexity(codes: np.ndarray) -> list[float]:
    out = []
    for level in range(codes.shape[1]):
        _, counts = np.unique(codes[:, level], return_counts=True)
        p = counts / counts.sum()
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return out


def l1_category_purity(level1: np.ndarray, tops: np.ndarray | None) -> float | None:
    """Share of items whose level-1 code's majority top-level category equals their own."""
    if tops is None:
        return None
    codes, code_idx = np.unique(level1, return_inverse=True)
    cats, cat_idx = np.unique(np.asarray(tops, dtype=str), return_inverse=True)
    table = np.zeros((len(codes), len(cats)), dtype=np.int64)  # (codes, categories) counts
    np.add.at(table, (code_idx.reshape(-1), cat_idx.reshape(-1)), 1)
    majority = table.argmax(1)
    return float((majority[code_idx.reshape(-1)] == cat_idx.reshape(-1)).mean())


def query_item_agreement(query_codes: np.ndarray | None, item_codes: np.ndarray | None) -> dict | None:
    """Share of pairs whose query codes match the item's at level 1 and levels 1-2 (aligned rows)."""
    if query_codes is None or item_codes is None or len(query_codes) == 0:
        return None
    same = query_codes[:, :2] == item_codes[:, :2]
    return {"l1": float(same[:, 0].mean()), "l12": float(same.all(1).mean()), "num_pairs": len(query_codes)}


def sid_stats(codes: np.ndarray, codebook_sizes, tops=None, query_codes=None, pair_item_codes=None) -> dict:
    """All of the statistics above except ``build_seconds`` (the builder adds it)."""
    return {
        "num_items": int(codes.shape[0]),
        "num_sids": int(len(np.unique(codes, axis=0))),
        "cluster_size": cluster_size_stats(codes),
        "level_utilization": level_utilization(codes, codebook_sizes),
        "level_perplexity": level_perplexity(codes),
        "l1_category_purity": l1_category_purity(codes[:, 0], tops),
        "query_item_agreement": query_item_agreement(query_codes, pair_item_codes),
    }
