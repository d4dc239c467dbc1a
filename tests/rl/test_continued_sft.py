"""The supervised control (``training_objective: continued_sft``): its rows are the RL rows' (prompt, expert
SID) pairs, its budget is GRPO's, it learns the targets, and its folder is an RL stage folder."""

from __future__ import annotations

import math

import pytest
import torch
from trl import ModelConfig

from eg_grpo.data.rl_dataset import build_rl_dataset
from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.continued_sft import (
    ExpertTargetsCollator,
    control_rows,
    expert_targets,
    matched_sft_config,
    target_pairs,
)
from eg_grpo.rl.inputs import EGGRPOScriptArguments
from eg_grpo.rl.stage import build_trainer

K = 2


def rl_config(tmp_path, sid_dir, **overrides) -> EGGRPOConfig:
    settings = dict(output_dir=str(tmp_path / "control"), sid_dir=str(sid_dir), num_generations=4,
                    per_device_train_batch_size=8, num_expert_samples=K, max_steps=4, learning_rate=5e-4,
                    lr_scheduler_type="constant", logging_steps=1, save_strategy="no", use_cpu=True,
                    report_to="none", disable_tqdm=True, training_objective="continued_sft", seed=0)  # fmt: skip
    return EGGRPOConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tokenizer(tiny_sft_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_sft_dir)


@pytest.fixture(scope="module")
def rl_rows(tiny_log, tiny_codebook, tokenizer):
    from eg_grpo.sid.tokens import SIDVocab

    vocab = SIDVocab(tokenizer, tiny_codebook.codebook_sizes)
    return build_rl_dataset(tiny_log, tiny_codebook, vocab, tokenizer, max_rows=64, seed=0), vocab


def test_expert_targets_are_the_first_k_distinct_in_source_order():
    eos = 9
    experts = [[1, 2, eos], [1, 2, eos], [3, 4, eos], [5, 6, eos]]
    assert expert_targets(experts, 2) == [[1, 2, eos], [3, 4, eos]]
    assert expert_targets(experts, 5) == [[1, 2, eos], [3, 4, eos], [5, 6, eos]]


def test_rows_are_the_rl_prompts_with_their_logged_purchases_then_clicks(tiny_log, tiny_codebook, tokenizer,
                                                                         rl_rows):  # fmt: skip
    """Hand-checked against the log: each target is a purchased (then clicked) SID of that very request."""
    dataset, vocab = rl_rows
    rows = control_rows(dataset, tokenizer, K)
    assert list(rows["request_id"]) == list(dataset["request_id"])  # the same prompts, same order
    imp = tiny_log.impressions
    pairs = target_pairs(rows)
    for row, rl_row in zip(rows, dataset):
        assert row["prompt_ids"] == tokenizer(text=rl_row["prompt"])["input_ids"]  # GRPO's tokenization
        rid = row["request_id"]
        # by hand from the impressions: purchased items' SIDs first, then clicked, by position, distinct
        shown = imp[imp.request_id == rid].sort_values("position")
        wanted = []
        for flag in ("purchased", "clicked"):
            for item in shown.loc[shown[flag].astype(bool), "item_id"]:
                sid = tuple(int(c) for c in tiny_codebook.sids_of([item])[0])
                if sid not in wanted:
                    wanted.append(sid)
        assert [vocab.decode(t) for t in row["targets"]] == wanted[:K]
        assert all(t[-1] == tokenizer.eos_token_id for t in row["targets"])
        assert 1 <= len(row["targets"]) <= K
    assert len(pairs) == sum(min(K, len(e)) for e in dataset["expert_completion_ids"])
    assert any(len(r["targets"]) == K for r in rows) and any(len(r["targets"]) < K for r in rows), (
        "the tiny log should hold requests with K experts and with fewer, or this test checks less than it says"
    )


