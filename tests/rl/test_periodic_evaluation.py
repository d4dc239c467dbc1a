"""`PeriodicPolicyEvaluation` logs its figures under the step it measured, whatever `logging_steps` is."""

from __future__ import annotations

from eg_grpo.rl.callbacks import PeriodicPolicyEvaluation
from tests.rl.test_trainer import make_trainer


class StepFigure(PeriodicPolicyEvaluation):
    """Logs the step it ran at, and whether the policy was in eval mode then."""

    def figures(self, model, state):
        return {"valid/measured_step": float(state.global_step), "valid/eval_mode": float(not model.training)}


def test_figures_are_logged_under_the_step_they_measured(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir):
    # Period 3 against logging_steps 2: left to the logging cadence, step 3's figure would be logged at step 4
    # and step 5's (the last) averaged into nothing; each must be logged at its own step.
    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, logging_steps=2, max_steps=5)
    trainer.add_callback(StepFigure(trainer, every=3))
    trainer.train()
    logged = [(h["step"], h["valid/measured_step"], h["valid/eval_mode"]) for h in trainer.state.log_history
              if "valid/measured_step" in h]  # fmt: skip
    assert logged == [(3, 3.0, 1.0), (5, 5.0, 1.0)]
    # the regular cadence is kept: steps 2 and 4 are logged too, with their training metrics
    assert {h["step"] for h in trainer.state.log_history if "loss" in h} == {2, 3, 4, 5}
