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
supervised control instead (:mod:`eg_grpo.continued_sft`); with ``rejection_sft`` or
``reward_weighted_sft``, the reward-aware control on EG-GRPO's own rollouts (:mod:`eg_grpo.rejection_sft`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer
from trl import ModelConfig

from eg_grpo.callbacks import HeldOutSIDMetrics, use_compact_console
from eg_grpo.checkpoints import ResumeHint, resolve_checkpoint, resume_command
from eg_grpo.completions_log import ClusterTitles
from eg_grpo.config import OBJECTIVE_FIELDS, REWARD_SFT_OBJECTIVES, EGGRPOConfig
from eg_grpo.data.prompts import DEFAULT_MAX_HISTORY
from eg_grpo.data.rl_dataset import build_rl_dataset
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import check_codebook_matches, load_codebook
from eg_grpo.eval.evaluator import EvalSettings
from eg_grpo.io import (
    PENDING_FILE,
    check_lineage,
    claim_stage_folder,
    content_config,
    replacement_folder,
    require_dir,
    stage_record,
    swap_in_replacement,
    write_json,
    write_stage,
)
from eg_grpo.oracle_curves import ORACLE_EVAL_FIELDS, oracle_curves_callback
from eg_grpo.sft import lora_config
from eg_grpo.sid.tokens import SIDVocab
from eg_grpo.tracking import LineageToTracker, configure_tracking, run_tags
from eg_grpo.trainer import EGGRPOTrainer

logger = logging.getLogger(__name__)

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
        chain: build any missing earlier stage (data, SIDs, ranker, SFT) from `stage_configs`; an existing
            one must be current (a stale or hand-built one is an error naming what differs).
        stage_configs: the config file of each earlier stage, used when `chain` is on. A missing
            earlier stage is built only at the output folder its config declares.
        overwrite: replace an output folder holding a run of other settings (or a hand-built one).
        reset_optimizer: resume from a checkpoint without optimizer state (the optimizer starts afresh).
    """

    data_dir: str | None = field(
        default=None, metadata={"help": "Folder with items/requests/impressions.parquet."}
    )
    ranker_dir: str | None = field(
        default=None, metadata={"help": "Folder written by recipes/train_ranker.py."}
    )
    # Typed `str` for the command line (a JSON string); from YAML it arrives as the list itself.
    # reward_models.build_reward_funcs accepts both.
    rewards: str | None = field(
        default=None,
        metadata={
            "help": "Reward specs: a YAML list [{name: sid_match, weight: 1.0, ...}] or the same as JSON."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split of requests to train on."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Keep only this many RL rows."})
    keep_train_rows: str = field(
        default="random",
        metadata={"help": "Which max_train_rows rows: random (seeded) or latest (by timestamp)."},
    )
    max_history: int = field(
        default=DEFAULT_MAX_HISTORY, metadata={"help": "History items in the prompt (as in SFT)."}
    )
    use_titles: bool = field(default=False, metadata={"help": "Titles in the prompt (as in SFT)."})
    chain: bool = field(
        default=True, metadata={"help": "Build missing earlier stages first (from stage_configs)."}
    )
    stage_configs: dict | None = field(
        default=None,
        metadata={"help": "Config file per earlier stage: {data: ..., sids: ..., ranker: ..., sft: ...}."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of other settings."})
    reset_optimizer: bool = field(
        default=False,
        metadata={"help": "Resume from a checkpoint that lacks optimizer state (fresh optimizer)."},
    )


@dataclass
class RLInputs:
    """What every RL objective reads, loaded and checked: the log, SIDs, tokenizer and the RL rows."""

    record: dict
    log: SearchLog
    codebook: object
    tokenizer: object
    vocab: SIDVocab
    dataset: object  # datasets.Dataset of eg_grpo.data.rl_dataset.build_rl_dataset


def load_rl_inputs(
    script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig
) -> RLInputs:
    """Checks the inputs' lineage and builds the RL rows (the one builder both objectives train on)."""
    configure_tracking(training_args, script_args.data_dir)
    record = rl_stage_record(script_args, training_args, model_args)  # every input folder exists
    check_lineage(
        data_dir=script_args.data_dir, sid_dir=training_args.sid_dir, model_dir=model_args.model_name_or_path
    )
    log = SearchLog.load(script_args.data_dir)
    codebook = load_codebook(training_args.sid_dir)
    check_codebook_matches(log, codebook)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    vocab = SIDVocab(tokenizer, codebook.codebook_sizes)
    dataset = build_rl_dataset(
        log, codebook, vocab, tokenizer, split=script_args.train_split,
        expert_source=training_args.expert_source, max_history=script_args.max_history,
        use_titles=script_args.use_titles, max_rows=script_args.max_train_rows, seed=training_args.seed,
        keep_rows=script_args.keep_train_rows,
    )  # fmt: skip
    return RLInputs(record, log, codebook, tokenizer, vocab, dataset)


