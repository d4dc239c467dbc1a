"""The rank-aware reward (MiniOneRec's ranking reward): hand-computed values on hand-made beam groups, expert
rows, and its refusal under sampled rollouts."""

from __future__ import annotations

import math

import pytest
import torch
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
    assert math.isclose(W, 2.561606, abs_tol=1e-6)
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
        [{"name": "sid_match"}, {"name": "rank_aware", "weight": 0.5, "hit_reward": 0.0, "group_size": 2}],
        context,
    )
    assert [f.__name__ for f in funcs] == ["sid_match", "rank_aware"] and weights == [1.0, 0.5]
    a, b, *_ = _sids(rm_codebook, 2)
    values = call(funcs[1], rm_vocab, [b, a], **_columns([(2, [a], [])]))
    assert values == pytest.approx([-1 / 1.630930, 0.0], abs=1e-5)


def _config(tmp_path, sid_dir, **overrides):
    from eg_grpo.rl.config import EGGRPOConfig

    settings = dict(output_dir=str(tmp_path / "rl"), sid_dir=str(sid_dir), num_generations=4,
                    per_device_train_batch_size=8, use_cpu=True, report_to="none")  # fmt: skip
    return EGGRPOConfig(**{**settings, **overrides})


def test_the_rl_stage_refuses_it_under_sampled_rollouts_and_sizes_it_under_beams(
    tmp_path, tiny_sid_dir, context
):
    from eg_grpo.rl.stage import check_rewards_fit_rollouts

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


def _sequence_logprob(model, prompt_ids: list[int], completion: list[int]) -> float:
    """log p(completion | prompt) under ``model``, full vocabulary (what beam search sums; the trie only masks)."""
    ids = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)  # (T-1, V)
    positions = range(len(prompt_ids) - 1, ids.shape[1] - 1)
    return sum(logps[t, ids[0, t + 1]].item() for t in positions)


def test_a_beam_training_step_scores_rows_in_beam_order(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir):
    """Through the real trainer (beam rollouts, one expert per group): the rows the reward sees are each group's
    beams best first, by the sequence log-probability under the weights that searched, with the expert last;
    its values are the hand formula on those rows."""
    from trl import ModelConfig

    from eg_grpo.rl.inputs import EGGRPOScriptArguments
    from eg_grpo.rl.stage import build_trainer

    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), rewards=[{"name": "sid_match"}, {"name": "rank_aware"}],
                                   max_train_rows=16, chain=False)  # fmt: skip
    args = _config(tmp_path, tiny_sid_dir, rollout_mode="beam", num_expert_samples=1, max_steps=1, logging_steps=1,
                   save_strategy="no", disable_tqdm=True, learning_rate=1e-3)  # fmt: skip
    trainer = build_trainer(script, args, ModelConfig(model_name_or_path=str(tiny_sft_dir)))
    checked_reward = trainer.reward_funcs[1]
    reward = checked_reward.reward_fn
    assert reward.group_size == 4
    tokenizer, calls = trainer.processing_class, []

    def spy(prompts, completions, completion_ids, **columns):
        # called before the step's update: the model still has the weights that ran the beam search
        was_training = trainer.model.training
        trainer.model.eval()
        logps = [_sequence_logprob(trainer.model, tokenizer(text=p)["input_ids"], list(c))
                 for p, c in zip(prompts, completion_ids)]  # fmt: skip
        trainer.model.train(was_training)
        values = reward(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
        calls.append(([list(c) for c in completion_ids], columns, values, logps))
        return values

    checked_reward.reward_fn = spy
    trainer.train()
    assert len(calls) == 1
    completion_ids, columns, values, logps = calls[0]
    penalties = rank_penalties(4)
    assert len(completion_ids) == 8  # per_device_train_batch_size: two groups of 4
    spliced = 0
    for start in (0, 4):
        rows = range(start, start + 4)
        experts = [bool(columns["is_expert"][i]) for i in rows]
        # the expert takes the lowest-ranked slot, unless the policy's beams already hold every candidate
        assert experts in ([False, False, False, True], [False] * 4)
        policy = [logps[i] for i, e in zip(rows, experts) if not e]
        assert all(later <= earlier + 1e-4 for earlier, later in zip(policy, policy[1:])), policy
        targets = {tuple(s) for k in ("purchased_sids", "clicked_sids") for s in columns[k][start]}
        hits = [tuple(trainer.sid_vocab.decode(completion_ids[i]) or ()) in targets for i in rows]
        assert any(hits) and all(
            h for h, e in zip(hits, experts) if e
        )  # an expert is a logged purchase or click
        spliced += sum(experts)
        assert values[start : start + 4] == pytest.approx(
            [1.0 if h else penalties[r] for r, h in enumerate(hits)]
        )
    assert spliced >= 1
