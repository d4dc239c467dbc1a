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
    root = Path(training_args.output_dir).resolve().parent
    os.environ.setdefault("WANDB_RUN_GROUP", root.name)
    # Run folders go under the output root (ROOT/wandb/), beside the models they trained, not the cwd's.
    os.environ.setdefault("WANDB_DIR", str(root))
    root.mkdir(parents=True, exist_ok=True)
    if "WANDB_TAGS" not in os.environ:
        os.environ["WANDB_TAGS"] = ",".join(run_tags(training_args, data_dir))


def run_tags(training_args, data_dir: str | Path | None = None) -> list[str]:
    """The run's tags: ``WANDB_TAGS`` when set (by the user or :func:`configure_tracking`), else the variant
    (:func:`run_variant`) and the dataset. trackio has no tags: they go into its run config instead."""
    tags = os.environ.get("WANDB_TAGS")
    if tags:
        return [tag.strip() for tag in tags.split(",") if tag.strip()]
    return [run_variant(training_args), dataset_name(data_dir)]


def run_variant(training_args) -> str:
    """The objective of a control (``continued_sft``, ``rejection_sft``, ``reward_weighted_sft``), else ``eg``
    (GRPO with experts spliced in) or ``vanilla``."""
    objective = getattr(training_args, "training_objective", "grpo")
    if objective != "grpo":
        return objective
    return "eg" if getattr(training_args, "num_expert_samples", 0) else "vanilla"


class LineageToTracker(TrainerCallback):
    """Adds ``eg_grpo/*`` to the W&B and trackio run configs at the start of training.

    Callbacks added to a trainer run after those of ``report_to``, so ``WandbCallback`` and
    ``TrackioCallback`` have started their runs by then.

    Args:
        lineage: JSON data, e.g. ``{"rewards": [...], "stage_fingerprint": ..., "inputs": {...}, "tags": [...]}``.
    """

    def __init__(self, lineage: dict):
        self.lineage = lineage
        self.run_info: dict | None = None  # the run's id etc., recorded in stage.json for evaluation

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        report_to = args.report_to or []
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                wandb.run.config.update({"eg_grpo": self.lineage}, allow_val_change=True)
                self.run_info = tracked_run()
        if "trackio" in report_to:
            import trackio

            # `trackio.config` is the started run's config (a dict), sent with the run's first logged step,
            # which comes after this; a dict's update takes no `allow_val_change`.
            trackio.config.update({"eg_grpo": self.lineage})


def tracked_run() -> dict | None:
    """The active W&B run as ``{"id", "project", "dir", "mode", "group", "tags", "name"}``, or None.

    RL records it in ``stage.json``; an evaluation of the model logs a run of its own that points to it
    (:func:`start_evaluation_run`).
    """
    try:
        import wandb
    except ImportError:
        return None
    run = wandb.run
    if run is None:
        return None
    return {"id": run.id, "project": run.project, "dir": str(Path(run.settings.root_dir)),
            "mode": "offline" if run.settings._offline else "online", "group": run.group,
            "tags": list(run.tags or ()), "name": run.name}  # fmt: skip


def start_evaluation_run(trained: dict, model_dir: str | Path, split: str, eval_dir: str | Path):
    """A W&B run of its own for an evaluation, linked to the run that trained the model.

    Resuming the training run by id does not work offline: W&B writes a second offline folder under the
    same id, which ``wandb sync`` cannot merge, without the run's tags, group or name. So an evaluation
    is its own run (own id, ``job_type="evaluation"``) in the training run's project, group and folder,
    with ``eg_grpo.evaluates`` (the training run's id) and the model folder in its config.

    Args:
        trained: the training run as :func:`tracked_run` recorded it.
        model_dir, split, eval_dir: what is evaluated, on which split, and where the results go.
    """
    import wandb

    name = f"eval-{trained.get('name') or Path(model_dir).name}-{split}"
    config = {"eg_grpo": {"evaluates": trained["id"], "model_dir": str(Path(model_dir).resolve()), "split": split,
                          "eval_dir": str(Path(eval_dir).resolve())}}  # fmt: skip
    return wandb.init(project=trained.get("project"), dir=trained.get("dir"), mode=trained.get("mode", "offline"),
                      group=trained.get("group"), tags=[*trained.get("tags", []), "evaluation"], name=name,
                      job_type="evaluation", config=config)  # fmt: skip
