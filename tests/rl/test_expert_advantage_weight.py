"""``expert_advantage_weight``: the expert rows' advantages, and so the loss, scale by it; 1.0 changes nothing."""

from __future__ import annotations

import pytest
import torch

from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments
from eg_grpo.rl.stage import build_trainer
from eg_grpo.rl.trainer import EGGRPOTrainer

G = 4


class ExpertFlagReward:
    """1 for expert rows, 0 otherwise: the advantages are then known in closed form."""

    __name__ = "expert_flag"

    def __call__(self, prompts, completions, completion_ids, **columns):
        return [1.0 if flag else 0.0 for flag in columns["is_expert"]]


def _args(tmp_path, sid_dir, **overrides) -> EGGRPOConfig:
    settings = dict(output_dir=str(tmp_path / "run"), sid_dir=str(sid_dir), num_generations=G, num_expert_samples=1,
                    per_device_train_batch_size=8, max_steps=1, learning_rate=1e-3, lr_scheduler_type="constant",
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
                    beta=0.0, loss_type="dapo")  # fmt: skip
    return EGGRPOConfig(**{**settings, **overrides})


@pytest.mark.parametrize("weight", [0.25, 0.0, 2.0])
def test_expert_advantages_and_the_policy_gradient_scale_by_the_weight(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, weight
):
    from trl import ModelConfig

    from tests.rl.test_constrained import brute_force

    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), max_train_rows=32, chain=False)
    reference = build_trainer(
        script, _args(tmp_path, tiny_sid_dir), ModelConfig(model_name_or_path=str(tiny_sft_dir))
    )
    trainer = EGGRPOTrainer(
        model=str(tiny_sft_dir), reward_funcs=[ExpertFlagReward()], train_dataset=reference.train_dataset,
        processing_class=reference.processing_class, args=_args(tmp_path, tiny_sid_dir, expert_advantage_weight=weight),
    )  # fmt: skip
    outputs = []
    generate = trainer._generate_and_score_completions

    def record_generation(inputs):
        out = generate(inputs)
        outputs.append(out)
        return out

    trainer._generate_and_score_completions = record_generation
    trainer.train()

    out = outputs[0]
    experts = out["expert_mask"].view(-1, G)
    assert experts.any(), "no group received an expert; the test would check nothing"
    # rewards (0, 0, 0, 1): mean 1/4, Bessel std 1/2 (TRL adds 1e-4); the expert's advantage is then weighted
    unweighted = torch.tensor([-0.25, -0.25, -0.25, 0.75]) / (0.5 + 1e-4)
    weighted = unweighted * torch.tensor([1.0, 1.0, 1.0, weight])
    expected = torch.stack([weighted if e.any() else torch.zeros(G) for e in experts])  # (groups, G)
    torch.testing.assert_close(out["advantages"].view(-1, G), expected, rtol=0, atol=1e-6)

    # The loss of that batch and its gradient, against the hand-computed ones: DAPO with beta 0 and ratio 1,
    # loss = -Σ_i A_i n_i / N and ∇loss = -Σ_i A_i Σ_t ∇log π_c(y_it) / N (N: the batch's completion tokens),
    # π_c by brute force from the full logits. Unlike weight 1, this loss is not 0 by construction.
    model = trainer.model.eval()  # eval mode: TRL's dapo normaliser is then the batch's token count
    inputs = {**out, "num_items_in_batch": out["completion_mask"].sum()}
    params = [p for p in model.parameters() if p.requires_grad]
    loss = trainer._compute_loss(model, inputs)
    tokens = out["completion_mask"].sum(1).float()  # (B,)
    advantages = expected.view(-1)
    assert loss.item() == pytest.approx((-(advantages * tokens).sum() / tokens.sum()).item(), abs=1e-6)
    assert loss.item() != pytest.approx(0.0, abs=1e-3)
    grads = torch.autograd.grad(loss, params)
    input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    logps, _, _ = brute_force(trainer, input_ids, attention_mask, out["completion_ids"].shape[1])
    target = -(advantages[:, None] * logps * out["completion_mask"]).sum() / tokens.sum()
    for g, e in zip(grads, torch.autograd.grad(target, params)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_a_negative_weight_is_refused(tmp_path, tiny_sid_dir):
    with pytest.raises(ValueError, match="expert_advantage_weight=-0.5 must be >= 0"):
        _args(tmp_path, tiny_sid_dir, expert_advantage_weight=-0.5)
