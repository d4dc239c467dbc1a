"""The simulated impression log: a legacy retrieval + ranking, a click model, purchases, histories.

All per-impression work is numpy over ``(R, C)`` arrays (requests x candidates); the only Python
loop is over requests, to accumulate each user's history in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from eg_grpo.data.ground_truth import GroundTruthCodes, graded_relevance
from eg_grpo.data.sim_catalogue import Catalogue, Taxonomy, pick
from eg_grpo.data.sim_users import Users, sample_in_groups


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _groups(keys: np.ndarray, n_groups: int):
    """Items sorted by a group key, the slice of each group, and cumulative popularity weights."""
    order = np.argsort(keys, kind="stable")
    start = np.searchsorted(keys[order], np.arange(n_groups), side="left")
    end = np.searchsorted(keys[order], np.arange(n_groups), side="right")
    return order, start, end


def _duplicates(cand: np.ndarray) -> np.ndarray:
    """``(R, C)`` bool: True where the item already appears earlier in its row (in item order)."""
    by_item = np.argsort(cand, axis=1, kind="stable")
    sorted_items = np.take_along_axis(cand, by_item, 1)
    dup_sorted = np.zeros(cand.shape, dtype=bool)
    dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    dup = np.zeros(cand.shape, dtype=bool)
    np.put_along_axis(dup, by_item, dup_sorted, 1)
    return dup


def legacy_ranking_score(config, cat: Catalogue, item_rows, relevance, noise) -> np.ndarray:
    """The legacy ranker's score: noisy graded relevance plus log-popularity; any aligned shapes.

    Args:
        config: a [`~eg_grpo.data.simulator.SimulatorConfig`] (its ``legacy_*`` weights).
        cat: the catalogue.
        item_rows: item rows (e.g. ``(R, C)``).
        relevance: graded relevance 0-3 of the same pairs.
        noise: standard normal draws of the same shape (the log draws them from its stream; the
            arena seeds them by the (request, item) pair so every arm sees the same noise).
    """
    n_items = len(cat.leaf)
    return config.legacy_relevance_weight * (
        relevance + config.legacy_noise * noise
    ) + config.legacy_popularity_weight * np.log(cat.popularity[item_rows] * n_items)


@dataclass
class FunnelProbabilities:
    """The user model of aligned (request, item, position) triples; all arrays ``(M,)``.

    ``click = examine * attract``; a purchase happens after a click with ``purchase_given_click``.
    """

    examine: np.ndarray
    attract: np.ndarray
    click: np.ndarray
    purchase_given_click: np.ndarray


def funnel_probabilities(
    config, tax: Taxonomy, cat: Catalogue, users: Users, user, item, relevance, position
) -> FunnelProbabilities:
    """The simulator's click and purchase model for aligned ``(M,)`` user rows, item rows,
    relevance grades and 0-based positions.

    Examination falls with position; attraction comes from relevance, personal affinity (preferred
    leaf, brand, style), price fit (item price vs the user's tier) and quality. The log simulation
    and the arena's oracle both call this, so they agree to the last bit.
    """
    leaf = cat.leaf[item]
    affinity = (
        (users.leaves[user] == leaf[:, None]).any(1).astype(float)
        + (users.brands[user] == cat.brand[item][:, None]).any(1)
        + (
            pick(users.style_u[user], tax.attr_offset["styles"][leaf], tax.attr_count["styles"][leaf])
            == cat.style[item]
        )
    )
    price_fit = -0.5 * (cat.price_z[item] - (users.price_tier[user] - 1.0)) ** 2
    quality = cat.quality_z[item]
    examine = (position + 1.0) ** (-config.position_bias_exponent)
    attract = _sigmoid(
        config.click_bias
        + config.click_relevance_weight * relevance
        + config.click_affinity_weight * affinity
        + config.click_price_weight * price_fit
        + config.click_quality_weight * quality
    )
    buy = _sigmoid(
        config.purchase_bias
        + config.purchase_relevance_weight * relevance
        + config.purchase_affinity_weight * affinity
        + config.purchase_price_weight * price_fit
        + config.purchase_quality_weight * quality
    )
    return FunnelProbabilities(
        examine=examine, attract=attract, click=examine * attract, purchase_given_click=buy
    )


def retrieve_candidates(config, tax: Taxonomy, cat: Catalogue, users: Users, requests, rng) -> np.ndarray:
    """The legacy retrieval: ``(R, C)`` candidate item rows per request.

    A candidate comes from the request's leaf, its mid category, a brand (the one asked for, or one
    the user likes) or the global popularity list, in fixed shares of the ``C`` slots; inside a
    source, items are drawn by popularity. Empty queries draw their leaf slots from the user's
    preferred leaves, like a recommendation feed.
    """
    n_req, n_slots, n_items = len(requests), config.candidates_per_request, len(cat.leaf)
    leaf_index = {key: i for i, key in enumerate(tax.leaf_keys)}
    leaf = requests["gt_category"].map(lambda k: leaf_index.get(k, -1)).to_numpy()  # (R,), -1 = none
    brand_index = {b: i for i, b in enumerate(tax.brands)}
    brand = requests["gt_brand"].map(lambda b: brand_index.get(b, -1)).to_numpy()  # (R,)
    user = requests["user_id"].to_numpy()
    empty = (requests["gt_intent"] == "empty").to_numpy()

    shape = (n_req, n_slots)
    col = rng.integers(0, users.leaves.shape[1], shape)
    # Which source fills each slot: 0 leaf, 1 mid, 2 brand, 3 popular (fixed shares per request).
    cuts = np.cumsum([config.legacy_leaf_share, config.legacy_mid_share, config.legacy_brand_share])
    source = np.searchsorted(cuts * n_slots, np.arange(n_slots) + 0.5)[None, :].repeat(n_req, 0)
    slot_leaf = np.where(leaf[:, None] >= 0, leaf[:, None], users.leaves[user[:, None], col])
    slot_leaf = np.where(
        empty[:, None] & (rng.random(shape) < 0.5), users.leaves[user[:, None], col], slot_leaf
    )
    slot_brand = np.where(brand[:, None] >= 0, brand[:, None], users.brands[user[:, None], col])
    source = np.where((leaf[:, None] < 0) & (source < 2), 2, source)  # brand-only: no leaf to use

    pop = cat.popularity
    out = np.empty(shape, dtype=np.int64)
    # global popularity
    out[...] = np.minimum(np.searchsorted(np.cumsum(pop), rng.random(shape) * pop.sum()), n_items - 1)
    item_mid = tax.leaf_mid[cat.leaf]
    for src, group, keys, n_groups in (
        (0, slot_leaf, cat.leaf, len(tax.leaf_keys)),
        (1, tax.leaf_mid[slot_leaf], item_mid, int(tax.leaf_mid.max()) + 1),
        (2, slot_brand, cat.brand, len(tax.brands)),
    ):
        order, start, end = _groups(keys, n_groups)
        mask = (source == src) & (end[group] > start[group])  # empty groups keep the popular draw
        cum = np.cumsum(pop[order])
        out[mask] = sample_in_groups(rng, group[mask], start, end, order, cum)
    return out


def legacy_candidates(
    config, tax: Taxonomy, cat: Catalogue, users: Users, requests: pd.DataFrame, rng, launches=None
) -> tuple[np.ndarray, np.ndarray]:
    """The legacy retrieval's ``(R, C)`` candidate item rows and ``(R, C)`` which of them may be shown.

    A slot may not be shown when its item already appears earlier in the row or, with ``launches``
    (a [`~eg_grpo.data.sim_launches.Launches`]), when the item has not launched at the request's time.
    """
    n_items = len(cat.leaf)
    cand = retrieve_candidates(config, tax, cat, users, requests, rng)  # (R, C)
    if launches is not None:  # its own stream: without launches `rng` is consumed as it always was
        cand = launches.redraw_unlaunched(config, tax, cat, users, requests, cand)
    # A candidate drawn twice is shown once: redraw duplicates uniformly (small catalogues
    # collide often), and drop what still collides.
    for _ in range(3):
        dup = _duplicates(cand)
        if not dup.any():
            break
        cand[dup] = rng.integers(0, n_items, int(dup.sum()))
    usable = ~_duplicates(cand)
    if launches is not None:  # a uniform redraw or a leaf launched later in full can still hold one
        usable &= launches.prior(cand, requests["timestamp"].to_numpy()[:, None]) > 0
    return cand, usable


def simulate_impressions(
    config,
    tax: Taxonomy,
    cat: Catalogue,
    users: Users,
    requests: pd.DataFrame,
    codes: GroundTruthCodes,
    rng,
    launches=None,
) -> pd.DataFrame:
    """Ranks candidates with the legacy ranker, shows 10-20 of them, and draws clicks and purchases.

    With ``launches`` (a [`~eg_grpo.data.sim_launches.Launches`]) an item is never a candidate before
    its launch, and its cold-start prior scales its popularity in the retrieval and in the ranker.

    Returns:
        The impressions table with ``gt_click_prob`` and ``gt_relevance``, sorted by request then
        position.
    """
    n_req = len(requests)
    cand, usable = legacy_candidates(config, tax, cat, users, requests, rng, launches)
    req_rows = np.arange(n_req)[:, None]
    rel = graded_relevance(codes, req_rows, cand)  # (R, C) int8
    # Legacy ranking: noisy relevance + popularity (it does not know the user's taste).
    score = legacy_ranking_score(config, cat, cand, rel, rng.standard_normal(cand.shape))
    if launches is not None:  # popularity x prior: a new item ranks as a less popular one
        log_prior = launches.log_prior(cand, requests["timestamp"].to_numpy()[:, None])
        score += config.legacy_popularity_weight * np.where(usable, log_prior, 0.0)  # -inf is masked below
    score[~usable] = -np.inf

    n_show = config.max_impressions
    ranked = np.argsort(-score, axis=1, kind="stable")[:, :n_show]  # (R, n_show)
    shown_score = np.take_along_axis(score, ranked, 1)
    length = rng.integers(config.min_impressions, config.max_impressions + 1, n_req)
    keep = (np.arange(n_show)[None, :] < length[:, None]) & np.isfinite(shown_score)
    r_idx, pos = np.nonzero(keep)  # row-major: by request, then position
    item = np.take_along_axis(cand, ranked, 1)[r_idx, pos]
    rel_shown = np.take_along_axis(rel, ranked, 1)[r_idx, pos]

    user = requests["user_id"].to_numpy()[r_idx]
    probs = funnel_probabilities(config, tax, cat, users, user, item, rel_shown, pos)
    click_prob = probs.click
    clicked = rng.random(len(item)) < click_prob
    buy_prob = probs.purchase_given_click
    purchased = clicked & (rng.random(len(item)) < buy_prob)
    return pd.DataFrame(
        {
            "request_id": requests["request_id"].to_numpy()[r_idx],
            "item_id": cat.items["item_id"].to_numpy()[item],
            "position": pos.astype(np.int64),
            "clicked": clicked,
            "purchased": purchased,
            "gt_click_prob": click_prob,
            "gt_relevance": rel_shown.astype(np.int8),
        }
    )


def add_histories_and_splits(
    config, requests: pd.DataFrame, impressions: pd.DataFrame, users: Users
) -> pd.DataFrame:
    """Adds ``history`` (the user's earlier purchases and clicks) and the temporal ``split``:
    train, then rl (``config.rl_fraction``, 0 by default), valid and test, in time order.

    ``requests`` must be sorted by timestamp with distinct timestamps and ids ``0..R-1``; a
    request's history holds the user's purchases before the log, then the items clicked in the
    user's earlier requests (by time, then position), the last ``config.max_history`` of them.
    """
    n_req = len(requests)
    clicks = impressions[impressions["clicked"].to_numpy()]
    clicked_req = clicks["request_id"].to_numpy()
    clicked_item = clicks["item_id"].to_numpy()
    bounds = np.searchsorted(clicked_req, np.arange(n_req + 1))
    running = [list(h) for h in users.prelog_history]
    history = []
    for r, u in enumerate(requests["user_id"].to_numpy().tolist()):
        h = running[u]
        history.append(h[-config.max_history :] if config.max_history > 0 else [])
        if bounds[r + 1] > bounds[r]:
            h.extend(clicked_item[bounds[r] : bounds[r + 1]].tolist())
            del h[: max(len(h) - config.max_history, 0)]  # keep memory bounded
    n_test = round(n_req * config.test_fraction)
    n_valid = round(n_req * config.valid_fraction)
    n_rl = round(n_req * config.rl_fraction)
    split = np.full(n_req, "train", dtype=object)
    split[n_req - n_test - n_valid - n_rl : n_req - n_test - n_valid] = "rl"  # the freshest training logs
    split[n_req - n_test - n_valid : n_req - n_test] = "valid"
    split[n_req - n_test :] = "test"
    requests = requests.copy()
    requests.insert(4, "history", history)
    requests.insert(5, "split", split)
    return requests