def test_a_k_no_prompt_can_fill_is_reported(tokenizer, rl_rows, caplog):
    """With one distinct expert per prompt (one logged item per request, as on Amazon Office), k=2 trains
    what k=1 trains: the user is told so, by the numbers; a k that some prompt fills gets no warning."""
    from datasets import Dataset

    eos = tokenizer.eos_token_id
    single = Dataset.from_dict({"prompt": ["a", "b"], "request_id": [1, 2],
                                "expert_completion_ids": [[[3, 4, eos], [3, 4, eos]], [[5, 6, eos]]]})  # fmt: skip
    with caplog.at_level("WARNING", logger="eg_grpo.rl.continued_sft"):
        rows = control_rows(single, tokenizer, 2)
    assert [len(t) for t in rows["targets"]] == [1, 1]
    assert "num_expert_samples=2, but no RL prompt has more than 1 distinct expert SID(s)" in caplog.text
    assert "exactly as num_expert_samples=1 would" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="eg_grpo.rl.continued_sft"):
        control_rows(rl_rows[0], tokenizer, K)  # the tiny log holds prompts with K distinct experts
    assert caplog.text == ""


def test_the_collator_puts_the_loss_on_the_targets_only():
    collate = ExpertTargetsCollator(pad_token_id=0)
    batch = collate([{"prompt_ids": [5, 6, 7], "targets": [[1, 2, 9], [3, 4, 9]]},
                     {"prompt_ids": [8], "targets": [[1, 4, 9]]}])  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1, 2, 9], [5, 6, 7, 3, 4, 9], [8, 1, 4, 9, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 1, 2, 9], [-100, -100, -100, 3, 4, 9],
                                        [-100, 1, 4, 9, -100, -100]]  # fmt: skip
    assert batch["attention_mask"].tolist() == [[1] * 6, [1] * 6, [1, 1, 1, 1, 0, 0]]


@pytest.mark.parametrize(
    ("batch", "accumulation", "prompts", "sft_accumulation"), [(8, 2, 2, 2), (6, 2, 3, 1)]
)
def test_the_budget_is_grpos(tmp_path, tiny_sid_dir, batch, accumulation, prompts, sft_accumulation):
    """Per optimizer step the control sees GRPO's prompts, batch × accumulation / G; steps, lr, schedule,
    optimizer and seed are the RL config's."""
    args = rl_config(tmp_path, tiny_sid_dir, per_device_train_batch_size=batch,
                     gradient_accumulation_steps=accumulation, steps_per_generation=accumulation, max_steps=7,
                     learning_rate=3e-4, lr_scheduler_type="cosine", warmup_steps=2, optim="adamw_torch",
                     weight_decay=0.1, max_grad_norm=0.5, seed=3)  # fmt: skip
    sft = matched_sft_config(args)
    assert sft.per_device_train_batch_size == prompts and sft.gradient_accumulation_steps == sft_accumulation
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps == batch * accumulation // 4
    for name in ("max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "optim", "weight_decay",
                 "max_grad_norm", "seed", "output_dir", "bf16", "report_to"):  # fmt: skip
        assert getattr(sft, name) == getattr(args, name), name


def test_settings_without_a_supervised_counterpart_are_refused(tmp_path, tiny_sid_dir):
    with pytest.raises(ValueError, match="num_expert_samples=0 leaves it no target"):
        rl_config(tmp_path, tiny_sid_dir, num_expert_samples=0)
    with pytest.raises(ValueError, match="expert_schedule='decay' has no supervised counterpart"):
        rl_config(tmp_path, tiny_sid_dir, expert_schedule="decay")
    with pytest.raises(ValueError, match="training_objective='dpo' must be one of"):
        rl_config(tmp_path, tiny_sid_dir, training_objective="dpo")


def _target_logprob(model, collate, rows) -> float:
    """Mean log-probability per target token of every (prompt, expert) row, teacher-forced."""
    batch = collate(list(rows))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logps = torch.log_softmax(logits[:, :-1].float(), -1)  # (rows, T-1, V)
    mask = labels != -100
    picked = logps.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked[mask].sum() / mask.sum()).item()


