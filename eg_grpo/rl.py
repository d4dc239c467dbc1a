"""The RL stage: load the SFT model, the RL rows and the rewards, train `EGGRPOTrainer`, save.

`recipes/eg_grpo.py` is a thin launcher around :func:`train`; the demo chain calls it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig

from eg_grpo.callbacks import HeldOutSIDMetrics, use_compact_console
from eg_grpo.config import EGGRPOConfig
from eg_grpo.data.prompts import DEFAULT_MAX_HISTORY
from eg_grpo.data.rl_dataset import build_rl_dataset
from eg_grpo.data.schema import SearchLog
from eg_grpo.eval.evaluator import EvalSettings
from eg_grpo.io import mark_stage_done, write_json
from eg_grpo.sft import lora_config
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.tokens import SIDVocab
from eg_grpo.trainer import EGGRPOTrainer

DEFAULT_REWARDS = [{"name": "sid_match", "weight": 1.0}]


@dataclass
class EGGRPOScriptArguments:
    """Arguments of `recipes/eg_grpo.py` that are not the trainer's or the model's.

    Args:
        data_dir: folder written by `recipes/make_data.py` (or a real-dataset loader).
        ranker_dir: folder written by `recipes/train_ranker.py`; needed by the ranker-based rewards.
        rewards: reward specs, each `{name: <built-in or pkg.module:Class>, weight: float, **kwargs}`.
        train_split: requests to train on.
        max_train_rows: keep only this many RL rows; None keeps all.
        keep_train_rows: which rows `max_train_rows` keeps: `random` (seeded) or `latest` (by timestamp).
        max_history, use_titles: prompt settings; must match the SFT run's.
        chain: build any missing or stale earlier stage (data, SIDs, ranker, SFT) from `stage_configs`.
        stage_configs: the config file of each earlier stage, used when `chain` is on.
    """

    data_dir: str | None = field(default=None, metadata={"help": "Folder with items/requests/impressions.parquet."})
    ranker_dir: str | None = field(default=None, metadata={"help": "Folder written by recipes/train_ranker.py."})
    # Typed `str` for the command line (a JSON string); from YAML it arrives as the list itself.
    # reward_models.build_reward_funcs accepts both.
    rewards: str | None = field(
        default=None,
        metadata={"help": "Reward specs: a YAML list [{name: sid_match, weight: 1.0, ...}] or the same as JSON."},
    )
    train_split: str = field(default="train", metadata={"help": "Split of requests to train on."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Keep only this many RL rows."})
    keep_train_rows: str = field(
        default="random", metadata={"help": "Which max_train_rows rows: random (seeded) or latest (by timestamp)."}
    )
    max_history: int = field(default=DEFAULT_MAX_HISTORY, metadata={"help": "History items in the prompt (as in SFT)."})
    use_titles: bool = field(default=False, metadata={"help": "Titles in the prompt (as in SFT)."})
    chain: bool = field(default=True, metadata={"help": "Build missing or stale earlier stages first."})
    stage_configs: dict | None = field(
        default=None, metadata={"help": "Config file per earlier stage: {data: ..., sids: ..., ranker: ..., sft: ...}."}
    )


def _resolve_checkpoint(training_args: EGGRPOConfig) -> str | None:
    """`--resume_from_checkpoint` may name a checkpoint, or be `true`/`last` for the newest in output_dir."""
    value = training_args.resume_from_checkpoint
    if value is None or str(value).lower() in ("", "false", "none"):
        return None
    if str(value).lower() in ("true", "last"):
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            print(f"[eg_grpo] no checkpoint in {training_args.output_dir}; starting from scratch")
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    return value


def configure_tracking(training_args: EGGRPOConfig) -> None:
    """W&B without a key or network runs offline (a local run folder to `wandb sync` later), and runs of
    one output root share a group so vanilla and expert-guided sit side by side."""
    if "wandb" not in (training_args.report_to or []):
        return
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
        print("[eg_grpo] no WANDB_API_KEY: W&B runs offline; `wandb sync wandb/offline-run-*` uploads it later")
    os.environ.setdefault("WANDB_RUN_GROUP", Path(training_args.output_dir).resolve().parent.name)


def build_trainer(script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig):
    """Everything `train` needs, assembled but not run (tests and benchmarks use it directly)."""
    from reward_models import RewardContext, build_reward_funcs

    configure_tracking(training_args)
    if script_args.data_dir is None:
        raise ValueError("data_dir is required (the folder written by recipes/make_data.py)")
    if model_args.model_name_or_path is None:
        raise ValueError("model_name_or_path is required (the folder written by recipes/sft.py)")
    log = SearchLog.load(script_args.data_dir)
    codebook = SIDCodebook.load(Path(training_args.sid_dir) / "codebook")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    vocab = SIDVocab(tokenizer, codebook.codebook_sizes)
    dataset = build_rl_dataset(
        log, codebook, vocab, tokenizer, split=script_args.train_split,
        expert_source=training_args.expert_source, max_history=script_args.max_history,
        use_titles=script_args.use_titles, max_rows=script_args.max_train_rows, seed=training_args.seed,
        keep_rows=script_args.keep_train_rows,
    )  # fmt: skip
    context = RewardContext(codebook=codebook, vocab=vocab, log=log, data_dir=script_args.data_dir,
                            ranker_dir=script_args.ranker_dir)  # fmt: skip
    reward_funcs, weights = build_reward_funcs(script_args.rewards or DEFAULT_REWARDS, context)
    training_args.reward_weights = weights
    training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype or "auto"}
    trainer = EGGRPOTrainer(
        model=model_args.model_name_or_path, reward_funcs=reward_funcs, args=training_args,
        train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(model_args),
        codebook=codebook,
    )  # fmt: skip
    if training_args.sid_eval_steps:
        ks = [k for k in (1, 5, 10) if k <= training_args.sid_eval_beams]
        settings = EvalSettings(split=training_args.sid_eval_split, num_beams=training_args.sid_eval_beams, ks=ks,
                                beam_sizes=[training_args.sid_eval_beams], rerun_beam_sizes=False,
                                recall_num_items=[10], max_examples=training_args.sid_eval_examples,
                                max_history=script_args.max_history, use_titles=script_args.use_titles,
                                seed=training_args.seed)  # fmt: skip
        trainer.add_callback(HeldOutSIDMetrics(trainer, log, training_args.sid_eval_steps, settings))
    use_compact_console(trainer)  # one short line per step; the full dict goes to the trackers
    return trainer


def train(script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig) -> Path:
    """Trains, saves the model and tokenizer, the log history and a stage marker; returns output_dir."""
    trainer = build_trainer(script_args, training_args, model_args)
    checkpoint = _resolve_checkpoint(training_args)
    if checkpoint is not None:
        trainer.accelerator.print(f"[eg_grpo] resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)
    out = Path(training_args.output_dir)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(out))
        write_json(out / "log_history.json", trainer.state.log_history)
        mark_stage_done(out, {"script": script_args, "training": training_args.to_dict(), "model": model_args},
                        num_expert_samples=training_args.num_expert_samples)  # fmt: skip
    trainer.accelerator.wait_for_everyone()
    return out
