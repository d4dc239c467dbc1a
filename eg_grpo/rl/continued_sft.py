"""The supervised control of EG-GRPO: continued SFT on exactly the rows EG-GRPO splices.

With ``training_objective: continued_sft`` the RL stage (:func:`eg_grpo.rl.stage.run`) trains the SFT start
model with TRL's ``SFTTrainer`` instead of GRPO, on

* the same prompts: the RL rows of :func:`eg_grpo.data.rl_dataset.build_rl_dataset` (same split,
  ``max_train_rows``, ``keep_train_rows``, seed, prompt settings), tokenized as GRPO tokenizes them;
* the same targets: each prompt's first ``num_expert_samples`` distinct expert SIDs in
  ``expert_source`` order, as token ids (``expert_completion_ids``: SID tokens + eos), the very rows
  :func:`eg_grpo.rl.expert.splice_group` puts into a group;
* the same budget: ``max_steps`` optimizer steps of the same number of prompts each
  (``per_device_train_batch_size × processes × gradient_accumulation_steps / num_generations``), every
  prompt expanded into its expert rows, with the same learning rate, schedule, optimizer and seed.

The loss is next-token cross-entropy on the target tokens only (the prompt is labelled ``-100``),
averaged over the target tokens of the optimizer step. What it does not match is documented in
docs/training.md ("The supervised control").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments
from trl import ModelConfig, SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments, add_run_callbacks, load_rl_inputs
from eg_grpo.sft.model import lora_config
from eg_grpo.sft.trainer import SIDSFTTrainer

IGNORE_INDEX = -100  # label of a token outside the loss (the prompt)

logger = logging.getLogger(__name__)


def expert_targets(expert_completion_ids: list[list[int]], k: int) -> list[list[int]]:
    """The first ``k`` distinct expert completions of a row, in ``expert_source`` order.

    These are the completions :func:`eg_grpo.rl.expert.splice_group` tries first for the ``k`` expert
    slots of the row's group (it moves to later ones only when the policy sampled an expert itself).
    """
    targets: list[list[int]] = []
    for ids in expert_completion_ids:
        if len(targets) == k:
            break
        if list(ids) not in targets:
            targets.append(list(ids))
    return targets


def control_rows(rl_dataset, tokenizer, k: int):
    """One row per RL prompt: its prompt token ids and its up to ``k`` expert targets.

    Args:
        rl_dataset: the RL rows (``prompt``, ``expert_completion_ids``, ``request_id``, ...).
        tokenizer: the policy's tokenizer; prompts are tokenized as GRPO does (``tokenizer(text=...)``).
        k: ``num_expert_samples``.

    Returns:
        A `datasets.Dataset` with ``request_id``, ``prompt_ids`` and ``targets`` (a list of token-id
        lists, each ending with eos). :class:`ExpertTargetsCollator` expands each into its rows.

    Raises:
        ValueError: ``k < 1``, or a row without an expert (the RL rows keep only requests with one).
    """
    if k < 1:
        raise ValueError(f"the supervised control needs k >= 1 expert targets per prompt, got {k}")

    def to_row(prompt, experts, request_id):
        if not experts:
            raise ValueError(
                f"RL row of request {request_id} has no expert SID: build it with require_expert=True"
            )
        return {"request_id": request_id, "prompt_ids": tokenizer(text=prompt)["input_ids"],
                "targets": expert_targets(experts, k)}  # fmt: skip

    rows = [to_row(p, e, r) for p, e, r in zip(rl_dataset["prompt"], rl_dataset["expert_completion_ids"],
                                                rl_dataset["request_id"])]  # fmt: skip
    most = max((len(r["targets"]) for r in rows), default=k)
    if most < k:  # e.g. one logged item per request: k and `most` train the very same model
        logger.warning(
            "num_expert_samples=%d, but no RL prompt has more than %d distinct expert SID(s): this run trains "
            "exactly as num_expert_samples=%d would", k, most, most,
        )  # fmt: skip
    from datasets import Dataset

    return Dataset.from_list(rows)


def target_pairs(rows) -> list[tuple[int, tuple[int, ...]]]:
    """``(request_id, target ids)`` of every supervised row the control trains on, in dataset order."""
    return [(int(r["request_id"]), tuple(t)) for r in rows for t in r["targets"]]


@dataclass
class ExpertTargetsCollator:
    """Expands each prompt of a batch into one sequence per expert target, loss on the target only.

    A batch of ``P`` prompts with ``n_i`` targets each becomes ``sum(n_i)`` sequences
    ``prompt_ids + target`` with labels ``[-100] * len(prompt_ids) + target``, right-padded by TRL's
    ``DataCollatorForLanguageModeling``: ``input_ids``, ``attention_mask``, ``labels`` of shape
    ``(sum(n_i), T)``. Batching by prompt is what keeps the number of prompts per optimizer step that of
    GRPO, whatever the number of experts of each prompt.
    """

    pad_token_id: int
    _collate: Any = field(init=False, repr=False)

    def __post_init__(self):
        self._collate = DataCollatorForLanguageModeling(pad_token_id=self.pad_token_id)

    def __call__(self, examples: list[dict]) -> dict:
        sequences = [
            {
                "input_ids": ex["prompt_ids"] + target,
                "labels": [IGNORE_INDEX] * len(ex["prompt_ids"]) + target,
            }
            for ex in examples
            for target in ex["targets"]
        ]
        return self._collate(sequences)


@dataclass
class ContinuedSFTConfig(SFTConfig):
    """TRL's ``SFTConfig`` plus the one GRPO field the held-out SID metrics read when they decode."""

    ds3_gather_for_generation: bool = True


