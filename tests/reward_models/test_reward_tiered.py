"""The paper's tiered log reward on a hand-made request."""

from __future__ import annotations

import pytest
from reward_helpers import call

from reward_models import BUILTINS, TieredLogMatchReward, build_reward_funcs


def _four_sids(codebook):
    sids = [tuple(int(c) for c in s) for s in codebook.valid_sids()]
    return sids[0], sids[1], sids[2], sids[3]


def _request(n, purchased=(), clicked=(), exposed=()):
    return {
        "purchased_sids": [[list(s) for s in purchased]] * n,
        "clicked_sids": [[list(s) for s in clicked]] * n,
        "exposed_sids": [[list(s) for s in exposed]] * n,
    }


def test_paper_tiers_on_a_hand_made_request(context, rm_codebook, rm_vocab):
    bought, clicked, shown, other = _four_sids(rm_codebook)
    absent = tuple(k - 1 for k in rm_codebook.codebook_sizes)  # well formed, holds no item
    assert not rm_codebook.contains(absent)
    # The log lists a purchase among the clicks and every clicked item among the exposed ones.
    cols = _request(6, purchased=[bought], clicked=[bought, clicked], exposed=[bought, clicked, shown])
    out = call(TieredLogMatchReward(context), rm_vocab, [bought, clicked, shown, other, absent, None], **cols)
    assert out == pytest.approx([1.0, 1.0, 0.5, 0.1, 0.0, 0.0])


def test_tiers_are_arguments_and_the_best_tier_wins(context, rm_codebook, rm_vocab):
    bought, clicked, shown, other = _four_sids(rm_codebook)
    reward = TieredLogMatchReward(context, purchased=2.0, clicked=1.0, exposed=0.3, valid=0.05, invalid=-1.0)
    cols = _request(5, purchased=[bought], clicked=[bought, clicked], exposed=[bought, clicked, shown])
    out = call(reward, rm_vocab, [bought, clicked, shown, other, None], **cols)
    assert out == pytest.approx([2.0, 1.0, 0.3, 0.05, -1.0])
    # No prefix credit: a SID that shares two levels with the click but is another cluster is "valid".
    sibling = next(
        tuple(int(c) for c in s) for s in rm_codebook.valid_sids()
        if tuple(s[:2]) == clicked[:2] and tuple(int(c) for c in s) != clicked
    )  # fmt: skip
    assert call(reward, rm_vocab, [sibling], **_request(1, clicked=[clicked])) == [0.05]


def test_a_request_without_logged_sids_still_scores_validity(context, rm_codebook, rm_vocab):
    bought, *_ = _four_sids(rm_codebook)
    cols = {"purchased_sids": [None, []], "clicked_sids": [[], None], "exposed_sids": [[], []]}
    assert call(TieredLogMatchReward(context), rm_vocab, [bought, None], **cols) == [0.1, 0.0]


def test_unordered_tiers_and_missing_columns_are_clear_errors(context, rm_codebook, rm_vocab):
    with pytest.raises(ValueError, match="exposed >= valid"):
        TieredLogMatchReward(context, exposed=0.05, valid=0.1)
    with pytest.raises(ValueError, match="min\\(purchased, clicked\\) >= exposed"):
        TieredLogMatchReward(context, clicked=0.4)
    bought, *_ = _four_sids(rm_codebook)
    with pytest.raises(KeyError, match="exposed_sids"):
        call(TieredLogMatchReward(context), rm_vocab, [bought], purchased_sids=[[]], clicked_sids=[[]])


def test_registered_beside_sid_match(context, rm_codebook, rm_vocab):
    assert BUILTINS["tiered_log_match"][0] is TieredLogMatchReward
    funcs, weights = build_reward_funcs(
        [{"name": "tiered_log_match", "exposed": 0.25, "weight": 2.0}], context
    )
    assert [f.__name__ for f in funcs] == ["tiered_log_match"] and weights == [2.0]
    _, _, shown, _ = _four_sids(rm_codebook)
    assert call(funcs[0], rm_vocab, [shown], **_request(1, exposed=[shown])) == [0.25]
