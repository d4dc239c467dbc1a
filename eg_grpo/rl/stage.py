"""The RL stage: load the SFT model, the RL rows and the rewards, train `EGGRPOTrainer`, save.

`recipes/eg_grpo.py` is a thin launcher around :func:`run`; the chain calls it as
``python -m eg_grpo.stages rl``. The output folder receives ``checkpoint-*/`` while training (a
killed run resumes from them, see :mod:`eg_grpo.checkpoints`) and, only when training finished, the
model, ``log_history.json`` and ``stage.json``. While it runs, ``stage.pending.json`` holds the
record it will write, so a resume into the folder of another config is refused. Replacing a
finished run (``overwrite``, or the chain after a config change) trains in a sibling folder that is
swapped in only when complete (:func:`eg_grpo.io.claim_stage_folder`), so a stopped rebuild keeps the
old model. With
``training_objective: continued_sft`` the same stage, on the same rows and record, trains the
supervised control instead (:mod:`eg_grpo.rl.continued_sft`); with ``rejection_sft`` or
``reward_weighted_sft``, the reward-aware control on EG-GRPO's own rollouts (:mod:`eg_grpo.rl.rejection_sft`).
What every objective shares (the script arguments, the record, the rows, the callbacks) is in
:mod:`eg_grpo.rl.inputs`.
"""

from __future__ import annotations

import time
from pathlib import Path

from trl import ModelConfig

from eg_grpo.checkpoints import ResumeHint, resolve_checkpoint, resume_command
from eg_grpo.io import (
    PENDING_FILE,
    claim_stage_folder,
    replacement_folder,
    swap_in_replacement,
    write_json,
    write_stage,
)
from eg_grpo.rl.completions_log import ClusterTitles
from eg_grpo.rl.config import REWARD_SFT_OBJECTIVES, EGGRPOConfig
from eg_grpo.rl.continued_sft import build_continued_sft_trainer
from eg_grpo.rl.inputs import (
    DEFAULT_REWARDS,
    EGGRPOScriptArguments,
    add_run_callbacks,
    load_rl_inputs,
    rl_stage_record,
)
from eg_grpo.rl.rejection_sft import RejectionSFTTrainer
from eg_grpo.rl.trainer import EGGRPOTrainer
from eg_grpo.sft.model import lora_config
from eg_grpo.tracking import LineageToTracker


def build_trainer(script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig):
    """Everything `train` needs, assembled but not run (tests and benchmarks use it directly).

    Returns the `EGGRPOTrainer`, or with ``training_objective: continued_sft`` the supervised control's
    ``SFTTrainer`` (:func:`eg_grpo.rl.continued_sft.build_continued_sft_trainer`), or with ``rejection_sft`` /
    ``reward_weighted_sft`` the reward-aware control (:class:`eg_grpo.rl.rejection_sft.RejectionSFTTrainer`,
    built here exactly as the `EGGRPOTrainer`: same rows, rewards, weights and callbacks).
    """
    from reward_models import RewardContext, build_reward_funcs

    if training_args.training_objective == "continued_sft":
        return build_continued_sft_trainer(script_args, training_args, model_args)
    inputs = load_rl_inputs(script_args, training_args, model_args)
    context = RewardContext(codebook=inputs.codebook, vocab=inputs.vocab, log=inputs.log,
                            data_dir=script_args.data_dir, ranker_dir=script_args.ranker_dir)  # fmt: skip
    reward_funcs, weights = build_reward_funcs(script_args.rewards or DEFAULT_REWARDS, context)
    check_rewards_fit_rollouts(reward_funcs, training_args)
    training_args.reward_weights = weights
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "dtype": model_args.dtype or "auto",
    }
    titles = ClusterTitles.from_log(inputs.codebook, inputs.log) if training_args.log_completions else None
    trainer_class = EGGRPOTrainer
    if training_args.training_objective in REWARD_SFT_OBJECTIVES:
        trainer_class = RejectionSFTTrainer
    trainer = trainer_class(
        model=model_args.model_name_or_path, reward_funcs=reward_funcs, args=training_args,
        train_dataset=inputs.dataset, processing_class=inputs.tokenizer, peft_config=lora_config(model_args),
        codebook=inputs.codebook,
    )  # fmt: skip
    trainer.cluster_titles = titles  # the items behind each SID in the completions tables
    add_run_callbacks(trainer, inputs, script_args, training_args)
    return trainer


