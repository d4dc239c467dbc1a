"""The building blocks of the SFT stage: the base model with SID tokens, LoRA, a time limit, the saved model.

The stage itself (:mod:`eg_grpo.sft.stage`) assembles them; the RL stage reuses :func:`lora_config`, so a
LoRA run trains the SID-bearing matrices in full in both stages. With ``model_name_or_path: tiny`` the model
is a randomly initialised tiny Qwen2 with a tokenizer trained on the data's text; otherwise a hub id or local
folder. :func:`save_sft_model` merges LoRA adapters and writes the folder atomically.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from transformers import TrainerCallback

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import dataset_texts
from eg_grpo.io import atomic_dir, write_json, write_stage
from eg_grpo.modeling import (
    TINY_PRESETS,
    TinyModelConfig,
    build_tiny_model_and_tokenizer,
    clean_generation_config,
    load_model_and_tokenizer,
)
from eg_grpo.sid.codebook import SIDCodebook

logger = logging.getLogger(__name__)

TINY = "tiny"
# The new SID tokens live in the embedding and output matrices: LoRA must train them in full.
SID_MODULES_TO_SAVE = ["embed_tokens", "lm_head"]


def tiny_config(preset: str = "test", **overrides) -> TinyModelConfig:
    """A :class:`TinyModelConfig` from a preset of ``eg_grpo.modeling.TINY_PRESETS``, with overrides.

    ``None`` overrides are ignored, so optional script arguments can be passed straight through.
    """
    if preset not in TINY_PRESETS:
        raise ValueError(f"unknown tiny preset {preset!r}; choose from {sorted(TINY_PRESETS)}")
    return replace(TINY_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def build_sft_model(
    model_name_or_path: str | None,
    log: SearchLog,
    codebook: SIDCodebook,
    tiny: TinyModelConfig | None = None,
    dtype: str = "auto",
):
    """The base model of SFT, with the codebook's SID tokens.

    Args:
        model_name_or_path: ``"tiny"`` (or None): a randomly initialised tiny Qwen2 with a BPE tokenizer
            trained on the dataset's titles, brands and queries; otherwise a hub id or local folder.
        log: the dataset (text for the tiny tokenizer).
        codebook: gives the SID token sizes.
        tiny: sizes of the tiny model (default: the ``test`` preset).
        dtype: dtype of a loaded model.

    Returns:
        ``(model, tokenizer, sid_vocab)``.
    """
    if model_name_or_path in (None, "", TINY):
        model, tokenizer, vocab = build_tiny_model_and_tokenizer(
            dataset_texts(log), codebook.codebook_sizes, tiny or TINY_PRESETS["test"]
        )
        logger.info("tiny Qwen2: %.2fM parameters, %d tokens", model.num_parameters() / 1e6, len(tokenizer))
        return model, tokenizer, vocab
    from eg_grpo.data.sft_dataset import check_tokenizer_has_sids

    model, tokenizer = load_model_and_tokenizer(model_name_or_path, codebook.codebook_sizes, dtype=dtype)
    return model, tokenizer, check_tokenizer_has_sids(tokenizer, codebook)


class TimeLimitCallback(TrainerCallback):
    """Stops training once ``max_seconds`` have passed since it started (checked after every step).

    A wall-clock budget ("SFT in under 30 minutes on 2 cores") is a property of the run, not of the
    schedule: the learning-rate schedule still follows ``num_train_epochs``, so pick epochs that fit and
    keep this as the guard. ``stopped`` says whether it fired (recorded in ``sft_metrics.json``).
    """

    def __init__(self, max_seconds: float):
        self.max_seconds = float(max_seconds)
        self.start = None
        self.stopped = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None and time.perf_counter() - self.start > self.max_seconds:
            if not self.stopped:
                logger.warning(
                    "time limit of %.0f s reached at step %d: stopping", self.max_seconds, state.global_step
                )
            self.stopped = True
            control.should_training_stop = True
        return control


def lora_config(model_args, model=None):
    """TRL's ``get_peft_config`` with the SID-bearing matrices in ``modules_to_save`` (None without PEFT).

    With tied input/output embeddings (the tiny model, Qwen2.5-0.5B) the adapter keeps them tied
    (``ensure_weight_tying``), so the merged model saves one trained matrix, not two diverging copies.
    """
    from trl import get_peft_config

    if not model_args.use_peft:
        return None
    config = get_peft_config(model_args)
    saved = list(config.modules_to_save or [])
    config.modules_to_save = saved + [m for m in SID_MODULES_TO_SAVE if m not in saved]
    if (
        model is not None
        and getattr(model.config, "tie_word_embeddings", False)
        and hasattr(config, "ensure_weight_tying")
    ):
        config.ensure_weight_tying = True
    return config


def save_sft_model(model, tokenizer, output_dir: str | Path, record: dict, metrics: dict,
                   seconds: float | None = None) -> Path:  # fmt: skip
    """Saves a standalone model + tokenizer to ``output_dir`` atomically, with ``stage.json`` from ``record``.

    A PEFT model is merged first, so later stages (RL, evaluation, the recall channel) load the
    folder like any causal LM. The generation config keeps token ids only (no sampling defaults).
    """
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.generation_config = clean_generation_config(tokenizer)
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "sft_metrics.json", metrics)
        write_stage(tmp, record, seconds)
    return Path(output_dir)
