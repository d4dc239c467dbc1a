"""The SFT stage: prompt (query + history SIDs) -> target SID + eos, on TRL's ``SFTTrainer``.

:class:`SFTScriptArguments` and :func:`run` are the stage (``recipes/sft.py`` is a thin launcher); the
building blocks (the base model with SID tokens, LoRA, the saved artifact) are in :mod:`eg_grpo.sft.model`.
The dataset is in TRL's prompt-completion format, so the loss is on the completion only. With
``model_name_or_path: tiny`` the model is a randomly initialised tiny Qwen2 with a tokenizer trained on the
data's text; otherwise a hub id or local folder. ``use_peft: true`` trains LoRA adapters plus the embedding
and output matrices (they hold the new SID tokens) and merges them on save. Writes OUTPUT_DIR (model,
tokenizer, ``sft_metrics.json``, ``stage.json``) atomically. With ``sft_stages`` the run is progressive SFT
(:mod:`eg_grpo.sft.progressive`), each stage a run of this one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from eg_grpo.checkpoints import ResumeHint, resolve_checkpoint, resume_command, resumed_loss_metrics
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import build_sft_dataset, check_codebook_matches, load_codebook
from eg_grpo.io import (
    check_lineage,
    claim_stage_folder,
    content_config,
    replacement_folder,
    require_dir,
    stage_record,
)
from eg_grpo.sft.model import TimeLimitCallback, build_sft_model, lora_config, save_sft_model, tiny_config
from eg_grpo.sft.progressive import run_progressive
from eg_grpo.sft.tasks import task_kwargs_of, task_rows_from_arguments


@dataclass
class SFTScriptArguments:
    """Arguments of the SFT stage that are not TRL's ``SFTConfig`` or ``ModelConfig``.

    Args:
        data_dir: folder with items/requests/impressions.parquet.
        sid_dir: output folder of the SID stage (holds ``codebook/``); must be built from ``data_dir``.
        train_split / eval_split: requests to train on / to compute the eval loss on (None: no eval).
        max_history / use_titles: prompt options (evaluation must use the same).
        max_train_rows / max_eval_rows: optional seeded subsamples.
        recent_fraction / recent_repeats: oversample the latest training rows (see
            :func:`eg_grpo.data.sft_dataset.build_sft_dataset`).
        tiny_preset, tiny_*: sizes of the tiny Qwen2 (``model_name_or_path: tiny``); None keeps the preset's.
        num_threads: torch CPU threads. On a shared CPU, 1 thread avoids the oversubscription that
            made 2 threads 15x slower per step in our measurements (tiny model, 6 jobs on 2 cores).
        max_train_seconds: a wall-clock guard: training stops after this many seconds (recorded in
            sft_metrics.json as ``stopped_by_time_limit``).
        overwrite: replace OUTPUT_DIR even when it holds a model of other settings or a hand-built one.
        reset_optimizer: resume from a checkpoint without optimizer state (the optimizer starts afresh).
        task / task_kwargs: what the rows teach (:mod:`eg_grpo.sft.tasks`); ``personalized`` is the
            request rows above, other tasks take ``max_train_rows`` as their data size.
        sft_stages: progressive SFT, a list of stages run in order (:mod:`eg_grpo.sft.progressive`).
    """

    data_dir: str | None = field(
        default=None, metadata={"help": "Data folder (items/requests/impressions.parquet)."}
    )
    sid_dir: str | None = field(default=None, metadata={"help": "SID folder built from data_dir."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Split for the eval loss (None: none)."})
    max_history: int = field(default=10, metadata={"help": "History items in the prompt."})
    use_titles: bool = field(default=False, metadata={"help": "Titles after the history SIDs."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Subsample the training rows."})
    recent_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of training rows, latest first, that recent_repeats applies to."},
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
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of other settings."})
    reset_optimizer: bool = field(
        default=False,
        metadata={"help": "Resume from a checkpoint that lacks optimizer state (fresh optimizer)."},
    )
    task: str = field(
        default="personalized", metadata={"help": "SFT task (eg_grpo.sft.tasks) or pkg.mod:fn."}
    )
    task_kwargs: dict | str | None = field(
        default=None, metadata={"help": "The task's own arguments (JSON)."}
    )
    sft_stages: list | str | None = field(
        default=None, metadata={"help": "Progressive SFT: a list of stages (eg_grpo.sft.progressive)."}
    )


def _empty(value) -> bool:
    """An empty list or mapping, given as such (YAML) or as JSON text (the command line: ``--sft_stages '[]'``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return not value.strip()
    return isinstance(value, list | dict) and not value


def sft_stage_record(script_args: SFTScriptArguments, training_args, model_args) -> dict:
    """The ``stage.json`` record of this run: settings plus the content fingerprints of data and SIDs.

    Raises:
        FileNotFoundError: ``data_dir`` or ``sid_dir`` does not exist.
    """
    data = require_dir(script_args.data_dir, "data_dir", "the folder written by recipes/make_data.py")
    sids = require_dir(script_args.sid_dir, "sid_dir", "the folder written by recipes/build_sids.py")
    # The task fields are recorded only when set, so a plain run's record is what it was before tasks;
    # an empty value (`sft_stages: []`) trains exactly what no value does, so it is unset too.
    unset = tuple(k for k, v in (("task", "personalized"), ("task_kwargs", None), ("sft_stages", None))
                  if getattr(script_args, k, v) == v or _empty(getattr(script_args, k, v)))  # fmt: skip
    base = model_args.model_name_or_path
    local = bool(base) and Path(base).is_dir()
    # A local base model (a progressive stage's previous stage) is an input: its fingerprint, not its
    # path, goes into the record, so a copied or moved output stays current.
    config = content_config({"script": script_args, "training": training_args.to_dict(), "model": model_args},
                            drop=("data_dir", "sid_dir", *unset, *(("model_name_or_path",) if local else ())))  # fmt: skip
    inputs = {"data": data, "sids": sids, "base_model": base if local else None}
    return stage_record("sft", config, inputs)


def run(script_args: SFTScriptArguments, training_args, model_args) -> dict:
    """Trains the SFT warm start and writes its folder; returns the metrics ({} when already current).

    Args:
        script_args: the stage's own arguments.
        training_args: TRL's ``SFTConfig`` (``output_dir`` is the stage folder).
        model_args: TRL's ``ModelConfig`` (``model_name_or_path: tiny`` or a hub id / local folder).

    Raises:
        StageConflict: ``output_dir`` holds a model of other settings or inputs, or one built by hand.
        ValueError: the SID folder was built from other data.
    """
    import torch

    from eg_grpo.sft.trainer import SIDSFTTrainer  # imports TRL: kept out of --help's path

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if script_args.sft_stages:
        return run_progressive(script_args, training_args, model_args, run)
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    record = sft_stage_record(script_args, training_args, model_args)
    # A killed run's folder (its pending record and checkpoints) is taken back, not refused.
    if claim_stage_folder(training_args.output_dir, record, script_args.overwrite, claim=False) == "current":
        print(f"{training_args.output_dir} is up to date; nothing to do")
        return {}

    # Inputs are checked before any model is built.
    check_lineage(data_dir=script_args.data_dir, sid_dir=script_args.sid_dir)
    log = SearchLog.load(script_args.data_dir)
    codebook = load_codebook(script_args.sid_dir)
    check_codebook_matches(log, codebook)
    log.split(script_args.train_split)  # an empty split is an error here, not after model building
    custom_task = script_args.task != "personalized" or bool(script_args.task_kwargs)
    if custom_task:
        task_kwargs_of(script_args, training_args.seed)  # bad task arguments fail before model building
    out = Path(training_args.output_dir)
    if claim_stage_folder(out, record, script_args.overwrite) == "rebuild":
        # Replacing a finished model: checkpoints go beside it; the model itself is swapped in atomically.
        training_args.output_dir = str(replacement_folder(out))
    tiny = tiny_config(
        script_args.tiny_preset, vocab_size=script_args.tiny_vocab_size, hidden_size=script_args.tiny_hidden_size,
        num_hidden_layers=script_args.tiny_num_hidden_layers,
        num_attention_heads=script_args.tiny_num_attention_heads,
        num_key_value_heads=script_args.tiny_num_key_value_heads,
        intermediate_size=script_args.tiny_intermediate_size, seed=training_args.seed,
    )  # fmt: skip
    model, tokenizer, _ = build_sft_model(
        model_args.model_name_or_path, log, codebook, tiny, model_args.dtype or "auto"
    )

    rows = dict(
        max_history=script_args.max_history, use_titles=script_args.use_titles, seed=training_args.seed
    )
    if not custom_task:
        train_dataset = build_sft_dataset(
            log, codebook, tokenizer, script_args.train_split, max_rows=script_args.max_train_rows,
            recent_fraction=script_args.recent_fraction, recent_repeats=script_args.recent_repeats, **rows,
        )  # fmt: skip
    else:
        train_dataset = task_rows_from_arguments(log, codebook, tokenizer, script_args, training_args.seed)
    eval_dataset = None
    if script_args.eval_split:
        eval_dataset = build_sft_dataset(
            log, codebook, tokenizer, script_args.eval_split, max_rows=script_args.max_eval_rows, **rows
        )
    print(f"SFT rows: train {len(train_dataset)}" + (f", eval {len(eval_dataset)}" if eval_dataset else ""))
    print("example:", repr(train_dataset[0]["prompt"] + train_dataset[0]["completion"]))

    trainer = SIDSFTTrainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            processing_class=tokenizer, peft_config=lora_config(model_args, model))  # fmt: skip
    time_limit = None
    if script_args.max_train_seconds:
        time_limit = TimeLimitCallback(script_args.max_train_seconds)
        trainer.add_callback(time_limit)
    checkpoint = resolve_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir, script_args.reset_optimizer
    )
    if checkpoint is not None:
        print(f"[eg_grpo] resuming from {checkpoint}")
    start = time.perf_counter()
    # Without checkpoints a killed SFT restarts from scratch, so the hint is only worth giving with them.
    hint = ResumeHint(resume_command()) if training_args.save_strategy != "no" else contextlib.nullcontext()
    with hint:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {
        **train_result.metrics,
        "train_seconds": time.perf_counter() - start,
        "train_rows": len(train_dataset),
        "num_parameters": trainer.model.num_parameters(),
        "stopped_by_time_limit": bool(time_limit and time_limit.stopped),
        "log_history": trainer.state.log_history,
    }
    if checkpoint is not None and "train_loss" in train_result.metrics:
        # transformers averages only this call's steps; a resumed run's loss covers the whole run
        metrics.update(
            resumed_loss_metrics(checkpoint, train_result.metrics["train_loss"], trainer.state.global_step)
        )
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    save_sft_model(trainer.model, tokenizer, out, record, metrics, time.perf_counter() - start)
    if str(out) != training_args.output_dir:
        shutil.rmtree(training_args.output_dir, ignore_errors=True)  # the replacement's checkpoints
        training_args.output_dir = str(out)
    print(json.dumps({k: v for k, v in metrics.items() if k != "log_history"}, indent=2, default=str))
    return metrics


def stage_arguments():
    """The dataclasses the SFT stage parses (script, TRL's ``SFTConfig``, ``ModelConfig``)."""
    from trl import ModelConfig, SFTConfig

    return (SFTScriptArguments, SFTConfig, ModelConfig)