def matched_sft_config(args: EGGRPOConfig, dtype: str | None = None) -> ContinuedSFTConfig:
    """The ``SFTConfig`` of the control: every ``TrainingArguments`` setting of the RL config (steps,
    learning rate, schedule, warm-up, optimizer, weight decay, clipping, seed, precision, logging,
    checkpoints, trackers, output folder) with the batch counted in prompts instead of completions.

    GRPO's ``per_device_train_batch_size`` counts completions, ``num_generations`` per prompt; the
    control's counts prompts: ``per_device_train_batch_size / num_generations`` with the same gradient
    accumulation, or, when that is not whole, ``per_device × accumulation / num_generations`` prompts
    in one accumulation step (the optimizer step sees the same prompts and the same loss either way).
    """
    shared = {f.name: getattr(args, f.name) for f in fields(TrainingArguments) if f.init}
    G, batch, accumulation = (
        args.num_generations,
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
    )
    if batch % G == 0:
        prompts_per_device = batch // G
    else:
        prompts_per_device, accumulation = batch * accumulation // G, 1
    shared.update(
        per_device_train_batch_size=prompts_per_device, gradient_accumulation_steps=accumulation,
        eval_strategy="no", do_eval=False,  # GRPO's evaluation scores rollouts; the control has none
        remove_unused_columns=False,  # the collator reads prompt_ids / targets
    )  # fmt: skip
    return ContinuedSFTConfig(
        **shared, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None, packing=False,
        model_init_kwargs={**(args.model_init_kwargs or {}), "dtype": dtype or "auto"},
        ds3_gather_for_generation=args.ds3_gather_for_generation,
    )  # fmt: skip


def build_continued_sft_trainer(
    script_args: EGGRPOScriptArguments, training_args: EGGRPOConfig, model_args: ModelConfig
) -> SFTTrainer:
    """The control's ``SFTTrainer`` on the RL rows' prompts and expert targets, with the RL run's callbacks.

    The trainer gets ``codebook`` (read by the held-out SID metrics) and ``rl_args`` (the RL config
    it is the control of). The rewards of the config are recorded in the stage record, not used.
    """
    inputs = load_rl_inputs(script_args, training_args, model_args)
    tokenizer = inputs.tokenizer
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"the tokenizer of {model_args.model_name_or_path} has no pad token; SFT batches need one"
        )
    rows = control_rows(inputs.dataset, tokenizer, training_args.num_expert_samples)
    trainer = SIDSFTTrainer(
        model=model_args.model_name_or_path, args=matched_sft_config(training_args, model_args.dtype),
        data_collator=ExpertTargetsCollator(tokenizer.pad_token_id), train_dataset=rows,
        processing_class=tokenizer, peft_config=lora_config(model_args),
    )  # fmt: skip
    trainer.codebook, trainer.rl_args = inputs.codebook, training_args
    add_run_callbacks(trainer, inputs, script_args, training_args)
    return trainer
