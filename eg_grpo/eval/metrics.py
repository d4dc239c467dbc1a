"""Retrieval metrics over ranked SID lists: pure functions, hand-checkable, no model involved.

Conventions for every function:
- ``ranked``: one list per example of the SIDs a beam search returned, best first. A SID is a tuple
  of codes; ``None`` stands for a sequence that is not a valid SID (it never matches anything).
- Ranks are 0-based; NDCG uses ``log2`` discounts: a hit at rank ``r`` scores ``1 / log2(r + 2)``.
  With one target per example the ideal DCG is 1, so NDCG@K is the mean discounted gain.
- Duplicates in a ranked list count once (at their first position), so a repeated SID never earns twice.
- Every function returns the mean over examples; an empty input is an error, never a silent 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

SID = tuple[int, ...]


def _check(ranked: Sequence, *aligned: Sequence) -> None:
    if len(ranked) == 0:
        raise ValueError("no examples to score: the ranked list is empty")
    for other in aligned:
        if len(other) != len(ranked):
            raise ValueError(f"ranked has {len(ranked)} examples but an aligned input has {len(other)}")


def _dedup(sids: Iterable) -> list:
    seen, out = set(), []
    for s in sids:
        if s is None or s not in seen:
            out.append(s)
            if s is not None:
                seen.add(s)
    return out


def first_hit_rank(ranked_sids: Sequence, targets: set | SID) -> int | None:
    """0-based rank of the first SID of ``ranked_sids`` in ``targets`` (a SID or a set of SIDs), or None."""
    targets = {targets} if isinstance(targets, tuple) else targets
    for rank, sid in enumerate(_dedup(ranked_sids)):
        if sid is not None and sid in targets:
            return rank
    return None


def hit_rate_at_k(ranked: Sequence[Sequence], targets: Sequence[SID], k: int) -> float:
    """Share of examples whose target SID is among the first ``k`` distinct returned SIDs."""
    _check(ranked, targets)
    hits = [(r := first_hit_rank(lst, t)) is not None and r < k for lst, t in zip(ranked, targets)]
    return float(np.mean(hits))


def ndcg_at_k(ranked: Sequence[Sequence], targets: Sequence[SID], k: int) -> float:
    """Mean ``1 / log2(rank + 2)`` of the target's rank when it is below ``k``, else 0 (one target)."""
    _check(ranked, targets)
    gains = []
    for lst, t in zip(ranked, targets):
        r = first_hit_rank(lst, t)
        gains.append(1.0 / math.log2(r + 2) if r is not None and r < k else 0.0)
    return float(np.mean(gains))


def click_hitrate_at_b(ranked: Sequence[Sequence], clicked_sids: Sequence[set], b: int) -> float:
    """Share of examples where a clicked item lies in one of the first ``b`` returned clusters.

    Args:
        ranked: returned SIDs per example.
        clicked_sids: per example, the set of SIDs of the items the user clicked.
        b: beam size considered.
    """
    return float(np.mean(click_hits_at_b(ranked, clicked_sids, b)))


def click_hits_at_b(ranked: Sequence[Sequence], clicked_sids: Sequence[set], b: int) -> np.ndarray:
    """Per example, 1.0 when a clicked item lies in one of the first ``b`` returned clusters, else
    0.0: ``(N,)``, the per-request values :func:`click_hitrate_at_b` averages (paired comparisons)."""
    _check(ranked, clicked_sids)
    hits = [(r := first_hit_rank(lst, set(c))) is not None and r < b for lst, c in zip(ranked, clicked_sids)]
    return np.asarray(hits, dtype=float)


def semantic_hitrate_at_b(ranked: Sequence[Sequence], relevant_sids: Sequence[set], b: int) -> float:
    """Mean share of the returned clusters (first ``b``, invalid ones included) that hold a relevant item.

    Args:
        ranked: returned SIDs per example.
        relevant_sids: per example, the set of SIDs holding at least one item relevant to the query.
        b: beam size considered. The denominator is the number of clusters actually returned
            (at most ``b``); an example that returned nothing scores 0.
    """
    _check(ranked, relevant_sids)
    shares = []
    for lst, rel in zip(ranked, relevant_sids):
        top = _dedup(lst)[:b]
        shares.append(sum(s is not None and s in rel for s in top) / len(top) if top else 0.0)
    return float(np.mean(shares))


