"""LoRA through PEFT: SID rows trainable, reference = adapter disabled, adapter saved, merge is exact."""

from __future__ import annotations

import math

import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM
from trl import ModelConfig

from eg_grpo.modeling import merge_lora_adapter
from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments
from eg_grpo.rl.stage import build_trainer
from tests.rl.test_constrained import batch_of_sids, brute_force


def test_lora_run_trains_sid_rows_and_merges_to_the_same_model(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    args = EGGRPOConfig(
        output_dir=str(tmp_path / "run"), sid_dir=str(tiny_sid_dir), num_generations=4, per_device_train_batch_size=8,
        max_steps=2, learning_rate=1e-2, beta=0.1, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, gradient_checkpointing=False, seed=0, disable_tqdm=True,
    )  # fmt: skip
    model_args = ModelConfig(model_name_or_path=str(tiny_sft_dir), use_peft=True, lora_r=4, lora_alpha=8,
                             lora_target_modules=["q_proj", "v_proj"])  # fmt: skip
    script = EGGRPOScriptArguments(data_dir=str(tiny_data_dir), rewards=[{"name": "sid_match"}], max_train_rows=32,
                                   chain=False)  # fmt: skip
    trainer = build_trainer(script, args, model_args)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any("embed_tokens" in n and "modules_to_save" in n for n in trainable), (
        "SID rows must be trainable"
    )
    assert not any("layers.0.mlp" in n for n in trainable), "frozen base weights must stay frozen"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    kls = [h["kl"] for h in trainer.state.log_history if "kl" in h]
    assert kls and all(math.isfinite(k) for k in kls)
    # every trainable copy was trained, the output head's SID rows included (the constrained head reads them)
    unchanged = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad and torch.equal(before[n], p)
    ]
    assert not unchanged, f"not updated: {unchanged}"

    # The constrained log-probs the trainer computes under PEFT (hook on the base model's backbone, head read
    # from the wrapped model) are π_c of the adapted model, and with the adapter disabled (the reference) those
    # of the base model: both against the brute-force renormalisation of the PEFT model's full logits.
    input_ids, attention_mask, T = batch_of_sids(trainer, rows=4)
    model = trainer.model.eval()
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, T)
        expected, _, _ = brute_force(trainer, input_ids, attention_mask, T)
        with model.disable_adapter():
            ref_logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, T)
            ref_expected, _, _ = brute_force(trainer, input_ids, attention_mask, T)
    torch.testing.assert_close(logps, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(ref_logps, ref_expected, rtol=0, atol=1e-5)
    assert (logps - ref_logps).abs().max() > 1e-3, "the update left the policy equal to the reference"

    trainer.save_model(str(tmp_path / "adapter"))
    trainer.processing_class.save_pretrained(str(tmp_path / "adapter"))
    merged_dir = merge_lora_adapter(tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter")).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        trained = trainer.model.eval()(input_ids=ids).logits
        saved, merged_logits = reloaded(input_ids=ids).logits, merged(ids).logits
    torch.testing.assert_close(saved, trained, rtol=1e-4, atol=1e-4)  # the adapter holds the trained policy
    torch.testing.assert_close(
        merged_logits, saved, rtol=1e-4, atol=1e-4
    )  # PEFT's merge unties the two trained copies
