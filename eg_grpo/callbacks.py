"""Held-out SID metrics during RL: HR@K on a fixed valid subsample, logged like any training metric.

Evaluation runs outside the training step and rarely (evaluating inside
it has cost other SID generators 3.8× step time), on a fixed seeded subsample so successive points are comparable.
"""

from __future__ import annotations

from transformers import TrainerCallback
from trl.models import unwrap_model_for_generation

from eg_grpo.eval.evaluator import EvalSettings, evaluate_model

METRIC_PREFIX = "valid/"


class HeldOutSIDMetrics(TrainerCallback):
    """Every ``every`` optimizer steps (and after the last), evaluates the policy with constrained beam
    search and appends ``valid/hr@K`` and ``valid/ndcg@K`` to the trainer's metrics of that step.

    Args:
        trainer: the `EGGRPOTrainer` (its model, tokenizer, codebook and metric buffer).
        log: the dataset.
        every: evaluation period in optimizer steps (> 0).
        settings: what to measure; a small beam and subsample keep this cheap.
    """

    def __init__(self, trainer, log, every: int, settings: EvalSettings):
        if every <= 0:
            raise ValueError("every must be positive")
        log.split(settings.split)  # an empty split fails here, at start-up, not after `every` steps
        self.trainer, self.log, self.every, self.settings = trainer, log, every, settings

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every and state.global_step != state.max_steps:
            return control
        trainer = self.trainer
        # As for the rollouts, ZeRO-3 weights are gathered once first (`ds3_gather_for_generation`): a
        # partitioned weight reads as shape (0,) (the evaluation sizes its trie from the head), and a search on
        # partitioned weights would re-gather every layer at every decoding step.
        with unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
        ) as model:  # fmt: skip
            was_training = model.training
            model.eval()
            try:
                results = evaluate_model(model, trainer.processing_class, self.log, trainer.codebook, self.settings)
            finally:
                model.train(was_training)
        metrics = trainer._metrics["train"]  # logged (and cleared) by the trainer's next log() call
        for k in self.settings.ks:
            metrics[f"{METRIC_PREFIX}hr@{k}"].append(results[f"hr@{k}"])
            metrics[f"{METRIC_PREFIX}ndcg@{k}"].append(results[f"ndcg@{k}"])
        return control