def recall_at_n_items(
    ranked: Sequence[Sequence],
    clicked_items: Sequence[set],
    cluster_items: Callable[[SID], Sequence[int]],
    n: int,
) -> float:
    """Recall of the clicked items when the returned clusters are expanded into items, cut at ``n`` items.

    Clusters are expanded in beam order. The last cluster that crosses the cut contributes only
    ``m`` of its ``s`` items; which ones is up to the ranker, so each of its clicked items counts
    ``m / s`` (the expectation under an arbitrary order inside the cluster). A large cluster
    therefore earns nothing for free: it uses up the item budget.

    Args:
        ranked: returned SIDs per example.
        clicked_items: per example, the set of clicked item ids (an empty set scores 0).
        cluster_items: SID → the item ids of that cluster (e.g. ``SIDCodebook.items_of``).
        n: the item budget.
    """
    _check(ranked, clicked_items)
    scores = []
    for lst, clicked in zip(ranked, clicked_items):
        clicked = set(clicked)
        if not clicked:
            scores.append(0.0)
            continue
        budget, found = n, 0.0
        for sid in _dedup(lst):
            if budget <= 0:
                break
            if sid is None:
                continue
            members = list(cluster_items(sid))
            if not members:
                continue
            take = min(budget, len(members))
            found += len(clicked.intersection(members)) * take / len(members)
            budget -= take
        scores.append(found / len(clicked))
    return float(np.mean(scores))


def exposure_hitrate_at_k(ranked: Sequence[Sequence], exposed_sids: Sequence[set], k: int) -> float:
    """``exp@K``: share of examples where one of the first ``k`` returned SIDs holds an exposed item.

    The paper's exposure hit rate: exposed items are the ones the production ranker chose to show, so
    a hit says the generator agrees with ranking, not only with the user's click.

    Args:
        ranked: returned SIDs per example.
        exposed_sids: per example, the set of SIDs of the items shown for the request.
        k: the cut-off (distinct returned SIDs).
    """
    return click_hitrate_at_b(ranked, exposed_sids, k)  # same count, another target set


def exposure_coverage_at_k(
    ranked: Sequence[Sequence], exposed_item_sids: Sequence[Sequence], k: int
) -> float:
    """``pvr@K``: mean share of a request's exposed items whose cluster is among the first ``k`` SIDs.

    Args:
        ranked: returned SIDs per example.
        exposed_item_sids: per example, the SID of each exposed item (one entry per item, so two
            exposed items of one cluster count twice); an example with none scores 0.
        k: the cut-off (distinct returned SIDs).
    """
    return float(np.mean(exposure_coverage_shares(ranked, exposed_item_sids, k)))


def exposure_coverage_shares(
    ranked: Sequence[Sequence], exposed_item_sids: Sequence[Sequence], k: int
) -> np.ndarray:
    """Per example, the share :func:`exposure_coverage_at_k` averages: ``(N,)``."""
    _check(ranked, exposed_item_sids)
    shares = []
    for lst, exposed in zip(ranked, exposed_item_sids):
        top = {s for s in _dedup(lst)[:k] if s is not None}
        shares.append(sum(s in top for s in exposed) / len(exposed) if len(exposed) else 0.0)
    return np.asarray(shares, dtype=float)


