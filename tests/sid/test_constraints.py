import logging

import numpy as np
import pandas as pd
import pytest
import torch

from eg_grpo.sid.constraints import allocate_level1_codes, info_nce, query_click_pairs, top_level_categories


def test_level1_allocation_partitions_codes_by_sqrt_count():
    tops = np.array(["big"] * 900 + ["mid"] * 100 + ["small"] * 4, dtype=object)
    slices = allocate_level1_codes(tops, 64)
    spans = sorted(slices.values())
    assert spans[0][0] == 0 and spans[-1][1] == 64
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, disjoint
    sizes = {c: hi - lo for c, (lo, hi) in slices.items()}
    assert sizes["small"] >= 1 and sizes["big"] > sizes["mid"] > sizes["small"]
    # sqrt: 30 : 10 : 2 -> the big category gets about 3x the middle one, not 9x
    assert 2.0 <= sizes["big"] / sizes["mid"] <= 4.0


def test_level1_allocation_needs_enough_codes():
    with pytest.raises(ValueError, match="3 top-level categories but only 2"):
        allocate_level1_codes(np.array(["a", "b", "c"], dtype=object), 2)


def test_top_level_categories_fallback_and_no_taxonomy(caplog):
    items = pd.DataFrame({"category_path": [["A", "x"], [], ["B"]]})
    with caplog.at_level(logging.WARNING):
        tops = top_level_categories(items)
    assert tops.tolist() == ["A", "", "B"] and "1 of 3 items have an empty category_path" in caplog.text
    assert top_level_categories(pd.DataFrame({"category_path": [[], []]})) is None


def test_info_nce_prefers_aligned_pairs_and_masks_duplicates():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(8, 4, generator=g)
    ids = torch.arange(8)
    aligned = info_nce(q, q + 0.01, ids, 1.0)
    shuffled = info_nce(q, q[torch.randperm(8, generator=g)], ids, 1.0)
    assert aligned < shuffled
    # the same item twice: the duplicate column is not a negative, so the loss equals the loss
    # of the batch without the duplicate's competition (finite, smaller than unmasked)
    ids_dup = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    items = q.clone()
    items[1] = items[0]
    masked = info_nce(q, items, ids_dup, 1.0)
    unmasked = info_nce(q, items, ids, 1.0)
    assert torch.isfinite(masked) and masked < unmasked


def test_query_click_pairs_use_clicks_of_nonempty_queries_in_split(syn_log):
    pairs = query_click_pairs(syn_log, "train")
    req = syn_log.requests.set_index("request_id")
    clicks = syn_log.impressions[syn_log.impressions.clicked]
    expected = clicks[
        clicks.request_id.map(req["split"]).eq("train") & clicks.request_id.map(req["query"]).ne("")
    ]
    assert len(pairs) == len(expected) > 0
    assert (pairs["query"] != "").all()


def test_last_item_pairs_take_the_last_history_items_title_as_query(tiny_log):
    pairs = query_click_pairs(tiny_log, "train", query_source="last_item")
    req = tiny_log.requests.set_index("request_id")
    title = tiny_log.items.set_index("item_id")["title"]
    clicks = tiny_log.impressions[tiny_log.impressions.clicked]
    in_train = clicks.request_id.map(req["split"]).eq("train")
    clicks = clicks[in_train & clicks.request_id.map(req["history"].map(len)).gt(0)]
    assert len(pairs) == len(clicks) > 0
    assert pairs["query"].tolist() == [title[req.loc[r, "history"][-1]] for r in clicks.request_id]
    assert pairs["item_id"].tolist() == clicks.item_id.tolist()
    with pytest.raises(ValueError, match="query_source"):
        query_click_pairs(tiny_log, "train", query_source="title")