def test_training_counts_grpos_steps_and_prompts_and_raises_the_targets_logprob(tmp_path, tiny_data_dir,
                                                                               tiny_sid_dir, tiny_sft_dir):  # fmt: skip
    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), max_train_rows=32, chain=False)
    args = rl_config(tmp_path, tiny_sid_dir, max_steps=16, learning_rate=1e-3)  # one epoch of the 32 prompts
    trainer = build_trainer(script, args, ModelConfig(model_name_or_path=str(tiny_sft_dir)))
    rows = trainer.train_dataset
    assert len(rows) == 32  # max_train_rows, as for GRPO
    seen = []  # rows of every optimizer step, as the model receives them
    hook = trainer.model.register_forward_hook(lambda m, a, kw, out: seen.append(kw["input_ids"].shape[0])
                                               if m.training else None, with_kwargs=True)  # fmt: skip
    before = _target_logprob(trainer.model, trainer.data_collator, rows)
    trainer.train()
    hook.remove()
    after = _target_logprob(trainer.model, trainer.data_collator, rows)
    assert trainer.state.global_step == 16
    prompts_per_step = 8 // 4  # per_device_train_batch_size / num_generations
    assert len(seen) == 16
    # each step's rows are its prompts' expert rows: between prompts_per_step and K × prompts_per_step
    assert all(prompts_per_step <= n <= K * prompts_per_step for n in seen) and max(seen) > prompts_per_step
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 16 and all(math.isfinite(x) for x in losses)
    print(f"target log-prob per token: before {before:.4f}, after {after:.4f}")
    assert after > before + 0.1, (before, after)  # a real move in nats per target token, not noise


def test_the_folder_is_an_rl_stage_folder_evaluation_accepts(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    from transformers import AutoModelForCausalLM

    from eg_grpo.io import check_lineage, folder_fingerprint, read_stage
    from eg_grpo.rl.stage import run

    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), max_train_rows=16, chain=False)
    args = rl_config(tmp_path, tiny_sid_dir, max_steps=2)
    out = run(script, args, ModelConfig(model_name_or_path=str(tiny_sft_dir)))
    record = read_stage(out)
    assert record["stage"] == "rl" and record["config"]["training"]["training_objective"] == "continued_sft"
    assert record["inputs"]["model"]["fingerprint"] == folder_fingerprint(tiny_sft_dir)
    assert record["inputs"]["sids"]["fingerprint"] == folder_fingerprint(tiny_sid_dir)
    assert record["num_expert_samples"] == K
    check_lineage(data_dir=tiny_data_dir, sid_dir=tiny_sid_dir, model_dir=out)  # what evaluation runs first
    AutoModelForCausalLM.from_pretrained(out)
    # a second run of the same settings finds it current; the EG-GRPO settings are another run
    assert run(script, args, ModelConfig(model_name_or_path=str(tiny_sft_dir))) == out
    from eg_grpo.io import StageConflict

    with pytest.raises(StageConflict, match="training_objective"):
        run(
            script,
            rl_config(tmp_path, tiny_sid_dir, max_steps=2, training_objective="grpo"),
            ModelConfig(model_name_or_path=str(tiny_sft_dir)),
        )


def test_the_control_logs_the_oracle_curves_without_a_learned_reward(tmp_path, sim_data_dir, tiny_sid_dir,
                                                                     tiny_sft_dir):  # fmt: skip
    """The control is judged by the same oracle as the RL arms; it has no reward functions to log."""
    script = EGGRPOScriptArguments(data_dir=str(sim_data_dir), max_train_rows=16, chain=False)
    args = rl_config(tmp_path, tiny_sid_dir, max_steps=2, oracle_eval_steps=1, oracle_eval_requests=20)
    trainer = build_trainer(script, args, ModelConfig(model_name_or_path=str(tiny_sft_dir)))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "eg/oracle_gmv_lift" in h]
    assert [h["step"] for h in logged] == [1, 2]
    assert all(math.isfinite(h[f"eg/oracle_{k}"]) for h in logged for k in ("clicks", "purchases", "gmv"))
    assert not any(k.startswith("eg/learned_reward") for h in trainer.state.log_history for k in h)
