"""Callbacks of the RL stage: held-out SID metrics during training, and a compact console line.

Held-out SID metrics: HR@K on a fixed valid subsample, logged like any training metric.

Evaluation runs outside the training step and rarely (evaluating inside
it has cost other SID generators 3.8× step time), on a fixed seeded subsample so successive points are comparable.
"""

from __future__ import annotations

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl.models import unwrap_model_for_generation

from eg_grpo.eval.evaluator import EvalSettings, evaluate_model

METRIC_PREFIX = "valid/"


class PeriodicPolicyEvaluation(TrainerCallback):
    """Every ``every`` optimizer steps (and after the last), evaluates the unwrapped policy in eval mode
    and appends the figures :meth:`figures` returns to the trainer's metrics of that step, which is logged
    then (whatever ``logging_steps`` is), so the figures are logged under the step they measured.

    Every process computes the same figures: with ZeRO-3 the weights gathering for generation is
    collective, and nothing here communicates otherwise.

    Args:
        trainer: the trainer (its model, tokenizer, codebook and metric buffer).
        every: evaluation period in optimizer steps (> 0).
    """

    def __init__(self, trainer, every: int):
        if every <= 0:
            raise ValueError("every must be positive")
        self.trainer, self.every = trainer, every

    def figures(self, model, state) -> dict[str, float]:
        """The logged figures of ``model`` (unwrapped, in eval mode) at ``state``."""
        raise NotImplementedError

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
                figures = self.figures(model, state)
            finally:
                model.train(was_training)
        metrics = trainer._metrics["train"]  # logged (and cleared) by the trainer's next log() call
        for key, value in figures.items():
            metrics[key].append(value)
        # Log at this step: left to `logging_steps`, a period that is not a multiple of it would put the
        # figures under the next logging step (the trainer logs right after `on_step_end`).
        control.should_log = True
        return control


class HeldOutSIDMetrics(PeriodicPolicyEvaluation):
    """Constrained beam search on a fixed valid subsample: ``valid/hr@K`` and ``valid/ndcg@K``.

    Args:
        trainer: the `EGGRPOTrainer` (its model, tokenizer, codebook and metric buffer).
        log: the dataset.
        every: evaluation period in optimizer steps (> 0).
        settings: what to measure; a small beam and subsample keep this cheap.
    """

    def __init__(self, trainer, log, every: int, settings: EvalSettings):
        super().__init__(trainer, every)
        log.split(settings.split)  # an empty split fails here, at start-up, not after `every` steps
        self.log, self.settings = log, settings

    def figures(self, model, state) -> dict[str, float]:
        trainer = self.trainer
        results = evaluate_model(model, trainer.processing_class, self.log, trainer.codebook, self.settings)
        return {
            f"{METRIC_PREFIX}{name}@{k}": results[f"{name}@{k}"]
            for k in self.settings.ks
            for name in ("hr", "ndcg")
        }


# (logged key, console label) of the eg/* diagnostics shown on the console line
CONSOLE_EG_KEYS = (
    ("eg/expert_frac", "expert"),
    ("eg/valid_sid_rate", "valid_sid"),
    ("eg/hit_rate_sampled", "hit"),
    ("eg/distinct_sids_per_group", "distinct"),
    # the oracle curves' points (eg_grpo.rl.oracle_curves): learned view vs what the simulated users do
    ("eg/learned_reward", "learned"),
    ("eg/oracle_gmv_lift", "oracle_gmv_lift"),
)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def console_line(step: int, logs: dict) -> str:
    """One short line of a step's logs, e.g.
    ``step 4 | loss 2.98e-08 lr 0.0005 | reward 0.2409 ± 0.3804 (sid_match 0.1354 ctr 0.09716) |
    eg expert 0.0625 valid_sid 1 hit 0.06667 distinct 7.5 | valid/hr@10 0.2022 | 0.1499 s/step``.

    With ``eg/reward_sampled`` logged (every ``EGGRPOTrainer`` run, expert-guided or vanilla) the reward
    shown is the mean over the policy's own samples (``sampled reward``), so both arms compare like for
    like; TRL's ``reward``, which counts the spliced expert rows, follows as ``with expert rows`` when
    experts were spliced in. Without it (the line above) TRL's ``reward`` is shown as is.

    A log without ``loss`` (the end-of-training summary, an evaluation) is printed whole, still on
    one line. The full dict goes to the trackers (``report_to``) and ``trainer.state.log_history``.
    """
    if "loss" not in logs:
        return f"step {step} | " + " ".join(f"{k} {_number(v)}" for k, v in logs.items() if k != "total_flos")
    parts = [f"step {step}", f"loss {_number(logs['loss'])}"]
    if "learning_rate" in logs:
        parts[-1] += f" lr {_number(logs['learning_rate'])}"
    if "eg/reward_sampled" in logs:
        # TRL's `reward` averages in the spliced expert rows, whose reward is the ground truth's: it would
        # show EG-GRPO ahead of vanilla by the experts alone. Both arms show the policy's own samples.
        reward = f"sampled reward {_number(logs['eg/reward_sampled'])}"
        each = [f"{k[len('eg/rewards/') : -len('/mean_sampled')]} {_number(v)}" for k, v in logs.items()
                if k.startswith("eg/rewards/") and k.endswith("/mean_sampled")]  # fmt: skip
        reward += f" ({' '.join(each)})" if each else ""
        if logs.get("eg/expert_frac") and "reward" in logs:
            reward += f" with expert rows {_number(logs['reward'])}"
        parts.append(reward)
    elif "reward" in logs:
        reward = f"reward {_number(logs['reward'])}"
        if "reward_std" in logs:
            reward += f" ± {_number(logs['reward_std'])}"
        each = [f"{k[len('rewards/') : -len('/mean')]} {_number(v)}" for k, v in logs.items()
                if k.startswith("rewards/") and k.endswith("/mean")]  # fmt: skip
        parts.append(reward + (f" ({' '.join(each)})" if each else ""))
    eg = [f"{label} {_number(logs[k])}" for k, label in CONSOLE_EG_KEYS if k in logs]
    if eg:
        parts.append("eg " + " ".join(eg))
    held_out = [
        f"{k} {_number(v)}" for k, v in logs.items() if k.startswith(METRIC_PREFIX) and k.endswith("@10")
    ]
    if held_out:
        parts.append(" ".join(held_out))
    if "step_time" in logs:
        parts.append(f"{_number(logs['step_time'])} s/step")
    return " | ".join(parts)


class CompactProgressCallback(ProgressCallback):
    """TRL's progress bar with :func:`console_line` in place of the printed metrics dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(console_line(state.global_step, logs))


class CompactPrinterCallback(PrinterCallback):
    """The printer used with ``disable_tqdm``, printing :func:`console_line`."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(console_line(state.global_step, logs))


def use_compact_console(trainer) -> None:
    """Swaps the trainer's console printer (progress bar or plain printer) for the compact one."""
    for stock, compact in (
        (ProgressCallback, CompactProgressCallback),
        (PrinterCallback, CompactPrinterCallback),
    ):
        if any(type(cb) is stock for cb in trainer.callback_handler.callbacks):
            trainer.remove_callback(stock)
            trainer.add_callback(compact)
