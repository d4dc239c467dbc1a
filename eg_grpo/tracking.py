"""Experiment tracking (W&B) for the RL stage: our project name, tags, and the run's full lineage.

transformers' ``WandbCallback`` puts the training arguments into the run config; what makes two runs
comparable is missing there: which rewards (names and arguments), which data, SIDs, ranker and SFT
model (their fingerprints, see :mod:`eg_grpo.io`). :class:`LineageToTracker` adds them once the run
has started.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainerCallback

DEFAULT_PROJECT = "eg-grpo"


def dataset_name(data_dir: str | Path | None) -> str:
    """A short name of the dataset: ``outputs/demo/data`` -> ``demo``, ``data/amazon_office`` -> ``amazon_office``."""
    if not data_dir:
        return "unknown"
    path = Path(data_dir).resolve()
    return path.parent.name if path.name == "data" else path.name


def configure_tracking(training_args, data_dir: str | Path | None = None) -> None:
    """W&B without a key or network runs offline (a local run folder to ``wandb sync`` later); runs go to
    project ``eg-grpo`` unless ``WANDB_PROJECT`` is set; runs of one output root share a group so vanilla
    and expert-guided sit side by side; tags say vanilla / eg and the dataset."""
    if "wandb" not in (training_args.report_to or []):
        return
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
        print(
            "[eg_grpo] no WANDB_API_KEY: W&B runs offline; `wandb sync wandb/offline-run-*` uploads it later"
        )
    os.environ.setdefault("WANDB_PROJECT", DEFAULT_PROJECT)
    os.environ.setdefault("WANDB_RUN_GROUP", Path(training_args.output_dir).resolve().parent.name)
    if "WANDB_TAGS" not in os.environ:
        variant = "eg" if getattr(training_args, "num_expert_samples", 0) else "vanilla"
        os.environ["WANDB_TAGS"] = f"{variant},{dataset_name(data_dir)}"


class LineageToTracker(TrainerCallback):
    """Adds ``eg_grpo/*`` to the W&B run config at the start of training (after ``WandbCallback`` set it up).

    Args:
        lineage: JSON data, e.g. ``{"rewards": [...], "stage": {...}, "inputs": {...}}``.
    """

    def __init__(self, lineage: dict):
        self.lineage = lineage
        self.run_info: dict | None = None  # the run's id etc., recorded in stage.json for evaluation

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or "wandb" not in (args.report_to or []):
            return
        import wandb

        if wandb.run is not None:
            wandb.run.config.update({"eg_grpo": self.lineage}, allow_val_change=True)
            self.run_info = tracked_run()


def tracked_run() -> dict | None:
    """The active W&B run as ``{"id", "project", "dir", "mode"}`` (what evaluation resumes), or None."""
    try:
        import wandb
    except ImportError:
        return None
    run = wandb.run
    if run is None:
        return None
    return {"id": run.id, "project": run.project, "dir": str(Path(run.settings.root_dir)),
            "mode": "offline" if run.settings._offline else "online"}  # fmt: skip
