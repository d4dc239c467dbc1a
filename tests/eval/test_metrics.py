"""Hand-computed values of every retrieval metric (eg_grpo.eval.metrics)."""

import math

import numpy as np
import pytest

from eg_grpo.eval import metrics as M

A, B, C, D, E = (0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 1, 1)

# Three examples, targets found at ranks 0, 2 and never.
RANKED = [[A, B, C], [B, C, A], [C, D, E]]
TARGETS = [A, A, B]


def test_first_hit_rank_skips_duplicates_and_invalid():
    assert M.first_hit_rank([B, B, None, A], A) == 2
    # duplicates count once -> [B, None, A]: A at rank 2
    assert M.first_hit_rank([None, A], {A, B}) == 1
    assert M.first_hit_rank([C, D], A) is None


@pytest.mark.parametrize(("k", "expected"), [(1, 1 / 3), (2, 1 / 3), (3, 2 / 3), (10, 2 / 3)])
def test_hit_rate(k, expected):
    assert M.hit_rate_at_k(RANKED, TARGETS, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, 1 / 3), (2, 1 / 3), (3, (1 + 1 / math.log2(4)) / 3), (5, (1 + 0.5) / 3)],
)
def test_ndcg_log2(k, expected):
    assert M.ndcg_at_k(RANKED, TARGETS, k) == pytest.approx(expected)


def test_duplicate_sid_does_not_earn_twice():
    # The repeated B is dropped, so A moves from rank 2 to rank 1: 1/log2(3).
    assert M.ndcg_at_k([[B, B, A]], [A], 3) == pytest.approx(1 / math.log2(3))
    assert M.hit_rate_at_k([[B, B, A]], [A], 2) == 1.0


def test_click_hitrate_any_clicked_cluster():
    clicked = [{E}, {C, D}, set()]
    # ex0: E not returned; ex1: C at rank 1; ex2: nothing clicked
    assert M.click_hitrate_at_b(RANKED, clicked, 1) == 0.0
    assert M.click_hitrate_at_b(RANKED, clicked, 2) == pytest.approx(1 / 3)


def test_semantic_hitrate_share_of_returned_clusters():
    relevant = [{A, C}, {A}, set()]
    # b=2: ex0 [A,B] -> 1/2; ex1 [B,C] -> 0; ex2 -> 0  => 1/6
    assert M.semantic_hitrate_at_b(RANKED, relevant, 2) == pytest.approx(1 / 6)
    # b=3: ex0 2/3; ex1 1/3; ex2 0 => 1/3
    assert M.semantic_hitrate_at_b(RANKED, relevant, 3) == pytest.approx(1 / 3)
    # fewer returned than b: the denominator is what was returned; invalid sequences count as misses
    assert M.semantic_hitrate_at_b([[A, None]], [{A}], 5) == pytest.approx(1 / 2)
    assert M.semantic_hitrate_at_b([[]], [{A}], 5) == 0.0


def test_recall_at_n_items_cuts_inside_a_cluster():
    clusters = {A: [1, 2, 3, 4], B: [5], C: [6, 7]}
    items = clusters.__getitem__
    ranked = [[B, A, C]]
    # budget 3: B gives 1 item (5), A gives 2 of its 4 -> clicked 3 counts 2/4
    assert M.recall_at_n_items(ranked, [{3}], items, 3) == pytest.approx(0.5)
    # budget 5: A fully included
    assert M.recall_at_n_items(ranked, [{3}], items, 5) == pytest.approx(1.0)
    # two clicked items, one in C (never reached with budget 5), one in B
    assert M.recall_at_n_items(ranked, [{5, 7}], items, 5) == pytest.approx(0.5)
    assert M.recall_at_n_items(ranked, [{5, 7}], items, 7) == pytest.approx(1.0)
    # a big cluster ranked first eats the budget: the small cluster holding the click is cut off
    assert M.recall_at_n_items([[A, B]], [{5}], items, 4) == 0.0
    # no clicked item: 0, invalid sequences skipped
    assert M.recall_at_n_items([[None, B]], [set()], items, 4) == 0.0
    assert M.recall_at_n_items([[None, B]], [{5}], items, 1) == 1.0


def test_items_returned_valid_rate_distinct():
    sizes = {A: 4, B: 1, C: 2, D: 3, E: 5}
    assert M.items_returned_at_b(RANKED, sizes.__getitem__, 2) == pytest.approx((5 + 3 + 5) / 3)
    assert M.valid_sid_rate([[A, None], [E, D]], {A, D}.__contains__) == pytest.approx(2 / 4)
    assert M.distinct_sids(RANKED) == 3
    assert M.distinct_sids([[A, B], [A, C]]) == 1
    assert M.distinct_sids([[A, B], [A, C]], top=2) == 3


def test_empty_or_misaligned_input_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        M.hit_rate_at_k([], [], 10)
    with pytest.raises(ValueError, match="aligned"):
        M.ndcg_at_k(RANKED, TARGETS[:2], 10)


