"""EGGRPOTrainer on the tiny model: training, expert placement, hand-computed advantages, resume."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainerCallback
from trl import ModelConfig

from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments
from eg_grpo.rl.stage import build_trainer
from eg_grpo.rl.trainer import EXPERT_COLUMN, EGGRPOTrainer, check_trl_hooks

G = 4


def make_args(tmp_path, sid_dir, **overrides) -> EGGRPOConfig:
    settings = dict(
        output_dir=str(tmp_path / "run"), sid_dir=str(sid_dir), num_generations=G, num_expert_samples=2,
        per_device_train_batch_size=8, gradient_accumulation_steps=1, max_steps=2, learning_rate=1e-2,
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        gradient_checkpointing=False, seed=0, disable_tqdm=True,
    )  # fmt: skip
    settings.update(overrides)
    return EGGRPOConfig(**settings)


def make_trainer(tmp_path, data_dir, sid_dir, sft_dir, rewards=None, **overrides) -> EGGRPOTrainer:
    script = EGGRPOScriptArguments(data_dir=str(data_dir), rewards=rewards or [{"name": "sid_match"}],
                                   max_train_rows=48, chain=False)  # fmt: skip
    return build_trainer(
        script, make_args(tmp_path, sid_dir, **overrides), ModelConfig(model_name_or_path=str(sft_dir))
    )


def record_outputs(trainer: EGGRPOTrainer) -> list[tuple[list[dict], dict]]:
    """Wraps the scoring hook to keep (rows, output) of every generation batch."""
    seen = []
    original = trainer._generate_and_score_completions

    def wrapper(inputs):
        out = original(inputs)
        seen.append(([dict(r) for r in inputs], {k: v for k, v in out.items()}))
        return out

    trainer._generate_and_score_completions = wrapper
    return seen


def test_hooks_of_the_installed_trl_match():
    check_trl_hooks()

    class Renamed:
        def _generate_and_score_completions(self, batch):
            pass

    with pytest.raises(RuntimeError, match="pinned to trl 1.16"):
        check_trl_hooks(Renamed)


@pytest.mark.parametrize("rollout_mode", ["sample", "beam"])
@pytest.mark.parametrize("k", [0, 2])
def test_training_steps_change_every_parameter_and_place_experts(tmp_path, tiny_data_dir, tiny_sid_dir,
                                                                 tiny_sft_dir, rollout_mode, k):  # fmt: skip
    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, rollout_mode=rollout_mode,
                           num_expert_samples=k)  # fmt: skip
    seen = record_outputs(trainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    unchanged = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad and torch.equal(before[n], p)
    ]
    assert not unchanged, f"parameters not updated: {unchanged}"

    eos, L = trainer.sid_vocab.eos_token_id, trainer.codebook.num_levels
    total_experts = 0
    for rows, out in seen:
        ids, mask, experts = out["completion_ids"], out["completion_mask"], out["expert_mask"]
        assert experts.shape == (len(rows),)
        for start in range(0, len(rows), G):
            group = range(start, start + G)
            assert len({rows[i]["request_id"] for i in group}) == 1
            completions = [tuple(ids[i][mask[i].bool()].tolist()) for i in group]
            assert all(trainer.sid_vocab.decode(c) is not None for c in completions), "invalid SID in a group"
            if rollout_mode == "beam":  # one beam search per group: distinct SIDs among policy rows
                policy = [c for c, i in zip(completions, group) if not experts[i]]
                assert len(set(policy)) == len(policy)
            kept = {completions[j] for j in range(G - k)}
            candidates = [tuple(c) for c in rows[start][EXPERT_COLUMN]]
            expected = min(k, len([c for c in dict.fromkeys(candidates) if c not in kept]))
            expert_slots = [j for j, i in enumerate(group) if experts[i]]
            assert expert_slots == list(range(G - k, G - k + expected)), "experts not where planned"
            for j in expert_slots:
                assert completions[j] in candidates
                assert len(completions[j]) == L + 1 and completions[j][-1] == eos  # mask covers SID + eos
            total_experts += expected
    assert (total_experts > 0) == (k > 0)


class ExpertFlagReward:
    """1 for expert rows, 0 otherwise; records the columns it was called with."""

    __name__ = "expert_flag"

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions, completion_ids, **columns):
        self.calls.append(columns)
        return [1.0 if flag else 0.0 for flag in columns["is_expert"]]


@pytest.mark.parametrize("k", [0, 1])
def test_advantages_match_hand_computation(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, k):
    reference = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir)
    reward = ExpertFlagReward()
    trainer = EGGRPOTrainer(
        model=str(tiny_sft_dir), reward_funcs=[reward], train_dataset=reference.train_dataset,
        processing_class=reference.processing_class,
        args=make_args(tmp_path, tiny_sid_dir, num_expert_samples=k, max_steps=1),
    )  # fmt: skip
    seen = record_outputs(trainer)
    trainer.train()

    columns = reward.calls[0]
    for name in ("request_id", "clicked_sids", "purchased_sids", "exposed_sids", EXPERT_COLUMN, "is_expert"):
        assert name in columns, f"reward did not receive column {name}"
    _, out = seen[0]
    experts = out["expert_mask"].view(-1, G)
    advantages = out["advantages"].view(-1, G)
    for group_experts, group_adv in zip(experts, advantages):
        if group_experts.any():
            # rewards (0, 0, 0, 1): mean 1/4, Bessel std sqrt((3·(1/4)² + (3/4)²)/3) = 1/2
            expected = torch.tensor([-0.25, -0.25, -0.25, 0.75]) / (0.5 + 1e-4)
        else:
            expected = torch.zeros(G)  # zero spread: no signal, as in vanilla GRPO under sparse rewards
        torch.testing.assert_close(group_adv, expected, rtol=0, atol=1e-6)
    assert bool(experts.any()) == (k > 0)


class StopAfter(TrainerCallback):
    """Simulates a killed process: raises once `step` optimizer steps are done (after their checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_killed_run_resumes_to_the_same_result(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2)
    full = make_trainer(tmp_path / "full", tiny_data_dir, tiny_sid_dir, tiny_sft_dir, **common)
    full.train()

    killed = make_trainer(tmp_path / "resumed", tiny_data_dir, tiny_sid_dir, tiny_sft_dir, **common)
    killed.add_callback(StopAfter(3))
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = make_trainer(tmp_path / "resumed", tiny_data_dir, tiny_sid_dir, tiny_sft_dir, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "run" / "checkpoint-2"))

    assert resumed.state.global_step == full.state.global_step == 4
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{name} differs after resume")


