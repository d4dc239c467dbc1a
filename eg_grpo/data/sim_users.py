"""Simulated users (preferences, purchase history before the log) and their requests (queries).

A request starts from an intent: a leaf category the user wants (mostly one of their preferred
leaves), then one of four intents: ``category`` (broad category words or a product noun),
``attribute`` (an attribute word + a noun), ``brand`` (a brand, usually with a noun) or
``empty`` (no query: recommendation). Query words are drawn from the same vocabulary as the
titles, with synonyms, filler and price words, typos and dropped words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from eg_grpo.data.sim_catalogue import Catalogue, Taxonomy, pick
from eg_grpo.data.vocabulary import FILLER_WORDS, LEAVES, PRICE_WORDS


@dataclass
class Users:
    """Latent user arrays, ``U`` users."""

    activity: np.ndarray  # (U,) probability that a request comes from the user
    leaves: np.ndarray  # (U, k) preferred leaf indices
    brands: np.ndarray  # (U, k) preferred brand (index into taxonomy.brands), one per preferred leaf
    price_tier: np.ndarray  # (U,) 0 budget, 1 mid, 2 premium
    style_u: np.ndarray  # (U,) uniform in [0, 1): picks the preferred style word of any family
    prelog_history: list[list[int]]  # item ids bought before the log starts, oldest first


def sample_in_groups(rng, group, start, end, order, weights_cum) -> np.ndarray:
    """Draws one item per entry of ``group``, popularity-weighted inside the group's slice.

    Args:
        group: ``(M,)`` group index per draw (e.g. leaf).
        start, end: ``(G,)`` slice of ``order`` per group (non-empty).
        order: ``(N,)`` item rows sorted by group.
        weights_cum: ``(N,)`` cumulative popularity along ``order``.

    Returns:
        ``(M,)`` item rows.
    """
    lo = np.where(start[group] > 0, weights_cum[np.maximum(start[group] - 1, 0)], 0.0)
    hi = weights_cum[end[group] - 1]
    target = lo + rng.random(len(group)) * (hi - lo)
    pos = np.searchsorted(weights_cum, target, side="right")
    pos = np.clip(pos, start[group], end[group] - 1)
    return order[pos]


def build_users(config, tax: Taxonomy, cat: Catalogue, rng: np.random.Generator) -> Users:
    """Draws ``config.n_users`` users with preferences and a purchase history before the log."""
    n_users, k, n_leaves = config.n_users, config.user_categories, len(tax.leaf_keys)
    activity = rng.lognormal(0.0, config.user_activity_sigma, n_users)
    activity /= activity.sum()
    leaf_items = np.bincount(cat.leaf, minlength=n_leaves).astype(float)
    # First preferred leaf by catalogue size; the others mostly from the same top category, so
    # a user has a coherent profile (a runner buys shoes and watches, not random things).
    first = rng.choice(n_leaves, n_users, p=leaf_items / leaf_items.sum())
    leaves = np.empty((n_users, k), dtype=np.int64)
    leaves[:, 0] = first
    top_of = tax.leaf_top
    tops = np.unique(top_of)
    top_start = np.array([np.flatnonzero(top_of == t)[0] for t in tops])
    top_count = np.array([(top_of == t).sum() for t in tops])
    for j in range(1, k):
        same = pick(rng.random(n_users), top_start[top_of[first]], top_count[top_of[first]])
        other = rng.integers(0, n_leaves, n_users)
        leaves[:, j] = np.where(rng.random(n_users) < 0.6, same, other)
    brands = pick(rng.random((n_users, k)), tax.brand_offset[leaves], tax.brand_count[leaves], skew=1.3)
    price_tier = rng.choice(3, n_users, p=[0.35, 0.45, 0.20])
    style_u = rng.random(n_users)

    # Purchases before the log: popular items of the preferred leaves.
    n_prelog = rng.poisson(config.prelog_history_mean, n_users)
    owner = np.repeat(np.arange(n_users), n_prelog)
    leaf_of = leaves[owner, rng.integers(0, k, len(owner))]
    # Only leaves that have items can be drawn from.
    has_items = cat.leaf_end > cat.leaf_start
    leaf_of = np.where(has_items[leaf_of], leaf_of, cat.leaf[rng.integers(0, len(cat.leaf), len(owner))])
    cum = np.cumsum(cat.popularity[cat.by_leaf])
    bought = sample_in_groups(rng, leaf_of, cat.leaf_start, cat.leaf_end, cat.by_leaf, cum)
    prelog = [[] for _ in range(n_users)]
    for u, item in zip(owner.tolist(), bought.tolist()):
        prelog[u].append(item)
    return Users(activity, leaves, brands, price_tier, style_u, prelog)


PRICE_TIER_NAMES = ("budget", "mid", "premium")


def user_profiles(users: Users) -> np.ndarray:
    """``(U,)`` the ``profile`` text of each user: the purchasing-power tier its price fit uses.

    A real coarse profile (the paper's "purchasing power"): the click and purchase models favour
    items priced for the user's tier, so the profile carries signal the query and history may lack.
    """
    return np.array([f"power={PRICE_TIER_NAMES[t]}" for t in users.price_tier.tolist()], dtype=object)


def build_requests(config, tax: Taxonomy, cat: Catalogue, users: Users, rng: np.random.Generator):
    """Draws ``config.n_requests`` requests in time order (ids 0.. follow the timestamps).

    Returns:
        ``(requests, target_item)``: the requests table without ``history`` / ``split`` (added
        once clicks are known) and ``(R,)`` the item row each non-brand-only intent was modelled on.
    """
    n_req, n_leaves = config.n_requests, len(tax.leaf_keys)
    horizon = config.n_days * 86_400
    if n_req > horizon:
        raise ValueError(f"n_requests={n_req} exceeds the seconds in n_days={config.n_days}; raise n_days")
    timestamp = np.sort(rng.choice(horizon, n_req, replace=False)).astype(np.int64)
    user = rng.choice(config.n_users, n_req, p=users.activity)
    p = np.array([config.p_intent_category, config.p_intent_attribute, config.p_intent_brand], dtype=float)
    p = np.append(p / p.sum() * (1.0 - config.empty_query_share), config.empty_query_share)
    intent = rng.choice(4, n_req, p=p)  # index into ground_truth.INTENTS
    # The leaf wanted: one of the user's preferred leaves, or one by catalogue size.
    leaf_items = np.bincount(cat.leaf, minlength=n_leaves).astype(float)
    pref = users.leaves[user, rng.integers(0, users.leaves.shape[1], n_req)]
    other = rng.choice(n_leaves, n_req, p=leaf_items / leaf_items.sum())
    leaf = np.where(rng.random(n_req) < config.p_intent_from_preferences, pref, other)
    leaf = np.where(leaf_items[leaf] > 0, leaf, other)
    # A target item of the leaf (popularity-weighted) gives the noun / attribute / brand asked for,
    # so the combination asked for exists in the catalogue.
    cum = np.cumsum(cat.popularity[cat.by_leaf])
    target = sample_in_groups(rng, leaf, cat.leaf_start, cat.leaf_end, cat.by_leaf, cum)
    items = cat.items
    u = rng.random((n_req, 10))
    style_tables = {}
    queries, gt = [], {"gt_category": [], "gt_brand": [], "gt_attribute": [], "gt_noun": []}
    intents = ("category", "attribute", "brand", "empty")
    t_brand = items["brand"].to_numpy()
    t_attr = items[["gt_colour", "gt_material", "gt_style"]].to_numpy()
    for r in range(n_req):
        it, lf, tg, ur = intents[intent[r]], int(leaf[r]), int(target[r]), u[r]
        cat_key, noun, brand, attr, words = tax.leaf_keys[lf], "", "", "", []
        group = tax.nouns[cat.noun[tg]]
        synonym = group[int(ur[1] * len(group))] if ur[0] < config.synonym_prob else group[0]
        if it == "category":
            if ur[2] < 0.4:  # broad: the category's own words ("kitchen knives", "lamps")
                words = LEAVES[lf].path[2].lower().replace("&", "").replace("'", "").split()
            else:
                noun, words = group[0], synonym.split()
        elif it == "attribute":
            noun = group[0]
            if ur[2] < 0.3:  # the user's own taste rather than the target's
                fam = LEAVES[lf].family
                if fam not in style_tables:
                    off, cnt = tax.attr_offset["styles"][lf], tax.attr_count["styles"][lf]
                    style_tables[fam] = tax.attrs["styles"][off : off + cnt]
                table = style_tables[fam]
                attr = table[int(users.style_u[user[r]] * len(table))]
            else:
                attr = t_attr[tg, int(ur[3] * 3)]
            words = attr.split() + synonym.split()
        elif it == "brand":
            brand = t_brand[tg]
            if ur[2] < 0.7:
                noun, words = group[0], [brand.lower(), *synonym.split()]
            else:  # brand only: no category constraint
                cat_key, words = "", brand.lower().split()
        if it != "empty":
            if ur[4] < config.price_word_prob:
                tier_words = PRICE_WORDS[int(users.price_tier[user[r]])]
                if tier_words:
                    words = [tier_words[int(ur[5] * len(tier_words))], *words]
            if ur[6] < config.filler_prob:
                words = [*words, FILLER_WORDS[int(ur[7] * len(FILLER_WORDS))]]
            words = _noise(words, ur[8], ur[9], config)
        queries.append(" ".join(words))
        gt["gt_category"].append(cat_key)
        gt["gt_brand"].append(brand)
        gt["gt_attribute"].append(attr)
        gt["gt_noun"].append(noun)
    requests = pd.DataFrame(
        {
            "request_id": np.arange(n_req, dtype=np.int64),
            "user_id": user.astype(np.int64),
            "query": queries,
            "timestamp": timestamp,
            "gt_intent": np.array(intents, dtype=object)[intent],
            **gt,
        }
    )
    return requests, target


_KEYBOARD_NEIGHBOURS = dict(zip("abcdefghijklmnopqrstuvwxyz", "sqvsfgjjkhlkjbpowtdyibeuto"))


def _noise(words: list[str], u_drop: float, u_typo: float, config) -> list[str]:
    """Drops one word (queries of 3+ words) and puts a typo into one word (4+ letters)."""
    if len(words) >= 3 and u_drop < config.word_drop_prob:
        del words[int(u_drop / config.word_drop_prob * len(words)) % len(words)]
    if u_typo < config.typo_prob:
        # Derive positions from the uniform so the whole query stays a function of the seed.
        x = u_typo / config.typo_prob
        long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
        if long:
            i = long[int(x * len(long)) % len(long)]
            w = words[i]
            j = 1 + int(x * 7919) % (len(w) - 2)
            kind = int(x * 104729) % 4
            if kind == 0:  # swap two letters
                w = w[: j - 1] + w[j] + w[j - 1] + w[j + 1 :]
            elif kind == 1:  # drop a letter
                w = w[:j] + w[j + 1 :]
            elif kind == 2:  # double a letter
                w = w[:j] + w[j] + w[j:]
            else:  # hit a neighbouring key
                w = w[:j] + _KEYBOARD_NEIGHBOURS.get(w[j], w[j]) + w[j + 1 :]
            words[i] = w
    return words
