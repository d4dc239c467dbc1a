"""The rank-aware reward (MiniOneRec's ranking reward): hand-computed values on hand-made beam groups, expert
rows, and its refusal under sampled rollouts."""

from __future__ import annotations

import math

import pytest
from reward_helpers import call

from reward_models import BUILTINS, RankAwareReward, build_reward_funcs
from reward_models.rank_aware import rank_penalties


def _sids(codebook, n):
    return [tuple(int(c) for c in s) for s in codebook.valid_sids()[:n]]


def _columns(group_sizes_and_targets, request_ids=None):
    """Per-row columns for consecutive groups: [(G, purchased, clicked), ...]."""
    columns = {"purchased_sids": [], "clicked_sids": [], "exposed_sids": [], "request_id": []}
    for g, (size, purchased, clicked) in enumerate(group_sizes_and_targets):
        for _ in range(size):
            columns["purchased_sids"].append([list(s) for s in purchased])
            columns["clicked_sids"].append([list(s) for s in clicked])
            columns["exposed_sids"].append([])
            columns["request_id"].append(g if request_ids is None else request_ids[g])
    return columns


def test_rank_penalties_by_hand():
    # w_r = 1/log2(r+2) for G=4: 1, 1/log2(3), 1/2, 1/log2(5); W = their sum
    w = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)]
    W = sum(w)  # 1 + 0.63093 + 0.5 + 0.43068 = 2.56161
    assert W == pytest.approx(2.561606, abs=1e-6)
    assert rank_penalties(4) == pytest.approx([-1 / W, -0.630930 / W, -0.5 / W, -0.430677 / W], abs=1e-6)
    assert sum(rank_penalties(4)) == pytest.approx(-1.0)
    # higher-ranked misses cost more
    assert rank_penalties(4) == sorted(rank_penalties(4))


def test_values_on_hand_made_groups(context, rm_codebook, rm_vocab):
    a, b, c, d, e = _sids(rm_codebook, 5)
    reward = RankAwareReward(context, group_size=4)
    W = 2.561606
    # group 0: the purchase `a` at rank 2, the click `b` at rank 3; misses at ranks 0 and 1
    # group 1: no hit at all -> 0 everywhere
    # group 2: an invalid completion at rank 0 is a miss; the click `c` hit at rank 1
    sids = [d, e, a, b] + [c, d, e, a] + [None, c, a, d]
    columns = _columns([(4, [a], [b]), (4, [b], []), (4, [], [c])])
    values = call(reward, rm_vocab, sids, **columns)
    expected = [-1 / W, -0.630930 / W, 1.0, 1.0] + [0.0] * 4 + [-1 / W, 1.0, -0.5 / W, -0.430677 / W]
    assert values == pytest.approx(expected, abs=1e-5)


def test_hit_reward_zero_is_minionerecs_ranking_only(context, rm_codebook, rm_vocab):
    a, b, c, _, _ = _sids(rm_codebook, 5)
    reward = RankAwareReward(context, hit_reward=0.0, sources=["purchased"], group_size=2)
    # the click `b` is no hit with sources=[purchased]; log2(2)=1, log2(3)=1.585 -> W = 1 + 0.63093
    values = call(reward, rm_vocab, [b, a, c, b], **_columns([(2, [a], [b]), (2, [a], [b])]))
    assert values == pytest.approx([-1 / 1.630930, 0.0, 0.0, 0.0], abs=1e-5)


def test_an_expert_row_turns_on_the_rank_penalty_of_its_group(context, rm_codebook, rm_vocab):
    """Experts replace the last rows: a group of policy misses gets its rank penalties from the expert's hit."""
    a, b, c, d, e = _sids(rm_codebook, 5)
    reward = RankAwareReward(context, group_size=4)
    columns = _columns([(4, [a], [])])
    without = call(reward, rm_vocab, [b, c, d, e], **columns)
    with_expert = call(reward, rm_vocab, [b, c, d, a], **columns)  # row 3 spliced: the logged purchase
    W = 2.561606
    assert without == [0.0] * 4
    assert with_expert == pytest.approx([-1 / W, -0.630930 / W, -0.5 / W, 1.0], abs=1e-5)


def test_rows_that_are_not_whole_groups_are_refused(context, rm_codebook, rm_vocab):
    a, b, *_ = _sids(rm_codebook, 2)
    reward = RankAwareReward(context, group_size=2)
    with pytest.raises(ValueError, match="are not whole groups of 2"):
        call(reward, rm_vocab, [a, b, a], **_columns([(3, [a], [])]))
    with pytest.raises(ValueError, match="not one prompt's group"):
        call(reward, rm_vocab, [a, b], **_columns([(1, [a], []), (1, [a], [])]))
    with pytest.raises(ValueError, match="group_size is unset"):
        call(RankAwareReward(context), rm_vocab, [a, b], **_columns([(2, [a], [])]))


def test_it_is_a_builtin_combinable_with_the_others(context, rm_codebook, rm_vocab):
    assert BUILTINS["rank_aware"][0] is RankAwareReward
    funcs, weights = build_reward_funcs(
        [{"name": "sid_match"}, {"name": "rank_aware", "weight": 0.5, "hit_reward": 0.0, "group_size": 2}], context
    )
    assert [f.__name__ for f in funcs] == ["sid_match", "rank_aware"] and weights == [1.0, 0.5]
    a, b, *_ = _sids(rm_codebook, 2)
    values = call(funcs[1], rm_vocab, [b, a], **_columns([(2, [a], [])]))
    assert values == pytest.approx([-1 / 1.630930, 0.0], abs=1e-5)


def _config(tmp_path, sid_dir, **overrides):
    from eg_grpo.config import EGGRPOConfig

    settings = dict(output_dir=str(tmp_path / "rl"), sid_dir=str(sid_dir), num_generations=4,
                    per_device_train_batch_size=8, use_cpu=True, report_to="none")  # fmt: skip
    return EGGRPOConfig(**{**settings, **overrides})


def test_the_rl_stage_refuses_it_under_sampled_rollouts_and_sizes_it_under_beams(tmp_path, tiny_sid_dir, context):
    from eg_grpo.rl import check_rewards_fit_rollouts

    funcs, _ = build_reward_funcs([{"name": "sid_match"}, {"name": "rank_aware"}], context)
    with pytest.raises(ValueError, match="exists only under rollout_mode='beam'"):
        check_rewards_fit_rollouts(funcs, _config(tmp_path, tiny_sid_dir, rollout_mode="sample"))
    beam = _config(tmp_path, tiny_sid_dir, rollout_mode="beam")
    check_rewards_fit_rollouts(funcs, beam)
    assert funcs[1].reward_fn.group_size == 4  # num_generations
    with pytest.raises(ValueError, match="evaluation rollouts are sampled"):
        check_rewards_fit_rollouts(funcs, _config(tmp_path, tiny_sid_dir, rollout_mode="beam", eval_strategy="steps",
                                                  eval_steps=5, per_device_eval_batch_size=4))  # fmt: skip
    sized, _ = build_reward_funcs([{"name": "rank_aware", "group_size": 8}], context)
    with pytest.raises(ValueError, match="group_size=8 was given but the rollouts have num_generations=4"):
        check_rewards_fit_rollouts(sized, beam)
