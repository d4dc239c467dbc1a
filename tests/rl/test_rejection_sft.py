"""The reward-aware control (``training_objective: rejection_sft``): the selection of each group by hand, the loss
as a hand-computed NLL of the trie-constrained policy, gradients only through the kept rows, the expert kept when
it has the top reward, and an RL stage folder that evaluation accepts."""

from __future__ import annotations

import math

import pytest
import torch
from trl import ModelConfig

from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments
from eg_grpo.rl.rejection_sft import RejectionSFTTrainer, selection_weights
from eg_grpo.rl.stage import build_trainer
from eg_grpo.tracking import run_variant

G, K = 4, 2
NAN = float("nan")


def rsft_config(tmp_path, sid_dir, **overrides) -> EGGRPOConfig:
    settings = dict(output_dir=str(tmp_path / "rsft"), sid_dir=str(sid_dir), num_generations=G,
                    per_device_train_batch_size=8, num_expert_samples=K, max_steps=2, learning_rate=5e-4,
                    lr_scheduler_type="constant", logging_steps=1, save_strategy="no", use_cpu=True,
                    report_to="none", disable_tqdm=True, training_objective="rejection_sft", seed=0)  # fmt: skip
    return EGGRPOConfig(**{**settings, **overrides})


def expert_reward(completions, is_expert, **kwargs):
    """1 on the spliced expert rows, 0 on the policy's samples: the experts have the top reward by construction."""
    return [float(e) for e in is_expert]


# ------------------------------------------------------------------------------------------------
# The selection, by hand
def test_best_keeps_the_first_highest_row_of_each_group_with_a_spread():
    rewards = torch.tensor([0.1, 0.9, 0.3, 0.9,  # tie at the top: the first one (row 1)
                            0.5, 0.5, 0.5, 0.5,  # no spread: nothing is best
                            NAN, 0.2, NAN, 0.0])  # fmt: skip  # unscored rows never win
    weights = selection_weights(rewards, G, "rejection_sft", "best")
    assert weights.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]


def test_above_mean_keeps_every_row_strictly_above_its_group_mean():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5,  # mean .375: rows 0 and 3
                            0.1, 0.1, 0.1, 0.1,  # flat: nothing (whatever the float mean)
                            NAN, 2.0, 1.0, NAN])  # fmt: skip  # mean of the scored rows, 1.5
    weights = selection_weights(rewards, G, "rejection_sft", "above_mean")
    assert weights.tolist() == [1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]


def test_reward_weighted_is_the_softmax_of_r_over_tau_per_group():
    rewards = torch.tensor([0.0, math.log(3.0), NAN, 0.0])
    weights = selection_weights(rewards, G, "reward_weighted_sft", temperature=1.0)
    assert torch.allclose(weights, torch.tensor([0.2, 0.6, 0.0, 0.2]))  # e^0 : 3 : e^0, unscored 0
    weights = selection_weights(rewards * 2, G, "reward_weighted_sft", temperature=2.0)
    assert torch.allclose(weights, torch.tensor([0.2, 0.6, 0.0, 0.2]))


def test_settings_the_control_cannot_honour_are_refused(tmp_path, tiny_sid_dir):
    with pytest.raises(ValueError, match="rejection_selection='top2' must be one of"):
        rsft_config(tmp_path, tiny_sid_dir, rejection_selection="top2")
    with pytest.raises(ValueError, match="reward_weight_temperature=0.0 must be > 0"):
        rsft_config(
            tmp_path, tiny_sid_dir, training_objective="reward_weighted_sft", reward_weight_temperature=0.0
        )
    with pytest.raises(ValueError, match="set sft_log_probs: full"):
        rsft_config(tmp_path, tiny_sid_dir, constrained_decoding=False)
    with pytest.raises(ValueError, match="expert_advantage_weight=0.5 scales GRPO's advantages"):
        rsft_config(tmp_path, tiny_sid_dir, expert_advantage_weight=0.5)
    with pytest.raises(ValueError, match="training_objective='rsft' must be one of"):
        rsft_config(tmp_path, tiny_sid_dir, training_objective="rsft")
    assert run_variant(rsft_config(tmp_path, tiny_sid_dir)) == "rejection_sft"  # the W&B tag


