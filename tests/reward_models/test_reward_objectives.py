"""Ranker objectives: a SID is scored through its cluster's items; penalties, None, caching."""

from __future__ import annotations

import numpy as np
import pytest
from reward_helpers import call

from reward_models import RankerObjective, RewardContext
from reward_models.base import ClusterIndex


def _requests(tiny_log, n=6):
    """Some request ids with a query, and one without."""
    req = tiny_log.requests
    with_query = req[req["query"].str.len() > 0]["request_id"].to_numpy()[:n].tolist()
    without = req[req["query"] == ""]["request_id"].to_numpy()[:1].tolist()
    return with_query, without


def _sids(codebook, n=6, min_items=2):
    sids = [tuple(int(c) for c in s) for s in codebook.valid_sids()]
    return [s for s in sids if len(codebook.items_of(s)) >= min_items][:n]


def test_cluster_items_expand_in_order(rm_codebook):
    index = ClusterIndex.from_codebook(rm_codebook)
    clusters = np.array([3, 0, 3])
    pair, positions = index.expand(clusters)
    got = [index.item_ids_by_cluster[positions[pair == p]].tolist() for p in range(3)]
    assert got == [index.items_of(3).tolist(), index.items_of(0).tolist(), index.items_of(3).tolist()]
    assert sorted(index.items_of(5).tolist()) == sorted(rm_codebook.items_of(tuple(index.sids[5])).tolist())


@pytest.mark.parametrize(("aggregate", "top_n"), [("max", 3), ("mean_top_n", 2)])
def test_objectives_equal_item_scores_aggregated_by_hand(
    context, tiny_log, rm_codebook, rm_vocab, aggregate, top_n
):
    with_query, _ = _requests(tiny_log)
    sids = _sids(rm_codebook)
    rewards = {
        name: RankerObjective(context, objective=name, aggregate=aggregate, top_n=top_n)
        for name in ("relevance", "ctr", "cvr", "gmv")
    }
    ranker = context.ranker()
    median_price = float(np.median(tiny_log.items["price"]))
    price = tiny_log.items.set_index("item_id")["price"]
    request_ids = [r for r in with_query for _ in sids]
    batch_sids = sids * len(with_query)
    got = {name: call(fn, rm_vocab, batch_sids, request_id=request_ids) for name, fn in rewards.items()}
    for b, (rid, sid) in enumerate(zip(request_ids, batch_sids)):
        items = rm_codebook.items_of(sid)
        heads = ranker.score([rid] * len(items), items)  # the independent per-item path
        per_item = {
            "relevance": heads["relevance"],
            "ctr": heads["click"],
            "cvr": heads["purchase"],
            "gmv": price[items].to_numpy() * heads["purchase"] / median_price,
        }
        for name, values in per_item.items():
            best = np.sort(values)[::-1]
            expected = best[0] if aggregate == "max" else best[:top_n].mean()
            assert got[name][b] == pytest.approx(expected, rel=1e-9), (name, rid, sid)


def test_relevance_is_none_without_query_and_invalid_sids_are_penalised(
    context, tiny_log, rm_codebook, rm_vocab
):
    with_query, without = _requests(tiny_log, 1)
    sid = _sids(rm_codebook, 1)[0]
    absent = tuple(k - 1 for k in rm_codebook.codebook_sizes)
    relevance = RankerObjective(context, objective="relevance", invalid_penalty=-3.0)
    ctr = RankerObjective(context, objective="ctr")
    ids = [without[0], with_query[0], with_query[0], with_query[0]]
    rel = call(relevance, rm_vocab, [sid, sid, None, absent], request_id=ids)
    assert rel[0] is None and 0.0 < rel[1] < 1.0 and rel[2:] == [-3.0, -3.0]
    out = call(ctr, rm_vocab, [sid, sid, None, absent], request_id=ids)
    assert 0.0 < out[0] < 1.0 and out[2:] == [-1.0, -1.0]


def test_batch_composition_and_cache_do_not_change_scores(context, tiny_log, rm_codebook, rm_vocab):
    with_query, without = _requests(tiny_log, 4)
    sids = _sids(rm_codebook, 5, min_items=1)
    ctr = RankerObjective(context, objective="ctr", aggregate="mean_top_n", top_n=2)
    request_ids = [r for r in with_query + without for _ in sids]
    batch_sids = sids * (len(with_query) + len(without))
    together = call(ctr, rm_vocab, batch_sids, request_id=request_ids)
    assert len(ctr.scorer._cache) == len(set(zip(request_ids, batch_sids)))
    cached = call(ctr, rm_vocab, batch_sids, request_id=request_ids)
    fresh = RewardContext(context.codebook, context.vocab, log=context.log, ranker_dir=context.ranker_dir)
    alone = [
        call(
            RankerObjective(fresh, objective="ctr", aggregate="mean_top_n", top_n=2),
            rm_vocab,
            [s],
            request_id=[r],
        )[0]
        for r, s in zip(request_ids[::7], batch_sids[::7])
    ]
    assert cached == together
    assert alone == pytest.approx(together[::7], rel=1e-12)
    assert len(set(together)) > len(sids)  # the score depends on the request, not only on the SID


def test_objectives_share_one_scorer_per_aggregation(context):
    a, b = RankerObjective(context, objective="ctr"), RankerObjective(context, objective="gmv")
    c = RankerObjective(context, objective="ctr", aggregate="mean_top_n", name="ctr_top3")
    assert a.scorer is b.scorer and a.scorer is not c.scorer
    assert (a.__name__, b.__name__, c.__name__) == ("ctr", "gmv", "ctr_top3")


def test_custom_objective_from_a_dotted_path(context, tiny_log, rm_codebook, rm_vocab):
    with_query, _ = _requests(tiny_log, 1)
    sid = _sids(rm_codebook, 1)[0]
    custom = RankerObjective(
        context,
        objective="custom",
        item_score_fn="custom_reward_example:click_times_relevance",
        name="ctr_x_rel",
    )
    items = rm_codebook.items_of(sid)
    heads = context.ranker().score([with_query[0]] * len(items), items)
    out = call(custom, rm_vocab, [sid], request_id=with_query)
    assert out[0] == pytest.approx(float(np.max(heads["click"] * heads["relevance"])))
    with pytest.raises(ValueError, match="item_score_fn is required"):
        RankerObjective(context, objective="custom")
    with pytest.raises(ValueError, match="cannot be named 'ctr'"):
        RankerObjective(
            context,
            objective="custom",
            item_score_fn="custom_reward_example:click_times_relevance",
            name="ctr",
        )


def test_errors_name_the_problem(context, tiny_log, rm_codebook, rm_vocab):
    sid = _sids(rm_codebook, 1)[0]
    ctr = RankerObjective(context, objective="ctr")
    with pytest.raises(KeyError, match="request_id 123456789 is not in the search log"):
        call(ctr, rm_vocab, [sid], request_id=[123456789])
    with pytest.raises(ValueError, match="objective must be one of"):
        RankerObjective(context, objective="revenue")
    with pytest.raises(ValueError, match="needs RewardContext.ranker_dir"):
        RankerObjective(RewardContext(codebook=rm_codebook, vocab=rm_vocab, log=tiny_log), objective="ctr")