def test_beam_rollouts_by_the_sid_beam_search_equal_generates(tmp_path, tiny_data_dir, tiny_sid_dir,
                                                               tiny_sft_dir, monkeypatch):  # fmt: skip
    import eg_grpo.rl.trainer as trainer_module
    from eg_grpo.decoding import SIDTrie

    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, rollout_mode="beam")
    trainer.model.train()  # beam rollouts happen in training mode only
    tokenizer = trainer.processing_class
    prompts = [tokenizer(row["prompt"])["input_ids"] for row in trainer.train_dataset.select(range(12))]
    prompt_ids = [ids for ids in prompts for _ in range(G)]  # each prompt G times, as TRL hands groups over
    calls, real_search = [], trainer_module.beam_search_batch

    def counted_search(*args, **kwargs):
        calls.append(1)
        return real_search(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "beam_search_batch", counted_search)
    fast = trainer._trie_generate(prompt_ids, G)
    assert len(calls) == 1
    with monkeypatch.context() as patch:  # the same rollouts by model.generate
        patch.setattr(trainer_module, "supports_shared_prefix", lambda model: False)
        slow = trainer._trie_generate(prompt_ids, G)
    assert len(calls) == 1 and len(fast) == len(prompt_ids)
    assert fast == slow  # same SIDs, same beam order, in every group
    for start in range(0, len(fast), G):
        group = [tuple(c) for c in fast[start : start + G]]
        assert len(set(group)) == G and all(trainer.sid_vocab.decode(c) is not None for c in group)

    # Fewer SIDs than G: generate's placeholder beams keep every group at G rows.
    few = [list(c) for c in fast[:2]]
    trainer.sid_trie = SIDTrie.from_sid_token_ids(few, vocab_size=trainer.sid_trie.vocab_size)
    padded = trainer._trie_generate(prompt_ids[: 2 * G], G)
    assert len(calls) == 1 and len(padded) == 2 * G