def test_paired_difference_by_hand():
    # ranks of A and B on 4 examples (-1: not returned); k = 3
    a, b = [0, 2, -1, 5], [1, -1, 0, 2]
    hr = M.paired_difference(a, b, 3, "hr")
    # hits A: 1,1,0,0  B: 1,0,1,1 -> d = 0,-1,1,1: mean .25, sample std sqrt(((.25)^2+(1.25)^2+2*(.75)^2)/3)
    assert (hr["a"], hr["b"], hr["diff"]) == (0.5, 0.75, 0.25)
    assert hr["se"] == pytest.approx(math.sqrt((0.0625 + 1.5625 + 2 * 0.5625) / 3) / 2)
    assert (hr["b_only"], hr["a_only"], hr["n"]) == (2, 1, 4)
    nd = M.paired_difference(a, b, 3, "ndcg")
    g = lambda r: 1 / math.log2(r + 2)  # noqa: E731
    assert nd["a"] == pytest.approx((g(0) + g(2)) / 4) and nd["b"] == pytest.approx((g(1) + g(0) + g(2)) / 4)
    # a model against itself: no difference, no spread
    same = M.paired_difference(a, a, 3)
    assert same["diff"] == 0.0 and same["se"] == 0.0
    with pytest.raises(ValueError, match="aligned"):
        M.paired_difference(a, b[:2], 3)
    with pytest.raises(ValueError, match="metric"):
        M.paired_difference(a, b, 3, "mrr")


def test_exposure_hitrate_any_exposed_cluster_in_top_k():
    exposed = [{C}, {D, E}, {A}]
    # ex0 [A,B,C]: C at rank 2; ex1 [B,C,A]: no D/E; ex2 [C,D,E]: A absent
    assert M.exposure_hitrate_at_k(RANKED, exposed, 2) == 0.0
    assert M.exposure_hitrate_at_k(RANKED, exposed, 3) == pytest.approx(1 / 3)
    # a duplicate does not push the exposed cluster out of the top 2
    assert M.exposure_hitrate_at_k([[A, A, C]], [{C}], 2) == 1.0


def test_exposure_coverage_counts_exposed_items_not_clusters():
    # ex0 shows 4 items: two in A, one in C, one in E; ex1 shows 2 items of B
    exposed_item_sids = [[A, A, C, E], [B, B]]
    ranked = [[A, B, C], [C, None, B]]
    # k=1: ex0 covers A's 2 of 4 items; ex1 [C] covers none -> (0.5 + 0) / 2
    assert M.exposure_coverage_at_k(ranked, exposed_item_sids, 1) == pytest.approx(0.25)
    # k=3: ex0 A and C -> 3/4; ex1 B (the invalid sequence takes a slot but covers nothing) -> 1
    assert M.exposure_coverage_at_k(ranked, exposed_item_sids, 3) == pytest.approx((0.75 + 1.0) / 2)
    assert M.exposure_coverage_at_k([[A]], [[]], 5) == 0.0  # nothing shown: 0, not a division error


def test_budget_hitrate_keeps_the_best_scored_items_of_the_beam():
    clusters = {A: [1, 2, 3, 4], B: [5], C: [6, 7]}
    score = {1: 9.0, 2: 1.0, 3: 1.0, 4: 8.0, 5: 0.5, 6: 7.0, 7: 2.0}

    def item_score(ids):
        return np.array([score[int(i)] for i in ids])

    ranked = [[A, B, C]]
    # beam 3, budget 3: items by score 1 (9), 4 (8), 6 (7): click 6 survives although C is last in the beam
    assert M.budget_hitrate_at_b(ranked, [{6}], clusters.__getitem__, item_score, b=3, n=3) == 1.0
    # ... but the click on 5 (score 0.5) is cut, and so is 2 at budget 3
    assert M.budget_hitrate_at_b(ranked, [{5}], clusters.__getitem__, item_score, b=3, n=3) == 0.0
    assert M.budget_hitrate_at_b(ranked, [{2}], clusters.__getitem__, item_score, b=3, n=3) == 0.0
    # beam 2 never sees C; budget 5 keeps every item of A and B
    assert M.budget_hitrate_at_b(ranked, [{6}], clusters.__getitem__, item_score, b=2, n=10) == 0.0
    assert M.budget_hitrate_at_b(ranked, [{5}], clusters.__getitem__, item_score, b=2, n=5) == 1.0
    # ties keep beam order: 2 and 3 tie at 1.0 and 2 comes first, so budget 3 over A keeps 1, 4, 2
    assert M.budget_hitrate_at_b([[A]], [{2}], clusters.__getitem__, item_score, b=1, n=3) == 1.0
    assert M.budget_hitrate_at_b([[A]], [{3}], clusters.__getitem__, item_score, b=1, n=3) == 0.0
    # mean over examples; no click or only invalid sequences: a miss
    two = M.budget_hitrate_at_b([[A], [None, B]], [{1}, {5}], clusters.__getitem__, item_score, b=2, n=1)
    assert two == 1.0
    assert (
        M.budget_hitrate_at_b([[None], [A]], [{1}, set()], clusters.__getitem__, item_score, b=1, n=4) == 0.0
    )
