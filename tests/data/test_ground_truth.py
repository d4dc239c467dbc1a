"""Graded ground-truth relevance: the grading rules on hand-made tables, and consistency with the log."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from eg_grpo.data.ground_truth import has_ground_truth, relevance
from eg_grpo.data.schema import SearchLog

HEADPHONES = ["Electronics", "Audio", "Headphones"]
SPEAKERS = ["Electronics", "Audio", "Speakers"]
COOKWARE = ["Home & Kitchen", "Kitchen", "Cookware"]


def _hand_made_log():
    items = pd.DataFrame(
        {
            "item_id": [10, 11, 12, 13],
            "category_path": [HEADPHONES, HEADPHONES, SPEAKERS, COOKWARE],
            "brand": ["Sonora", "Auralis", "Sonora", "Panworks"],
            "gt_noun": ["earbuds", "headphones", "soundbar", "wok"],
            "gt_colour": ["black", "red", "black", "red"],
            "gt_material": ["plastic", "metal", "plastic", "cast iron"],
            "gt_style": ["wireless", "compact", "slim", "non stick"],
            "gt_quality": 0.5,
            "gt_popularity": 1.0,
        }
    )
    hp, sp = " > ".join(HEADPHONES), " > ".join(SPEAKERS)
    rows = [  # intent, category, brand, attribute, noun, expected grades of items 10..13
        ("category", hp, "", "", "", [3, 3, 1, 0]),  # broad "headphones": the whole leaf
        ("category", hp, "", "", "earbuds", [3, 2, 1, 0]),  # a noun: other nouns of the leaf lose 1
        ("attribute", hp, "", "red", "earbuds", [2, 2, 1, 0]),  # one unmet constraint each
        ("attribute", hp, "", "red", "headphones", [1, 3, 1, 0]),  # two unmet: still in the leaf
        ("attribute", hp, "", "wireless", "earbuds", [3, 1, 1, 0]),  # style counts as the attribute
        ("brand", hp, "Sonora", "", "earbuds", [3, 1, 1, 0]),  # the brand does not lift other leaves
        ("brand", "", "Sonora", "", "", [3, 0, 3, 0]),  # brand only: every item of the brand
        ("empty", sp, "", "", "", [1, 1, 3, 0]),  # recommendation: graded against the latent need
    ]
    requests = pd.DataFrame(
        {
            "request_id": np.arange(100, 100 + len(rows)),
            "gt_intent": [r[0] for r in rows],
            "gt_category": [r[1] for r in rows],
            "gt_brand": [r[2] for r in rows],
            "gt_attribute": [r[3] for r in rows],
            "gt_noun": [r[4] for r in rows],
        }
    )
    return SimpleNamespace(items=items, requests=requests), np.array([r[5] for r in rows])


def test_grading_rules():
    log, expected = _hand_made_log()
    req = np.repeat(log.requests["request_id"].to_numpy(), 4)
    item = np.tile(log.items["item_id"].to_numpy(), len(log.requests))
    got = relevance(log, req, item)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)
    # broadcasting: one request against many items
    np.testing.assert_array_equal(relevance(log, 101, [13, 12, 11, 10]), [0, 1, 2, 3])


def test_stored_relevance_matches(tiny_log):
    imp = tiny_log.impressions
    got = relevance(tiny_log, imp["request_id"].to_numpy(), imp["item_id"].to_numpy())
    np.testing.assert_array_equal(got, imp["gt_relevance"].to_numpy())
    assert set(np.unique(got)) == {0, 1, 2, 3}


def test_every_query_has_relevant_items(tiny_log):
    req = tiny_log.requests
    items = tiny_log.items["item_id"].to_numpy()
    rids = req["request_id"].to_numpy()
    grades = relevance(tiny_log, rids[:, None], items[None, :])  # (R, N)
    assert grades.shape == (len(rids), len(items))
    best = grades.max(1)
    assert (best >= 2).all()  # the noun (or brand) asked for exists in the catalogue
    assert (best == 3).mean() > 0.9  # the rest ask for an attribute the user likes but no item has
    # relevance is selective: most of the catalogue is irrelevant to a query
    assert (grades >= 2).mean() < 0.1


def test_cache_follows_replaced_tables(tiny_log):
    log = SearchLog(tiny_log.items, tiny_log.requests.copy(), tiny_log.impressions)
    rid, iid = int(log.requests["request_id"].iloc[0]), log.items["item_id"].to_numpy()
    before = relevance(log, rid, iid)
    changed = log.requests.copy()
    changed.loc[changed.index[0], ["gt_intent", "gt_category", "gt_noun", "gt_attribute"]] = [
        "brand",
        "",
        "",
        "",
    ]
    changed.loc[changed.index[0], "gt_brand"] = log.items["brand"].iloc[0]
    log.requests = changed
    after = relevance(log, rid, iid)
    np.testing.assert_array_equal(after == 3, (log.items["brand"] == log.items["brand"].iloc[0]).to_numpy())
    assert not np.array_equal(before, after)


def test_errors(tiny_log):
    assert has_ground_truth(tiny_log)
    with pytest.raises(KeyError, match="item id 99999"):
        relevance(tiny_log, [0], [99999])
    with pytest.raises(KeyError, match="request id"):
        relevance(tiny_log, [-5], [0])
    plain = SimpleNamespace(items=tiny_log.items.drop(columns=["gt_noun"]), requests=tiny_log.requests)
    assert not has_ground_truth(plain)
    with pytest.raises(KeyError, match="gt_noun"):
        relevance(plain, [0], [0])