# ------------------------------------------------------------------------------------------------
# The loss on a hand-built batch
@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_data_dir, tiny_sid_dir, tiny_sft_dir):
    tmp = tmp_path_factory.mktemp("rsft_loss")
    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), max_train_rows=16, chain=False)
    trainer = build_trainer(
        script, rsft_config(tmp, tiny_sid_dir), ModelConfig(model_name_or_path=str(tiny_sft_dir))
    )
    assert isinstance(trainer, RejectionSFTTrainer)
    return trainer


def _batch(trainer, completions: list[tuple[int, ...]], weights: torch.Tensor) -> dict:
    """Two prompts of the RL rows, G completions each (all L + 1 long: no padding), loss weights as given."""
    prompts = [trainer.processing_class(text=p)["input_ids"] for p in trainer.train_dataset["prompt"][:2]]
    width = max(map(len, prompts))
    pad = trainer.processing_class.pad_token_id
    prompt_ids = torch.tensor(
        [[pad] * (width - len(p)) + p for p in prompts for _ in range(G)]
    )  # (8, P) left-pad
    prompt_mask = (
        torch.arange(width)[None]
        >= torch.tensor([width - len(p) for p in prompts]).repeat_interleave(G)[:, None]
    )
    completion_ids = torch.tensor(completions)  # (8, L + 1)
    mask = torch.ones_like(completion_ids)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask.long(), "completion_ids": completion_ids,
            "completion_mask": mask, "expert_mask": torch.zeros(len(completions), dtype=torch.bool),
            "sft_weights": weights, "sft_tokens": (weights * mask.sum(1)).sum(),
            "num_items_in_batch": mask.sum()}  # fmt: skip


def _hand_constrained_logps(trainer, batch) -> torch.Tensor:
    """log π_c(y_t) = z_y - logsumexp of z over the SIDs' next tokens after the prefix, from the full logits."""
    sids = sorted(trainer._valid_sids)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    T = batch["completion_ids"].shape[1]
    with torch.no_grad():
        logits = (
            trainer.model(input_ids=ids, attention_mask=mask).logits[:, -T - 1 : -1].float()
        )  # (rows, T, V)
    out = torch.zeros(ids.shape[0], T)
    for r, completion in enumerate(batch["completion_ids"].tolist()):
        for t in range(T):
            allowed = sorted({s[t] for s in sids if list(s[:t]) == completion[:t]})
            out[r, t] = logits[r, t, completion[t]] - torch.logsumexp(logits[r, t, allowed], 0)
    return out


def _completions(trainer) -> list[tuple[int, ...]]:
    sids = sorted(trainer._valid_sids)
    return [sids[(37 * i) % len(sids)] for i in range(2 * G)]  # eight distinct valid SIDs


def test_the_loss_is_the_hand_computed_nll_of_the_kept_rows(trainer):
    # Group 0's best is row 2 (0.9), group 1's is row 5 (first of the tied 0.7s): hand-derived selection.
    rewards = torch.tensor([0.1, 0.5, 0.9, 0.2, 0.0, 0.7, 0.7, 0.1])
    weights = selection_weights(rewards, G, "rejection_sft", "best")
    assert weights.tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    batch = _batch(trainer, _completions(trainer), weights)
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, batch)
    logps = _hand_constrained_logps(trainer, batch)  # (8, L + 1)
    L1 = logps.shape[1]
    expected = -(logps[2].sum() + logps[5].sum()) / (2 * L1)  # mean NLL per token of the two kept rows
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert trainer._metrics["train"]["rsft/nll"][-1] == pytest.approx(expected.item(), rel=1e-5)
    # above the mean: rows 1, 2 of group 0 (mean .425) and rows 5, 6 of group 1 (mean .375)
    weights = selection_weights(rewards, G, "rejection_sft", "above_mean")
    assert weights.tolist() == [0, 1, 1, 0, 0, 1, 1, 0]
    loss = trainer._compute_loss(trainer.model, _batch(trainer, _completions(trainer), weights))
    assert loss.item() == pytest.approx(-(logps[[1, 2, 5, 6]].sum() / (4 * L1)).item(), rel=1e-5)