def build_trainer(script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig):
    """Everything `train` needs, assembled but not run (tests and benchmarks use it directly).

    Returns the `EGGRPOTrainer`, or with ``training_objective: continued_sft`` the supervised control's
    ``SFTTrainer`` (:func:`eg_grpo.continued_sft.build_continued_sft_trainer`), or with ``rejection_sft`` /
    ``reward_weighted_sft`` the reward-aware control (:class:`eg_grpo.rejection_sft.RejectionSFTTrainer`,
    built here exactly as the `EGGRPOTrainer`: same rows, rewards, weights and callbacks).
    """
    from reward_models import RewardContext, build_reward_funcs

    if training_args.training_objective == "continued_sft":
        from eg_grpo.continued_sft import build_continued_sft_trainer

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
        from eg_grpo.rejection_sft import RejectionSFTTrainer

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


def add_run_callbacks(trainer, inputs: RLInputs, script_args: EGGRPOScriptArguments,
                      training_args: EGGRPOConfig) -> None:  # fmt: skip
    """The callbacks every RL objective runs with: held-out SID metrics, lineage to the trackers, the console."""
    if training_args.sid_eval_steps:
        ks = [k for k in (1, 5, 10) if k <= training_args.sid_eval_beams]
        settings = EvalSettings(split=training_args.sid_eval_split, num_beams=training_args.sid_eval_beams, ks=ks,
                                beam_sizes=[training_args.sid_eval_beams], rerun_beam_sizes=False,
                                recall_num_items=[10], max_examples=training_args.sid_eval_examples,
                                max_history=script_args.max_history, use_titles=script_args.use_titles,
                                seed=training_args.seed, exclude_oracle_slice=True,
                                beam_score=training_args.beam_score)  # fmt: skip
        trainer.add_callback(HeldOutSIDMetrics(trainer, inputs.log, training_args.sid_eval_steps, settings))
    oracle_curves = oracle_curves_callback(trainer, inputs.log, script_args.data_dir, inputs.vocab,
                                           script_args.max_history, script_args.use_titles, training_args,
                                           train_split=script_args.train_split)  # fmt: skip
    if oracle_curves is not None:
        trainer.add_callback(oracle_curves)
    specs = script_args.rewards or DEFAULT_REWARDS
    record = inputs.record
    lineage = {"rewards": json.loads(specs) if isinstance(specs, str) else specs, "stage_fingerprint": record["fingerprint"],
               "inputs": {k: v["fingerprint"] for k, v in record["inputs"].items()},
               # the continued-SFT control's run config is an SFTConfig: it would not say what it controls
               "training_objective": training_args.training_objective,
               "num_expert_samples": training_args.num_expert_samples,
               # trackio runs have no tags of their own: the config carries W&B's
               "tags": run_tags(training_args, script_args.data_dir)}  # fmt: skip
    trainer.add_callback(LineageToTracker(lineage))
    use_compact_console(trainer)  # one short line per step; the full dict goes to the trackers


def rl_stage_record(
    script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig
) -> dict:
    """``stage.json`` of an RL run: its settings and the fingerprints of data, SIDs, ranker and start model."""
    data = require_dir(script_args.data_dir, "data_dir", "the folder written by recipes/make_data.py")
    sids = require_dir(training_args.sid_dir, "sid_dir", "the folder written by recipes/build_sids.py")
    model = require_dir(
        model_args.model_name_or_path, "model_name_or_path", "the folder written by recipes/sft.py"
    )
    ranker = script_args.ranker_dir
    if ranker and not Path(ranker).is_dir():
        # Only the ranker-based rewards read it (lazily, with their own error naming the fix).
        logger.warning("ranker_dir %s does not exist: rewards that read the ranker will fail", ranker)
        ranker = None
    script = content_config(script_args, drop=("data_dir", "ranker_dir", "chain", "stage_configs"))
    if isinstance(script.get("rewards"), str):
        script["rewards"] = json.loads(script["rewards"])
    # The oracle curves only watch: they leave the model as it would be without them.
    # Fields of another objective than this run's do not shape it (see eg_grpo.config.OBJECTIVE_FIELDS).
    used = OBJECTIVE_FIELDS.get(training_args.training_objective, ())
    unused = {f for fields in OBJECTIVE_FIELDS.values() for f in fields} - set(used)
    # beam_score, added after runs were recorded, leaves the record at its default so they stay current.
    unused |= {"beam_score"} if training_args.beam_score == "model" else set()
    training = content_config(training_args.to_dict(), drop=("sid_dir", *ORACLE_EVAL_FIELDS, *sorted(unused)))
    config = {"script": script, "training": training,
              "model": content_config(model_args, drop=("model_name_or_path",))}  # fmt: skip
    return stage_record("rl", config, {"data": data, "sids": sids, "ranker": ranker, "model": model})


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
