"""What every RL objective shares: the stage's own arguments, its ``stage.json`` record, its loaded inputs and
its callbacks.

:func:`eg_grpo.rl.stage.build_trainer` builds the `EGGRPOTrainer` (or the reward-aware control) from these, and
:func:`eg_grpo.rl.continued_sft.build_continued_sft_trainer` the supervised control: both objectives read the
same rows, record the same settings and log the same held-out metrics and lineage. Kept apart from the stage
itself so that the stage can import the controls and the controls these pieces, with no import circle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer
from trl import ModelConfig

from eg_grpo.data.prompts import DEFAULT_MAX_HISTORY
from eg_grpo.data.rl_dataset import build_rl_dataset
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import check_codebook_matches, load_codebook
from eg_grpo.eval.evaluator import EvalSettings
from eg_grpo.io import check_lineage, content_config, require_dir, stage_record
from eg_grpo.rl.callbacks import HeldOutSIDMetrics, use_compact_console
from eg_grpo.rl.config import OBJECTIVE_FIELDS, EGGRPOConfig
from eg_grpo.rl.oracle_curves import ORACLE_EVAL_FIELDS, oracle_curves_callback
from eg_grpo.sid.tokens import SIDVocab
from eg_grpo.tracking import LineageToTracker, configure_tracking, run_tags

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
    # Fields of another objective than this run's do not shape it (see eg_grpo.rl.config.OBJECTIVE_FIELDS).
    used = OBJECTIVE_FIELDS.get(training_args.training_objective, ())
    unused = {f for fields in OBJECTIVE_FIELDS.values() for f in fields} - set(used)
    # beam_score, added after runs were recorded, leaves the record at its default so they stay current.
    unused |= {"beam_score"} if training_args.beam_score == "model" else set()
    training = content_config(training_args.to_dict(), drop=("sid_dir", *ORACLE_EVAL_FIELDS, *sorted(unused)))
    config = {"script": script, "training": training,
              "model": content_config(model_args, drop=("model_name_or_path",))}  # fmt: skip
    return stage_record("rl", config, {"data": data, "sids": sids, "ranker": ranker, "model": model})