def test_reward_weighted_and_the_kl_term_by_hand(trainer):
    rewards = torch.tensor([0.0, math.log(3.0), 0.0, NAN, 1.0, 1.0, 1.0, 1.0])
    weights = selection_weights(rewards, G, "reward_weighted_sft")  # [.2, .6, .2, 0] and [.25] * 4
    batch = _batch(trainer, _completions(trainer), weights)
    logps = _hand_constrained_logps(trainer, batch)  # (8, L + 1)
    L1 = logps.shape[1]
    nll = -(weights[:, None] * logps).sum() / (weights.sum() * L1)
    assert trainer._compute_loss(trainer.model, batch).item() == pytest.approx(nll.item(), rel=1e-5)
    # beta > 0: EG-GRPO's k3 term on the policy's own samples only, over all the step's completion tokens
    batch["expert_mask"] = torch.tensor([False, False, False, True] * 2)
    batch["ref_per_token_logps"] = logps + 0.5
    trainer.beta = 0.1
    try:
        loss = trainer._compute_loss(trainer.model, batch)
    finally:
        trainer.beta = 0.0
    k3 = math.exp(0.5) - 0.5 - 1
    assert loss.item() == pytest.approx(nll.item() + 0.1 * k3 * (6 * L1) / (8 * L1), rel=1e-4)


def test_full_log_probs_are_the_plain_softmax(trainer):
    weights = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
    batch = _batch(trainer, _completions(trainer), weights)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    target = batch["completion_ids"][0]  # (L + 1,)
    T = len(target)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=mask).logits[0, -T - 1 : -1].float()  # (T, V)
    expected = -torch.log_softmax(logits, -1).gather(1, target[:, None]).mean()
    trainer.args.sft_log_probs = "full"
    try:
        loss = trainer._compute_loss(trainer.model, batch)
    finally:
        trainer.args.sft_log_probs = "constrained"
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    constrained = trainer._compute_loss(trainer.model, batch)
    assert constrained.item() < loss.item()  # π_c renormalises over the allowed tokens: higher log-probs


def _grads(trainer, batch) -> dict[str, torch.Tensor]:
    trainer.model.zero_grad(set_to_none=True)
    trainer._compute_loss(trainer.model, batch).backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad(set_to_none=True)
    return grads


def test_gradients_flow_only_through_the_kept_rows(trainer):
    weights = torch.tensor([0.0, 0, 1, 0, 0, 1, 0, 0])
    completions = _completions(trainer)
    kept = _grads(trainer, _batch(trainer, completions, weights))
    assert kept and any(g.abs().sum() > 0 for g in kept.values())
    # other valid SIDs in every unselected row: the gradient does not change
    sids = sorted(trainer._valid_sids)
    swapped = [
        c if w else sids[(11 * i + 5) % len(sids)] for i, (c, w) in enumerate(zip(completions, weights))
    ]
    assert swapped != completions
    moved = _grads(trainer, _batch(trainer, swapped, weights))
    assert kept.keys() == moved.keys()
    for name in kept:
        torch.testing.assert_close(moved[name], kept[name], rtol=1e-5, atol=1e-7, msg=name)
    # nothing kept: a zero loss with a zero gradient everywhere
    nothing = _grads(trainer, _batch(trainer, completions, torch.zeros(2 * G)))
    assert all(g.abs().sum() == 0 for g in nothing.values())


