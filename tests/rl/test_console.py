"""What a person sees while training: one short console line per step, and no deprecation warnings of ours."""

import warnings

import pytest
from transformers.trainer_callback import CallbackHandler, PrinterCallback, ProgressCallback, TrainerCallback
from trl import SFTConfig, TrlParser

from eg_grpo.rl.callbacks import (
    CompactPrinterCallback,
    CompactProgressCallback,
    console_line,
    use_compact_console,
)
from eg_grpo.rl.config import EGGRPOConfig

# One step of the tiny RL run as TRL logs it (the full dict, ~1,160 characters when printed).
STEP_LOGS = {
    "loss": 2.98e-08, "grad_norm": 1.21, "learning_rate": 0.0005, "num_tokens": 2744.0,
    "completions/mean_length": 4.0, "completions/min_length": 4.0, "completions/max_length": 4.0,
    "completions/clipped_ratio": 0.0, "completions/mean_terminated_length": 4.0,
    "completions/min_terminated_length": 4.0, "completions/max_terminated_length": 4.0,
    "rewards/sid_match/mean": 0.1354, "rewards/sid_match/std": 0.2654, "rewards/ctr/mean": 0.09716,
    "rewards/ctr/std": 0.04784, "rewards/relevance/mean": 0.1138, "rewards/relevance/std": 0.2384,
    "reward": 0.2409, "reward_std": 0.3804, "frac_reward_zero_std": 0.0, "eg/expert_frac": 0.0625,
    "eg/valid_sid_rate": 1.0, "eg/hit_rate_sampled": 0.06667, "eg/distinct_sids_per_group": 7.5,
    "eg/expert_duplicates": 1.0, "eg/zero_std_group_frac": 0.0, "entropy": 3.12, "clip_ratio/low_mean": 0.0,
    "clip_ratio/high_mean": 0.0, "clip_ratio/region_mean": 0.0, "clip_ratio/low_min": 0.0,
    "clip_ratio/high_max": 0.0, "step_time": 0.1499, "valid/hr@1": 0.03371, "valid/hr@10": 0.2022,
    "valid/ndcg@10": 0.1127, "epoch": 0.03125,
}  # fmt: skip


def test_console_line_is_short_and_keeps_the_essentials():
    line = console_line(4, STEP_LOGS)
    assert len(str(STEP_LOGS)) > 1000
    assert line == (
        "step 4 | loss 2.98e-08 lr 0.0005 | reward 0.2409 ± 0.3804 (sid_match 0.1354 ctr 0.09716 relevance 0.1138)"
        " | eg expert 0.0625 valid_sid 1 hit 0.06667 distinct 7.5 | valid/hr@10 0.2022 valid/ndcg@10 0.1127"
        " | 0.1499 s/step"
    )
    assert len(line) < 240


def test_a_summary_log_is_printed_whole():
    summary = {
        "train_runtime": 28.1,
        "train_samples_per_second": 4.5,
        "train_loss": 0.0123,
        "total_flos": 1.0,
    }
    assert (
        console_line(6, summary)
        == "step 6 | train_runtime 28.1 train_samples_per_second 4.5 train_loss 0.0123"
    )


@pytest.mark.parametrize(
    ("stock", "compact"),
    [(ProgressCallback, CompactProgressCallback), (PrinterCallback, CompactPrinterCallback)],
)
def test_use_compact_console_swaps_the_printer(stock, compact):
    class Trainer:  # the three members of transformers.Trainer that use_compact_console touches
        def __init__(self):
            self.callback_handler = CallbackHandler([TrainerCallback, stock], None, None, None, None)

        def add_callback(self, cb):
            self.callback_handler.add_callback(cb)

        def remove_callback(self, cb):
            self.callback_handler.remove_callback(cb)

    trainer = Trainer()
    use_compact_console(trainer)
    kinds = [type(cb) for cb in trainer.callback_handler.callbacks]
    assert compact in kinds and stock not in kinds and TrainerCallback in kinds


def test_shipped_rl_and_sft_configs_raise_no_future_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        TrlParser((EGGRPOConfig,)).parse_args_and_config(
            ["--config", "recipes/configs/tiny/eg_grpo.yaml", "--sid_dir", str(tmp_path)],
            return_remaining_strings=True,
        )
        TrlParser((SFTConfig,)).parse_args_and_config(
            ["--config", "recipes/configs/tiny/sft.yaml"], return_remaining_strings=True
        )
        config = EGGRPOConfig(sid_dir=str(tmp_path), output_dir=str(tmp_path))  # TRL's defaults, from Python
    assert (
        config.activation_checkpointing is True and config.gradient_checkpointing is True
    )  # TRL's default kept


def test_trl_reading_the_old_checkpointing_property_is_silent():
    from eg_grpo import silence_checkpointing_alias_warnings
    from eg_grpo.modeling import build_tiny_model_and_tokenizer

    model = build_tiny_model_and_tokenizer(["red shoes", "blue shirt"], (4, 4, 4))[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        silence_checkpointing_alias_warnings()  # at import, and again when an EGGRPOTrainer is built
        assert model.is_gradient_checkpointing is False  # what trl.models.utils reads around each generation
        model.gradient_checkpointing_enable()  # what TRL calls after generating when checkpointing is on
        model.gradient_checkpointing_disable()
        warnings.warn("another FutureWarning still shows", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == [
        "another FutureWarning still shows"
    ]


def test_the_console_shows_the_sampled_reward_for_both_arms():
    # TRL's `reward` counts the spliced ground truth: EG .322 vs vanilla .154 while the policies' own
    # samples score .164 vs .154. The line leads with the sampled figure for both.
    sampled = {"eg/reward_sampled": 0.164, "eg/rewards/sid_match/mean_sampled": 0.164}
    eg = {**STEP_LOGS, "reward": 0.322, "rewards/sid_match/mean": 0.322, **sampled}
    vanilla = {**STEP_LOGS, "reward": 0.154, "rewards/sid_match/mean": 0.154, "eg/expert_frac": 0.0,
               "eg/reward_sampled": 0.154, "eg/rewards/sid_match/mean_sampled": 0.154}  # fmt: skip
    for k in ("rewards/ctr/mean", "rewards/relevance/mean"):
        eg.pop(k), vanilla.pop(k)
    eg_line, vanilla_line = console_line(4, eg), console_line(4, vanilla)
    assert "| sampled reward 0.164 (sid_match 0.164) with expert rows 0.322 |" in eg_line
    assert "| sampled reward 0.154 (sid_match 0.154) |" in vanilla_line
    assert "reward 0.322 ±" not in eg_line
