"""Supervised warm start: prompt (query + history SIDs) → target SID + eos, on TRL's SFTTrainer.

Usage:
    python recipes/sft.py --config recipes/configs/tiny/sft.yaml \
        --data_dir outputs/tiny/data --sid_dir outputs/tiny/sids --output_dir outputs/tiny/sft

The dataset is in TRL's prompt-completion format, so the loss is on the completion only. With
``model_name_or_path: tiny`` the model is a randomly initialised tiny Qwen2 with a tokenizer trained
on the data's text; otherwise a hub id or local folder. ``use_peft: true`` trains LoRA adapters plus
the embedding and output matrices (they hold the new SID tokens) and merges them on save.
Writes OUTPUT_DIR (model, tokenizer, ``sft_metrics.json``, ``stage.json``) atomically.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
import torch
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import build_sft_dataset, check_codebook_matches, load_codebook
from eg_grpo.io import stage_is_current
from eg_grpo.sft import TimeLimitCallback, build_sft_model, lora_config, save_sft_model, tiny_config


@dataclass
class SFTScriptArguments:
    """Script arguments.

    Args:
        data_dir: folder with items/requests/impressions.parquet.
        sid_dir: output folder of build_sids.py (holds ``codebook/``).
        train_split / eval_split: requests to train on / to compute the eval loss on (None: no eval).
        max_history / use_titles: prompt options (evaluation must use the same).
        max_train_rows / max_eval_rows: optional seeded subsamples.
        recent_fraction / recent_repeats: oversample the latest training rows (see
            :func:`eg_grpo.data.sft_dataset.build_sft_dataset`).
        tiny_preset, tiny_*: sizes of the tiny Qwen2 (``model_name_or_path: tiny``); None keeps the preset's.
        num_threads: torch CPU threads. On a shared CPU, 1 thread avoids the oversubscription that
            made 2 threads 15× slower per step in our measurements (tiny model, 6 jobs on 2 cores).
        max_train_seconds: a wall-clock guard: training stops after this many seconds (recorded in
            sft_metrics.json as ``stopped_by_time_limit``).
        overwrite: retrain even if OUTPUT_DIR holds the result of this exact config.
    """

    data_dir: str = field(default="outputs/tiny/data", metadata={"help": "Data folder."})
    sid_dir: str = field(default="outputs/tiny/sids", metadata={"help": "SID folder from build_sids.py."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Split for the eval loss (None: none)."})
    max_history: int = field(default=10, metadata={"help": "History items in the prompt."})
    use_titles: bool = field(default=False, metadata={"help": "Titles after the history SIDs."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Subsample the training rows."})
    recent_fraction: float = field(
        default=0.0, metadata={"help": "Share of training rows, latest first, that recent_repeats applies to."}
    )
    recent_repeats: int = field(default=1, metadata={"help": "Times each recent row appears (1: none)."})
    max_eval_rows: int | None = field(default=500, metadata={"help": "Subsample the eval rows."})
    tiny_preset: str = field(default="test", metadata={"help": "Preset of eg_grpo.modeling.TINY_PRESETS."})
    tiny_vocab_size: int | None = field(
        default=None, metadata={"help": "BPE vocabulary (before SID tokens)."}
    )
    tiny_hidden_size: int | None = field(default=None, metadata={"help": "Hidden size."})
    tiny_num_hidden_layers: int | None = field(default=None, metadata={"help": "Layers."})
    tiny_num_attention_heads: int | None = field(default=None, metadata={"help": "Attention heads."})
    tiny_num_key_value_heads: int | None = field(default=None, metadata={"help": "Key/value heads."})
    tiny_intermediate_size: int | None = field(default=None, metadata={"help": "MLP size."})
    num_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (None: torch's default)."}
    )
    max_train_seconds: float | None = field(
        default=None, metadata={"help": "Stop training after this many seconds."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Retrain even if up to date."})


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    stage_config = {"script": script_args, "training": training_args.to_dict(), "model": model_args}
    stage_config["training"].pop("logging_dir", None)  # holds a timestamp
    stage_config["script"] = {
        k: v for k, v in vars(script_args).items() if k not in ("overwrite", "num_threads")
    }
    if not script_args.overwrite and stage_is_current(training_args.output_dir, stage_config):
        print(f"{training_args.output_dir} is up to date; nothing to do (pass --overwrite to retrain)")
        return {}

    # Inputs are checked before any model is built.
    log = SearchLog.load(script_args.data_dir)
    codebook = load_codebook(script_args.sid_dir)
    check_codebook_matches(log, codebook)
    log.split(script_args.train_split)  # an empty split is an error here, not after model building
    tiny = tiny_config(
        script_args.tiny_preset,
        vocab_size=script_args.tiny_vocab_size,
        hidden_size=script_args.tiny_hidden_size,
        num_hidden_layers=script_args.tiny_num_hidden_layers,
        num_attention_heads=script_args.tiny_num_attention_heads,
        num_key_value_heads=script_args.tiny_num_key_value_heads,
        intermediate_size=script_args.tiny_intermediate_size,
        seed=training_args.seed,
    )
    model, tokenizer, _ = build_sft_model(
        model_args.model_name_or_path, log, codebook, tiny, model_args.dtype or "auto"
    )

    rows = dict(
        max_history=script_args.max_history, use_titles=script_args.use_titles, seed=training_args.seed
    )
    train_dataset = build_sft_dataset(
        log, codebook, tokenizer, script_args.train_split, max_rows=script_args.max_train_rows,
        recent_fraction=script_args.recent_fraction, recent_repeats=script_args.recent_repeats, **rows,
    )  # fmt: skip
    eval_dataset = None
    if script_args.eval_split:
        eval_dataset = build_sft_dataset(
            log, codebook, tokenizer, script_args.eval_split, max_rows=script_args.max_eval_rows, **rows
        )
    print(f"SFT rows: train {len(train_dataset)}" + (f", eval {len(eval_dataset)}" if eval_dataset else ""))
    print("example:", repr(train_dataset[0]["prompt"] + train_dataset[0]["completion"]))

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(model_args, model),
    )
    time_limit = None
    if script_args.max_train_seconds:
        time_limit = TimeLimitCallback(script_args.max_train_seconds)
        trainer.add_callback(time_limit)
    start = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = {
        **train_result.metrics,
        "train_seconds": time.perf_counter() - start,
        "train_rows": len(train_dataset),
        "num_parameters": trainer.model.num_parameters(),
        "stopped_by_time_limit": bool(time_limit and time_limit.stopped),
        "log_history": trainer.state.log_history,
    }
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    save_sft_model(trainer.model, tokenizer, training_args.output_dir, stage_config, metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "log_history"}, indent=2, default=str))
    return metrics


if __name__ == "__main__":
    parser = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))
    main(*parser.parse_args_and_config())