# ------------------------------------------------------------------------------------------------
# Rollouts, selection and logs on a real generation batch
def test_the_expert_is_kept_when_it_has_the_top_reward(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, trainer
):
    args = rsft_config(tmp_path, tiny_sid_dir)
    rsft = RejectionSFTTrainer(model=str(tiny_sft_dir), reward_funcs=[expert_reward], args=args,
                               train_dataset=trainer.train_dataset, processing_class=trainer.processing_class,
                               codebook=trainer.codebook)  # fmt: skip
    rsft.model.train()
    rows = [dict(r) for r in trainer.train_dataset.select(range(2)) for _ in range(G)]
    out = rsft._generate_and_score_completions(rows)
    experts, weights = out["expert_mask"].view(-1, G), out["sft_weights"].view(-1, G)
    assert all(1 <= n <= K for n in experts.sum(1).tolist())  # up to K experts per group (as many as logged)
    # best: one row per group, the first expert (both experts score 1, the samples 0)
    assert weights.sum(1).tolist() == [1.0, 1.0] and (weights.bool() <= experts).all()
    first_expert = experts.float().argmax(1)
    assert weights.argmax(1).tolist() == first_expert.tolist()
    assert out["sft_tokens"].item() == pytest.approx(2 * (rsft.codebook.num_levels + 1))
    metrics = rsft._metrics["train"]
    assert metrics["rsft/selected_expert_frac"][-1] == 1.0 and metrics["rsft/selected_reward"][-1] == 1.0
    assert metrics["rsft/selected_frac"][-1] == pytest.approx(2 / (2 * G))
    assert metrics["eg/reward_sampled"][-1] == 0.0  # EG-GRPO's own reward metrics, logged as for it
    assert metrics["rewards/expert_reward/mean"][-1] == pytest.approx(experts.float().mean().item())


def test_a_short_run_writes_an_rl_stage_folder_that_evaluation_accepts(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    from eg_grpo.eval.evaluator import EvalSettings
    from eg_grpo.io import StageConflict, folder_fingerprint, read_stage
    from eg_grpo.rl.stage import run
    from eg_grpo.stages.evaluate import EvaluateArguments
    from eg_grpo.stages.evaluate import run as run_evaluate

    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), max_train_rows=16, chain=False,
                                   rewards=[{"name": "sid_match", "weight": 1.0}])  # fmt: skip
    args = rsft_config(tmp_path, tiny_sid_dir, max_steps=3)
    model = ModelConfig(model_name_or_path=str(tiny_sft_dir))
    out = run(script, args, model)
    record = read_stage(out)
    training = record["config"]["training"]
    assert record["stage"] == "rl" and training["training_objective"] == "rejection_sft"
    assert training["rejection_selection"] == "best" and "reward_weight_temperature" not in training
    assert record["inputs"]["model"]["fingerprint"] == folder_fingerprint(tiny_sft_dir)
    history = [h for h in read_json(out / "log_history.json") if "loss" in h]
    assert len(history) == 3 and all(math.isfinite(h["loss"]) for h in history)
    assert all("rsft/selected_expert_frac" in h and "eg/reward_sampled" in h for h in history)
    results = run_evaluate(
        EvaluateArguments(data_dir=str(tiny_data_dir), sid_dir=str(tiny_sid_dir), model_dir=str(out),
                          output_dir=str(tmp_path / "eval"), device="cpu"),
        EvalSettings(num_beams=5, ks=[1, 5], beam_sizes=[5], recall_num_items=[10], max_examples=8),
    )  # fmt: skip
    assert results["num_examples"] == 8 and 0.0 <= results["hr@5"] <= 1.0
    # the objectives' own fields stay out of the other objectives' records (their fingerprints do not move)
    from eg_grpo.rl.inputs import rl_stage_record

    grpo = rl_stage_record(script, rsft_config(tmp_path, tiny_sid_dir, training_objective="grpo"), model)
    assert not {"rejection_selection", "reward_weight_temperature", "sft_log_probs"} & set(
        grpo["config"]["training"]
    )
    # the EG-GRPO settings are another run
    with pytest.raises(StageConflict, match="training_objective"):
        run(script, rsft_config(tmp_path, tiny_sid_dir, max_steps=3, training_objective="grpo"), model)


def read_json(path):
    import json

    return json.loads(path.read_text())
