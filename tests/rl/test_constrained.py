"""The trainer trains the trie-constrained policy: log-probs, gradients, valid mass, expert rows, group stats."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from trl import GRPOTrainer

from eg_grpo.rl.constrained import head_scaling
from eg_grpo.rl.group_stats import group_rewards, zero_spread_group_frac
from eg_grpo.rl.trainer import EGGRPOTrainer
from tests.rl.test_trainer import ExpertFlagReward, G, make_args, make_trainer, record_outputs


def batch_of_sids(trainer: EGGRPOTrainer, rows: int = 6, seed: int = 0):
    """Prompt + valid-SID completions, as TRL scores them: ``(input_ids, attention_mask, T)``."""
    sids = trainer.codebook.sid_token_ids(trainer.sid_vocab)
    pick = torch.randperm(len(sids), generator=torch.Generator().manual_seed(seed))[:rows]
    completions = torch.tensor([sids[i] for i in pick])  # (rows, L + 1)
    prompts = [trainer.train_dataset[i]["prompt"] for i in range(rows)]
    prompt_ids = trainer._tokenize_prompts(prompts)[0]  # TRL's own tokenisation of the prompts
    width = max(map(len, prompt_ids))
    pad = trainer.processing_class.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompt_ids])  # left-padded (rows, P)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
    input_ids = torch.cat([ids, completions], dim=1)
    attention_mask = torch.cat([mask, torch.ones_like(completions)], dim=1)
    return input_ids, attention_mask, completions.shape[1]


def brute_force(trainer: EGGRPOTrainer, input_ids, attention_mask, T: int):
    """log π_c and its entropy from the full ``(rows, T, V)`` logits renormalised over ``allowed_tokens``."""
    logits = trainer.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -T - 1 : -1]
    logits = logits.float() / trainer.temperature
    completions = input_ids[:, -T:]
    logps, entropy = [], []
    for t in range(T):
        allowed = trainer.sid_trie.allowed_tokens(completions[:, :t])  # (rows, V)
        log_pc = logits[:, t].masked_fill(~allowed, float("-inf")).log_softmax(-1)
        logps.append(log_pc.gather(1, completions[:, t : t + 1]).squeeze(1))
        entropy.append(-(log_pc.exp() * log_pc.masked_fill(~allowed, 0)).sum(-1))
    full = logits.log_softmax(-1).gather(2, completions[..., None]).squeeze(-1)
    return torch.stack(logps, 1), torch.stack(entropy, 1), full


def test_log_probs_are_those_of_the_trie_renormalised_policy(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, temperature=0.7)
    input_ids, attention_mask, T = batch_of_sids(trainer)
    with torch.no_grad():
        logps, entropy, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention_mask, T, batch_size=4, compute_entropy=True
        )  # two chunks of TRL's loop: 4 + 2 rows
        expected, expected_entropy, full = brute_force(trainer, input_ids, attention_mask, T)
    torch.testing.assert_close(logps, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy, expected_entropy, rtol=0, atol=1e-5)
    assert (logps[:, -1] == 0).all()  # the end token is forced after the last level: log π_c = 0
    assert (full < expected - 1e-3).any()  # the full-vocabulary log-probs differ (what TRL alone would use)


def test_loss_gradient_is_the_constrained_policy_gradient(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, loss_type="dapo")
    input_ids, attention_mask, T = batch_of_sids(trainer, rows=G)
    P = input_ids.shape[1] - T
    advantages = torch.tensor([-0.5, -0.5, -0.5, 1.5])  # row 3: a positive-advantage expert
    inputs = {
        "prompt_ids": input_ids[:, :P], "prompt_mask": attention_mask[:, :P], "completion_ids": input_ids[:, P:],
        "completion_mask": attention_mask[:, P:], "advantages": advantages,
        "num_items_in_batch": attention_mask[:, P:].sum(), "expert_mask": torch.tensor([False, False, False, True]),
    }  # fmt: skip
    model = trainer.model.eval()  # eval mode: TRL's dapo normaliser is then the batch's token count
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(trainer._compute_loss(model, inputs), params)
    # Expected: -Σ_i A_i Σ_t ∇ log π_c(y_it) / tokens, with π_c from the full logits (brute force).
    logps, _, _ = brute_force(trainer, input_ids, attention_mask, T)
    target = -(advantages[:, None] * logps).sum() / inputs["num_items_in_batch"]
    expected = torch.autograd.grad(target, params)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)

    # One SGD step along it raises the expert's constrained log-likelihood.
    with torch.no_grad():
        before = brute_force(trainer, input_ids, attention_mask, T)[0][3].sum()
        for p, g in zip(params, grads):
            p -= 0.05 * g
        after = brute_force(trainer, input_ids, attention_mask, T)[0][3].sum()
    assert after > before + 1e-3, (before.item(), after.item())


def first_token_valid_mass(trainer: EGGRPOTrainer, rows: int = 16) -> float:
    input_ids, attention_mask, T = batch_of_sids(trainer, rows=rows)
    with torch.no_grad():
        logits = trainer.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -T - 1]
    allowed = trainer.sid_trie.allowed_tokens(input_ids[:, :0])  # (rows, V): the first-level tokens
    return (logits.float().softmax(-1) * allowed).sum(-1).min().item()


def test_the_constrained_objective_keeps_more_mass_on_the_catalogue_than_the_full_vocabulary_one(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    # The contrast of the module docstring, run: the same vanilla-GRPO run (seed, data, trie rollouts), once
    # with the constrained log-probs and once with TRL's full-vocabulary ones. The full-vocabulary gradient
    # carries -∇ log Z, which pushes negative-advantage rows' mass off the catalogue; measured here (CPU,
    # 8 steps at lr 1e-2) 0.561 -> 0.494 against 0.561 -> 0.708 for the smallest first-token valid mass.
    after = {}
    for arm in ("constrained", "full"):
        trainer = make_trainer(tmp_path / arm, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, num_expert_samples=0,
                               max_steps=8)  # fmt: skip
        if arm == "full":  # TRL's own log-probs; generation still runs under the trie
            trainer._get_per_token_logps_and_entropies = partial(
                GRPOTrainer._get_per_token_logps_and_entropies, trainer
            )
        before = first_token_valid_mass(trainer)
        trainer.train()
        trainer.model.eval()
        after[arm] = first_token_valid_mass(trainer)
        if arm == "constrained":
            logged = [
                h["eg/valid_mass_first"] for h in trainer.state.log_history if "eg/valid_mass_first" in h
            ]
            assert len(logged) == 8 and all(0 < m <= 1 for m in logged)
    assert after["full"] < before  # the push off the catalogue the constrained objective removes
    assert after["constrained"] > after["full"] + 0.1, (before, after)


def test_expert_rows_get_no_kl_term(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir):
    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, beta=0.5, max_steps=3,
                           expert_source=["purchased", "clicked", "exposed"])  # fmt: skip
    seen = record_outputs(trainer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "kl" in h]
    for (_, out), h in zip(seen, logs):
        # Every completion is L + 1 tokens, so TRL's token mean is the sampled rows' mean × their share.
        share = (~out["expert_mask"]).float().mean().item()
        assert share < 1
        assert h["kl"] == pytest.approx(h["eg/kl_sampled"] * share, rel=1e-4, abs=1e-9)
    assert logs[-1]["eg/kl_sampled"] > 0  # the policy has moved from the reference by then


def test_experts_refuse_off_policy_updates(tmp_path, tiny_sid_dir):
    with pytest.raises(ValueError, match="needs on-policy updates"):
        make_args(tmp_path, tiny_sid_dir, num_iterations=2)
    with pytest.raises(ValueError, match="needs on-policy updates"):
        make_args(tmp_path, tiny_sid_dir, steps_per_generation=2, per_device_train_batch_size=4)
    assert make_args(tmp_path, tiny_sid_dir, num_iterations=2, num_expert_samples=0).num_iterations == 2
    assert make_args(tmp_path, tiny_sid_dir, steps_per_generation=2, gradient_accumulation_steps=4,
                     per_device_train_batch_size=4)  # fmt: skip


@pytest.mark.parametrize(
    "overrides, match",
    [({"use_transformers_continuous_batching": True}, "continuous_batching"),
     ({"min_p": 0.1}, "min_p"), ({"top_k": 5}, "top_k.*untruncated"), ({"top_p": 0.9}, "top_p.*untruncated"),
     ({"top_k": 5, "use_vllm": True}, "top_k.*untruncated"), ({"repetition_penalty": 1.2}, "repetition_penalty"),
     ({"cache_implementation": "static"}, "cache_implementation"), ({"generation_kwargs": {"top_k": 3}}, "generation_kwargs")],
)  # fmt: skip
def test_settings_the_trie_path_cannot_honour_are_errors(tmp_path, tiny_sid_dir, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_args(tmp_path, tiny_sid_dir, **overrides)
    make_args(
        tmp_path, tiny_sid_dir, constrained_decoding=False, **overrides
    )  # without the trie: TRL's business


def test_fsdp_is_refused_pointing_to_deepspeed(tmp_path, tiny_sid_dir, monkeypatch):
    with pytest.raises(ValueError, match="FSDP is not supported.*DeepSpeed ZeRO"):
        make_args(tmp_path, tiny_sid_dir, fsdp="full_shard")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with an FSDP config sets
    with pytest.raises(ValueError, match="FSDP is not supported.*DeepSpeed ZeRO"):
        make_args(tmp_path, tiny_sid_dir)


def test_cast_lm_head_to_fp32_computes_the_constrained_logits_in_fp32(tmp_path, tiny_data_dir, tiny_sid_dir,
                                                                      tiny_sft_dir, monkeypatch):  # fmt: skip
    import eg_grpo.rl.constrained as constrained

    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir)
    input_ids, attention_mask, T = batch_of_sids(trainer, rows=2)
    seen, real = [], constrained.constrained_log_probs
    monkeypatch.setattr(constrained, "constrained_log_probs", lambda *a: seen.append(a) or real(*a))
    for flag in (False, True):
        trainer.args.cast_lm_head_to_fp32 = flag
        with torch.no_grad():
            trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, attention_mask, T)
    assert [call[-1] for call in seen] == [False, True]  # the trainer passes the setting to the head

    # bf16 hidden states (a bf16 backbone) and an fp32 head (TRL's cast): the flag keeps the product in fp32.
    hidden, labels = seen[0][0].bfloat16(), seen[0][3]
    weight, mask, vocab = seen[0][1].float(), seen[0][4], seen[0][5]
    exact = real(hidden.double(), weight.double(), None, labels, mask, vocab).logps
    fp32 = real(hidden, weight, None, labels, mask, vocab, 1.0, 1.0, None, True).logps
    bf16 = real(hidden, weight, None, labels, mask, vocab, 1.0, 1.0, None, False).logps
    torch.testing.assert_close(fp32, exact, rtol=0, atol=1e-5)
    assert (bf16 - exact).abs().max() > 1e-3  # what the setting exists to avoid


def test_unsupported_output_multipliers_are_refused():
    class Config:
        logit_scale, final_logit_softcapping, logits_scaling = 2.0, 30.0, None

    assert head_scaling(Config()) == (2.0, 30.0)
    Config.logits_scaling = 4.0
    with pytest.raises(ValueError, match="logits_scaling"):
        head_scaling(Config())


# --------------------------------------------------------------------------------------------------
# Per-group reward spread, on hand-made groups of 4
FLAT, SPREAD = [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
def test_zero_spread_groups_are_counted_from_the_groups_rewards(aggregation):
    # Two functions; groups 0 and 2 vary in one function each, 1 is flat, 3 is flat with an unscored row
    # (every function NaN: left out of the spread, as TRL leaves it out of the baseline).
    nan = float("nan")
    first = torch.tensor([SPREAD, FLAT, FLAT, [3.0, 3.0, 3.0, nan]]).flatten()
    second = torch.tensor([FLAT, FLAT, SPREAD, [1.0, 1.0, 1.0, nan]]).flatten()
    per_func = torch.stack([first, second], 1)  # (16, 2)
    rewards = group_rewards(per_func, torch.tensor([1.0, 0.5]), 4, aggregation)
    assert torch.isnan(rewards[15]) and not torch.isnan(rewards[:15]).any()
    assert zero_spread_group_frac(rewards, 4) == 0.5  # groups 1 and 3 (0-based) are flat


def parity(request_id) -> int:
    return sum(map(ord, str(request_id))) % 2


@pytest.mark.parametrize(
    "scale_rewards, aggregation",
    [("group", "sum_then_normalize"), ("batch", "sum_then_normalize"), ("none", "sum_then_normalize"),
     ("group", "normalize_then_sum")],
)  # fmt: skip
def test_logged_zero_std_group_frac_matches_the_groups(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir,
                                                       scale_rewards, aggregation):  # fmt: skip
    # Rewards: the expert flag for requests of odd parity (spread: the group holds experts),
    # a constant for the others (flat) — so the share of flat groups is known per batch.
    reference = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir)
    flag = ExpertFlagReward()

    def expert_or_constant(prompts, completions, completion_ids, **columns):
        flags = flag(prompts, completions, completion_ids, **columns)
        return [f if parity(r) else 0.5 for f, r in zip(flags, columns["request_id"])]

    trainer = EGGRPOTrainer(
        model=str(tiny_sft_dir), reward_funcs=[expert_or_constant], train_dataset=reference.train_dataset,
        processing_class=reference.processing_class,
        args=make_args(tmp_path, tiny_sid_dir, max_steps=3, scale_rewards=scale_rewards,
                       multi_objective_aggregation=aggregation, expert_source=["purchased", "clicked", "exposed"]),
    )  # fmt: skip
    seen = record_outputs(trainer)
    trainer.train()
    logged = [h["eg/zero_std_group_frac"] for h in trainer.state.log_history if "eg/zero_std_group_frac" in h]
    expected = []
    for rows, out in seen:
        groups = [rows[s]["request_id"] for s in range(0, len(rows), G)]
        has_expert = out["expert_mask"].view(-1, G).any(1).tolist()
        expected.append(sum(not (parity(r) and e) for r, e in zip(groups, has_expert)) / len(groups))
    assert logged == pytest.approx(expected)
    assert 0 < sum(expected) < len(expected)  # both kinds of group occur


# --------------------------------------------------------------------------------------------------
# Padding and activation checkpointing must not change the constrained log-probs or their gradients
def loss_inputs(trainer: EGGRPOTrainer, rows: int = G) -> dict:
    input_ids, attention_mask, T = batch_of_sids(trainer, rows=rows)
    P = input_ids.shape[1] - T
    return {
        "prompt_ids": input_ids[:, :P], "prompt_mask": attention_mask[:, :P], "completion_ids": input_ids[:, P:],
        "completion_mask": attention_mask[:, P:], "advantages": torch.tensor([-0.5, -0.5, -0.5, 1.5])[:rows],
        "num_items_in_batch": attention_mask[:, P:].sum(), "expert_mask": torch.zeros(rows, dtype=torch.bool),
    }  # fmt: skip


def test_padding_does_not_change_the_constrained_log_probs(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir)
    input_ids, attention_mask, T = batch_of_sids(trainer, rows=4)  # prompts of different lengths, left-padded
    assert (attention_mask[:, 0] == 0).any(), "no row is left-padded; the test would check nothing"
    pad = trainer.processing_class.pad_token_id
    # Completions right-padded by two positions (TRL pads shorter completions of a batch so).
    padded_ids = torch.cat([input_ids, torch.full((4, 2), pad)], dim=1)
    padded_mask = torch.cat([attention_mask, torch.zeros(4, 2, dtype=attention_mask.dtype)], dim=1)
    score = trainer._get_per_token_logps_and_entropies
    with torch.no_grad():
        logps, entropy, _ = score(trainer.model.eval(), padded_ids, padded_mask, T + 2, compute_entropy=True)
        for i in range(4):  # each row alone: no padding at all
            real = input_ids[i][attention_mask[i].bool()][None]
            alone, alone_entropy, _ = score(
                trainer.model, real, torch.ones_like(real), T, compute_entropy=True
            )
            torch.testing.assert_close(logps[i : i + 1, :T], alone, rtol=0, atol=1e-5)
            torch.testing.assert_close(entropy[i : i + 1, :T], alone_entropy, rtol=0, atol=1e-5)
    assert (logps[:, T:] == 0).all() and (entropy[:, T:] == 0).all()  # padding contributes nothing
    assert (logps[:, :T] <= 0).all() and (logps[:, : T - 1] < 0).sum() > 4  # ... the real SID levels do


def test_activation_checkpointing_gives_the_same_loss_and_gradients(tmp_path, tiny_data_dir, tiny_sid_dir,
                                                                    tiny_sft_dir):  # fmt: skip
    # The Qwen configs turn checkpointing on: the backbone hook that captures the hidden states must see the
    # same forward, and the recomputation in backward must neither re-capture nor lose the gradient.
    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, gradient_checkpointing=True,
                           loss_type="dapo", beta=0.0)  # fmt: skip
    model = trainer.model
    inputs = loss_inputs(trainer)
    # set by the training loop, read by TRL's loss in train mode
    trainer.current_gradient_accumulation_steps = 1
    params = [p for p in model.parameters() if p.requires_grad]
    calls = []  # the layer's forward is checkpointed (its own hooks stay outside): count a submodule's calls
    handle = model.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))

    def loss_and_grads():
        calls.clear()
        model.train()  # checkpointing only acts in training mode
        loss = trainer._compute_loss(model, dict(inputs))
        return loss.detach(), torch.autograd.grad(loss, params), len(calls)

    # As transformers' Trainer does at the start of `train()` when the config asks for it
    assert trainer.args.activation_checkpointing
    model.activation_checkpointing_enable(
        activation_checkpointing_kwargs=trainer.args.activation_checkpointing_kwargs
    )
    loss_ckpt, grads_ckpt, forwards_ckpt = loss_and_grads()
    model.activation_checkpointing_disable()
    loss_plain, grads_plain, forwards_plain = loss_and_grads()
    handle.remove()
    assert (forwards_ckpt, forwards_plain) == (2, 1), "checkpointing did not recompute the layer in backward"
    torch.testing.assert_close(loss_ckpt, loss_plain, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads_plain)
    for g, e in zip(grads_ckpt, grads_plain):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)