def check_rewards_fit_rollouts(reward_funcs, training_args: EGGRPOConfig) -> None:
    """Gives the rewards that read a group's beam order (``needs_beam_order``) the group size, and refuses
    them under sampled rollouts, where the rows of a group are exchangeable and carry no rank."""
    for fn in reward_funcs:
        fn = getattr(fn, "reward_fn", fn)  # unwrap reward_models.validation.checked
        if not getattr(fn, "needs_beam_order", False):
            continue
        if training_args.rollout_mode != "beam":
            raise ValueError(
                f"reward '{fn.__name__}' credits each row by its beam rank, which exists only under "
                f"rollout_mode='beam' (with '{training_args.rollout_mode}' the rows of a group are exchangeable "
                "samples); set rollout_mode: beam or drop the reward"
            )
        if str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no":
            # The trie path beam-searches only while training: evaluation groups are samples.
            raise ValueError(
                f"reward '{fn.__name__}' reads beam ranks, but evaluation rollouts are sampled; set eval_strategy: "
                "no (sid_eval_steps measures the policy's beam on held-out requests instead)"
            )
        fn.set_group_size(training_args.num_generations)


def run(script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig) -> Path:
    """Builds missing earlier stages (``chain``), trains, saves the model and ``stage.json``; returns output_dir.

    Raises:
        StageConflict: ``output_dir`` holds a run of other settings, or files without ``stage.json``.
        ValueError: lineage mismatch (SIDs of other data, a model trained with other SIDs), or a
            damaged checkpoint named explicitly.
    """
    from accelerate import PartialState

    state = PartialState()
    if script_args.chain and script_args.stage_configs:
        from eg_grpo.pipeline import ensure_upstream

        with state.main_process_first():  # rank 0 builds; the others then find it up to date
            ensure_upstream(script_args.data_dir, training_args.sid_dir, model_args.model_name_or_path,
                            script_args.ranker_dir, script_args.stage_configs)  # fmt: skip
    out = Path(training_args.output_dir)
    record = rl_stage_record(script_args, training_args, model_args)
    with state.main_process_first():  # rank 0 claims the folder; the others then read what it decided
        status = claim_stage_folder(out, record, script_args.overwrite, claim=state.is_main_process)
    if status == "current":
        state.print(f"{out} is up to date; nothing to do")
        return out
    # Replacing a finished run: train beside it and swap at the end, so a stopped rebuild keeps the old model.
    build = replacement_folder(out) if status == "rebuild" else out
    if status == "rebuild":
        state.print(f"[eg_grpo] {out} holds another run: training its replacement in {build}; the old one "
                    "stays until the new one is complete")  # fmt: skip
        training_args.output_dir = str(build)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, build, script_args.reset_optimizer)
    trainer = build_trainer(script_args, training_args, model_args)
    if checkpoint is not None:
        trainer.accelerator.print(f"[eg_grpo] resuming from {checkpoint}")
    start = time.perf_counter()
    with ResumeHint(resume_command()):
        trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(build))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(build))
        write_json(build / "log_history.json", trainer.state.log_history)
        tracker = next(
            (c for c in trainer.callback_handler.callbacks if isinstance(c, LineageToTracker)), None
        )
        tracking = {"wandb": tracker.run_info} if tracker and tracker.run_info else {}
        write_stage(build, record, time.perf_counter() - start, num_expert_samples=training_args.num_expert_samples,
                    tracking=tracking, beam_score=training_args.beam_score)  # fmt: skip
        (build / PENDING_FILE).unlink(missing_ok=True)
        if build != out:
            swap_in_replacement(out)
    trainer.accelerator.wait_for_everyone()
    training_args.output_dir = str(out)
    return out


train = run  # the name earlier code and benchmarks use


def stage_arguments():
    return (EGGRPOScriptArguments, EGGRPOConfig, ModelConfig)
