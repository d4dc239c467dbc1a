"""Rule-based rewards: SID match with prefix credit, category consistency, validity."""

from __future__ import annotations

import numpy as np
import pytest
from reward_helpers import call

from eg_grpo.sid.codebook import SIDCodebook
from reward_models import CategoryConsistencyReward, RewardContext, SIDMatchReward, ValidSIDReward
from reward_models.rule_based import common_prefix_length


def _family(codebook):
    """A SID t and codebook SIDs sharing 2, 1 and 0 leading levels with it."""
    sids = [tuple(int(c) for c in s) for s in codebook.valid_sids()]
    for t in sids:
        two = [s for s in sids if s[:2] == t[:2] and s != t]
        one = [s for s in sids if s[0] == t[0] and s[1] != t[1]]
        zero = [s for s in sids if s[0] != t[0]]
        if two and one and zero:
            return t, two[0], one[0], zero[0]
    raise AssertionError("the fixture codebook has no SID family")


def _columns(n, clicked=(), purchased=(), exposed=()):
    return {
        "clicked_sids": [[list(s) for s in clicked]] * n,
        "purchased_sids": [[list(s) for s in purchased]] * n,
        "exposed_sids": [[list(s) for s in exposed]] * n,
    }


def test_common_prefix_length():
    assert common_prefix_length((1, 2, 3), (1, 2, 9)) == 2
    assert common_prefix_length((1, 2, 3), [1, 2, 3]) == 3
    assert common_prefix_length((4, 2, 3), (1, 2, 3)) == 0


def test_sid_match_partial_prefix_credit_hand_checked(context, rm_codebook, rm_vocab):
    t, two, one, zero = _family(rm_codebook)
    reward = SIDMatchReward(
        context, sources={"purchased": 1.0, "clicked": 0.5, "exposed": 0.05}, prefix_credit=[0.2, 0.6]
    )
    out = call(reward, rm_vocab, [t, two, one, zero], **_columns(4, clicked=[t], exposed=[zero]))
    # exact click 0.5; 2 levels: 0.5*0.6; 1 level: 0.5*0.2; exact exposure 0.05 (no prefix with the click)
    assert out == pytest.approx([0.5, 0.3, 0.1, 0.05])
    # a purchase of the same SID outranks the click: the best credit over sources is kept
    out = call(reward, rm_vocab, [t, two], **_columns(2, clicked=[t], purchased=[t]))
    assert out == pytest.approx([1.0, 0.6])


def test_sid_match_default_prefix_credit_is_linear(context, rm_codebook, rm_vocab):
    t, two, one, zero = _family(rm_codebook)
    reward = SIDMatchReward(context, sources={"clicked": 1.0})
    out = call(reward, rm_vocab, [t, two, one, zero], **_columns(4, clicked=[t]))
    assert out == pytest.approx([1.0, 0.5 * 2 / 3, 0.5 * 1 / 3, 0.0])


def test_sid_match_none_without_targets_and_penalty_for_invalid(context, rm_codebook, rm_vocab):
    t, *_ = _family(rm_codebook)
    absent = tuple(k - 1 for k in rm_codebook.codebook_sizes)  # well formed, but holds no item
    assert not rm_codebook.contains(absent)
    reward = SIDMatchReward(context, sources={"clicked": 1.0}, invalid_penalty=-2.5)
    out = call(reward, rm_vocab, [t, None, absent], **_columns(3))
    assert out == [None, -2.5, -2.5]
    # `exposed` is not a configured source here: an exposed SID does not count
    assert call(reward, rm_vocab, [t], **_columns(1, exposed=[t])) == [None]


def test_rewards_read_token_ids_not_text(context, rm_codebook, rm_vocab):
    t, *_ = _family(rm_codebook)
    reward = SIDMatchReward(context, sources={"clicked": 1.0})
    cols = _columns(2, clicked=[t])
    good_ids = rm_vocab.encode(t)
    # garbage text, valid ids: full credit
    out = reward(prompts=["p", "p"], completions=["#!?", ""], completion_ids=[good_ids, good_ids], **cols)
    assert out == [1.0, 1.0]
    # the SID's own text, but ids that spell nothing: the penalty
    text = "".join(f"<{'abc'[i]}_{c}>" for i, c in enumerate(t))
    out = reward(prompts=["p", "p"], completions=[text, text], completion_ids=[[0, 1], good_ids[:-2]], **cols)
    assert out == [-1.0, -1.0]


def test_sid_match_rejects_bad_config(context):
    with pytest.raises(ValueError, match="prefix_credit needs 2 values"):
        SIDMatchReward(context, prefix_credit=[0.1])
    with pytest.raises(ValueError, match="sources must be"):
        SIDMatchReward(context, sources={"bought": 1.0})
    with pytest.raises(ValueError, match="needs RewardContext.vocab"):
        SIDMatchReward(RewardContext())


def test_category_consistency(context, tiny_log, rm_codebook, rm_vocab):
    reward = CategoryConsistencyReward(context)
    t, _, _, zero = _family(rm_codebook)
    top_of = dict(zip(tiny_log.items["item_id"], tiny_log.items["category_path"].map(lambda p: p[0])))
    category = top_of[int(rm_codebook.items_of(t)[0])]
    out = call(reward, rm_vocab, [t, zero, t, None], query_category=[category, category, "", category])
    assert out == [1.0, 0.0, None, -1.0]  # level 1 is the top category in this codebook


def test_category_consistency_share_of_a_mixed_cluster(tiny_log, rm_vocab):
    items = tiny_log.items
    top = items["category_path"].map(lambda p: p[0])
    a_items = items["item_id"][top == top.iloc[0]].to_numpy()[:2]
    b_items = items["item_id"][top != top.iloc[0]].to_numpy()[:1]
    ids = np.concatenate([a_items, b_items])
    codebook = SIDCodebook(rm_vocab.codebook_sizes, ids, [[0, 0, 0]] * 3, method="reference")
    reward = CategoryConsistencyReward(RewardContext(codebook=codebook, vocab=rm_vocab, log=tiny_log))
    other = top[top != top.iloc[0]].iloc[0]
    out = call(reward, rm_vocab, [(0, 0, 0)] * 3, query_category=[top.iloc[0], other, "Not A Category"])
    assert out == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_valid_sid(context, rm_codebook, rm_vocab):
    t, *_ = _family(rm_codebook)
    absent = tuple(k - 1 for k in rm_codebook.codebook_sizes)
    assert call(ValidSIDReward(context, invalid_penalty=-0.5), rm_vocab, [t, None, absent]) == [
        1.0,
        -0.5,
        -0.5,
    ]


def test_missing_column_names_the_reward(context, rm_codebook, rm_vocab):
    t, *_ = _family(rm_codebook)
    with pytest.raises(KeyError, match="sid_match.*clicked_sids"):
        call(SIDMatchReward(context, sources={"clicked": 1.0}), rm_vocab, [t], request_id=[1])
