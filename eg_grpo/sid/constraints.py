"""The two CQ constraints: a category-guided level 1 and query-item contrastive alignment.

**Category-guided level 1 (mechanism).** The level-1 codebook is *partitioned* among the
top-level categories: category ``g`` owns the contiguous code range ``[lo_g, hi_g)``, sized in
proportion to ``sqrt(items in g)`` (at least one code each; sqrt so that a huge category does not
starve small ones, while big ones still get finer level-1 clusters). Every item is quantised at
level 1 only against its own category's slice: in training, when the codes are chosen at build
time, and when :meth:`SIDCodebook.assign` places a new item. A level-1 code therefore holds items
of exactly one top-level category *by construction* (purity 1.0), not merely by a loss that
pushes towards it; levels 2+ are unconstrained. Slice codewords are initialised by k-means on
that category's items, and dead codes are revived only from that category's items.

Items with an empty ``category_path`` while others have one are the fallback group ``""``
("uncategorised"), which gets its own slice (a warning says how many); they never share a
level-1 code with a real category. When no item has a category the guidance switches off.

A query has no category, so queries are quantised against all level-1 codes (the agreement
metric then also measures whether the query lands in the right category's slice).

**Query-item InfoNCE.** Queries go through the *same* encoder MLP as items (a shared tower:
queries and titles are embedded by the same text model, and sharing lets a query be quantised
with the item codebooks at evaluation). Two terms, on (query, clicked item) pairs of the train
split only:

- :func:`info_nce`: bidirectional InfoNCE with in-batch negatives between query latents and the
  quantised latents of their clicked items. Logits are negative squared Euclidean distances
  over a temperature (codes are picked by Euclidean nearest neighbour, so that is the metric to
  align in; latents are unit-norm, so the scale cannot be inflated to win the loss);
- :func:`code_alignment`: InfoNCE against the codebook: at levels 1 and 2 the query's residual
  must pick the clicked item's code among all codes of the level. The in-batch term alone pulls
  a query towards its items but leaves it short of their level-1 code when the batch's
  negatives are far away (demo data, contrastive_weight 0.5: query-item agreement at level 1
  0.65 -> 0.74 and at levels 1-2 0.19 -> 0.45 with it).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

UNCATEGORISED = ""


def top_level_categories(items: pd.DataFrame) -> np.ndarray | None:
    """The top-level category of each item (``""`` where the path is empty); None without taxonomy."""
    if "category_path" not in items.columns:
        return None
    tops = np.array([str(p[0]) if len(p) else UNCATEGORISED for p in items["category_path"]], dtype=object)
    if (tops == UNCATEGORISED).all():
        return None
    missing = int((tops == UNCATEGORISED).sum())
    if missing:
        logger.warning(
            "%d of %d items have an empty category_path; they form their own 'uncategorised' level-1 "
            "group (never mixed with a real category). Fill in their categories for better SIDs.",
            missing,
            len(tops),
        )
    return tops


def allocate_level1_codes(tops: np.ndarray, num_codes: int) -> dict[str, tuple[int, int]]:
    """Partitions ``num_codes`` level-1 codes among categories, proportional to sqrt(item count).

    Args:
        tops: top-level category per item.
        num_codes: level-1 codebook size ``K``.

    Returns:
        ``{category: (lo, hi)}``, contiguous, disjoint, covering ``[0, K)``, sorted by category name.

    Raises:
        ValueError: when there are more categories than level-1 codes.
    """
    cats, counts = np.unique(tops.astype(str), return_counts=True)
    if len(cats) > num_codes:
        raise ValueError(
            f"{len(cats)} top-level categories but only {num_codes} level-1 codes; raise codebook_size "
            "or switch category_guided off"
        )
    weight = np.sqrt(counts.astype(float))
    # One code each, the rest by largest remainder of the sqrt share; never more codes than items.
    share = weight / weight.sum() * (num_codes - len(cats))
    alloc = 1 + np.floor(share).astype(int)
    for i in np.argsort(-(share - np.floor(share)))[: num_codes - alloc.sum()]:
        alloc[i] += 1
    slices, lo = {}, 0
    for cat, n in zip(cats.tolist(), alloc.tolist()):
        slices[cat] = (lo, lo + n)
        lo += n
    return slices


QUERY_SOURCES = ("query", "last_item")


def query_click_pairs(log, split: str, query_source: str = "query") -> pd.DataFrame:
    """(query, item) pairs of one split: every click under a non-empty query, one row per click.

    Args:
        log: the dataset.
        split: which requests.
        query_source: ``"query"``: the request's query text. ``"last_item"``: the title of the last
            item of the request's history, for recommendation data, which has no query: the item a
            user just interacted with takes the query's part, so the contrastive term pulls items
            that follow one another towards shared codes (a collaborative signal).

    Returns:
        A frame with columns ``query`` (str) and ``item_id`` (int); empty when there are none.
    """
    if query_source not in QUERY_SOURCES:
        raise ValueError(f"query_source={query_source!r}: use one of {QUERY_SOURCES}")
    requests = log.requests[log.requests["split"] == split][["request_id", "query", "history"]]
    if query_source == "last_item":
        titles = log.items.set_index("item_id")["title"].astype(str).to_dict()
        last = [titles.get(int(h[-1]), "") if len(h) else "" for h in requests["history"]]
        requests = requests.assign(query=last)
    requests = requests[requests["query"].astype(str).str.strip() != ""]
    clicks = log.impressions[log.impressions["clicked"].astype(bool)][["request_id", "item_id"]]
    pairs = clicks.merge(requests[["request_id", "query"]], on="request_id", how="inner")
    return pairs[["query", "item_id"]].reset_index(drop=True)


def code_alignment(
    query_latent: torch.Tensor, codebooks, item_codes: torch.Tensor, temperature: float, levels: int
) -> torch.Tensor:
    """Code-level InfoNCE: the query's residual at each level must pick the clicked item's code.

    The positive of level ``l`` is the codeword of the item's level-``l`` code, the negatives are
    the level's other codewords; the residual passed to the next level subtracts the *item's*
    codeword (teacher forcing), so level 2 is learned for queries that got level 1 right. This is
    the quantisation a query goes through at evaluation, with no category slice (a query has
    none), so it is what makes a query reach its items' SIDs; codebooks are held fixed here so that
    queries move to the items' codes, not the codes to the queries.

    Args:
        query_latent: ``(b, d)``.
        codebooks: the level codebooks, each ``(K, d)``.
        item_codes: ``(b, L)`` the clicked items' codes.
        temperature: logits are ``-||r - c||^2 / temperature``.
        levels: how many leading levels to align (2: levels 1 and 2).

    Returns:
        The mean over the aligned levels of the cross-entropies.
    """
    residual, losses = query_latent, []
    for level in range(levels):
        cb = codebooks[level].detach()
        logits = -torch.cdist(residual, cb).pow(2) / temperature  # (b, K)
        losses.append(F.cross_entropy(logits, item_codes[:, level]))
        residual = residual - cb[item_codes[:, level]]
    return torch.stack(losses).mean()


def info_nce(
    query_latent: torch.Tensor, item_latent: torch.Tensor, item_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Bidirectional InfoNCE with in-batch negatives; the ``b``-th query's positive is item ``b``.

    Args:
        query_latent: ``(b, d)``.
        item_latent: ``(b, d)``, the quantised latents of the clicked items.
        item_ids: ``(b,)``; in-batch duplicates of the positive item are masked out of the
            negatives (the same item clicked for two queries is not a negative for either).
        temperature: logits are ``-||q - i||^2 / temperature``.

    Returns:
        The scalar mean of the query->item and item->query cross-entropies.
    """
    logits = -torch.cdist(query_latent, item_latent).pow(2) / temperature  # (b, b)
    same = item_ids[:, None] == item_ids[None, :]
    eye = torch.eye(len(item_ids), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(item_ids), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