def budget_hitrate_at_b(
    ranked: Sequence[Sequence],
    clicked_items: Sequence[set],
    cluster_items: Callable[[SID], Sequence[int]],
    item_score: Callable[[np.ndarray], np.ndarray],
    b: int,
    n: int,
) -> float:
    """Click hit rate when the items of the first ``b`` clusters are cut to the ``n`` best by an item score.

    The paper's budgeted recall (its Table 2): a recall channel hands at most ``n`` items to ranking,
    chosen by an item-level score, so a wider beam only helps when its extra clusters hold items that
    beat the budget. Ties in the score keep beam order (earlier cluster first, then cluster order).

    Args:
        ranked: returned SIDs per example.
        clicked_items: per example, the set of clicked item ids (an empty set scores 0).
        cluster_items: SID → the item ids of that cluster.
        item_score: ``(M,)`` item ids → ``(M,)`` scores, higher is kept first.
        b: beam size considered (distinct returned SIDs).
        n: the item budget.
    """
    _check(ranked, clicked_items)
    hits = []
    for lst, clicked in zip(ranked, clicked_items):
        groups = [np.asarray(cluster_items(s), dtype=np.int64) for s in _dedup(lst)[:b] if s is not None]
        items = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        kept = items[np.argsort(-np.asarray(item_score(items), dtype=float), kind="stable")[:n]]
        hits.append(bool(clicked) and bool(set(kept.tolist()) & set(clicked)))
    return float(np.mean(hits))


def items_returned_at_b(ranked: Sequence[Sequence], cluster_size: Callable[[SID], int], b: int) -> float:
    """Mean number of items the first ``b`` returned clusters hold (what recall hands to ranking)."""
    _check(ranked)
    return float(np.mean([sum(cluster_size(s) for s in _dedup(lst)[:b] if s is not None) for lst in ranked]))


def valid_sid_rate(ranked: Sequence[Sequence], is_valid: Callable[[SID], bool]) -> float:
    """Share of all returned sequences that spell a SID of the codebook (``None`` = not a SID)."""
    _check(ranked)
    flat = [s for lst in ranked for s in lst]
    if not flat:
        return 0.0
    return float(np.mean([s is not None and bool(is_valid(s)) for s in flat]))


def distinct_sids(ranked: Sequence[Sequence], top: int = 1) -> int:
    """Number of distinct valid SIDs among the first ``top`` of every example (1: the top-1 answers)."""
    _check(ranked)
    return len({s for lst in ranked for s in _dedup(lst)[:top] if s is not None})


def paired_difference(ranks_a: Sequence[int], ranks_b: Sequence[int], k: int, metric: str = "hr") -> dict:
    """B − A on the same examples, with the standard error of the paired difference.

    Two models scored on one split share each example's difficulty, so the difference of their
    per-example scores varies far less than either score: its standard error (sample std of the
    per-example differences / sqrt(n)) is the yardstick for "better or noise", not each metric's own.

    Args:
        ranks_a, ranks_b: per example, the 0-based rank of the target in each model's list, -1 when
            it was not returned; aligned (the same examples in the same order).
        k: the cut-off.
        metric: ``"hr"`` (hit within ``k``) or ``"ndcg"`` (``1 / log2(rank + 2)`` within ``k``).

    Returns:
        ``{"a", "b", "diff", "se", "b_only", "a_only", "n"}``: the two means, B − A, its standard
        error, and how many examples only B / only A scored on (hit within ``k``).
    """
    a, b = np.asarray(ranks_a, dtype=np.int64), np.asarray(ranks_b, dtype=np.int64)
    if len(a) == 0 or len(a) != len(b):
        raise ValueError(f"need two aligned, non-empty rank lists, got {len(a)} and {len(b)}")
    if metric not in ("hr", "ndcg"):
        raise ValueError(f"metric must be 'hr' or 'ndcg', got {metric!r}")
    hit_a, hit_b = (a >= 0) & (a < k), (b >= 0) & (b < k)
    if metric == "hr":
        score_a, score_b = hit_a.astype(float), hit_b.astype(float)
    else:
        score_a = np.where(hit_a, 1.0 / np.log2(np.maximum(a, 0) + 2), 0.0)
        score_b = np.where(hit_b, 1.0 / np.log2(np.maximum(b, 0) + 2), 0.0)
    d = score_b - score_a
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"a": float(score_a.mean()), "b": float(score_b.mean()), "diff": float(d.mean()), "se": se,
            "b_only": int((hit_b & ~hit_a).sum()), "a_only": int((hit_a & ~hit_b).sum()), "n": len(d)}  # fmt: skip
