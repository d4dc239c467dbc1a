"""Progressive SFT: a list of supervised stages run in order, each starting from the previous model.

The paper (arXiv 2605.14434) warms its generator up in stages before RL: item → SID, then
query → SID, then personalised user + query → SID. Here a stage is one entry of
``sft_stages`` in the SFT config (see :class:`SFTStageSpec`)::

    sft_stages:
      - {task: item_to_sid, num_train_epochs: 1, learning_rate: 3.0e-3}
      - {task: query_to_sid, sids_per_query: 3, max_rows: 20000}
      - {task: personalized, num_train_epochs: 3}

Each stage is an ordinary SFT run (:func:`eg_grpo.sft.stage.run`) with its own task, data size, epochs and
learning rate; stage ``i > 1`` loads the folder of stage ``i - 1``. The earlier stages write
``OUTPUT_DIR_stages/<i>_<name>``, the last one ``OUTPUT_DIR``, so later pipeline stages read one
model folder as before. Every stage folder carries its ``stage.json``, whose record names the
previous stage's folder by content fingerprint: a rerun skips the stages that are current and
retrains from the first one whose settings (or predecessor) changed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eg_grpo.sft.tasks import check_task_arguments

STAGE_KEYS = ("task", "name", "max_rows", "num_train_epochs", "learning_rate")


@dataclass
class SFTStageSpec:
    """One stage of progressive SFT.

    Args:
        task: a built-in task (``item_to_sid``, ``query_to_sid``, ``personalized``) or a dotted path
            ``package.module:function`` (see :mod:`eg_grpo.sft.tasks`).
        name: the stage's folder name (default ``<position>_<task>``, the task's last dotted part).
        max_rows: a seeded subsample of the task's rows (None: all).
        num_train_epochs: epochs of this stage (None: the SFT config's).
        learning_rate: peak learning rate of this stage (None: the SFT config's).
        task_kwargs: the task builder's own arguments (e.g. ``sids_per_query``).
    """

    task: str
    name: str | None = None
    max_rows: int | None = None
    num_train_epochs: float | None = None
    learning_rate: float | None = None
    task_kwargs: dict[str, Any] = field(default_factory=dict)


def parse_sft_stages(value: Any) -> list[SFTStageSpec]:
    """A list of :class:`SFTStageSpec` from YAML data or its JSON text (``None`` / ``[]``: no stages).

    Keys other than those of :data:`STAGE_KEYS` are the task's arguments (they may also be nested under
    ``task_kwargs:``). Stage names must be unique.

    Raises:
        ValueError: not a list of mappings, a stage without ``task``, an unknown task, arguments the
            task does not take, a non-positive size or rate, or a repeated name.
    """
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"sft_stages must be a list of stages (YAML or JSON), got {value!r}: {err}"
            ) from None
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError(
            "sft_stages must be a list of mappings such as [{task: item_to_sid}, {task: personalized}], "
            f"got {value!r}"
        )
    stages, names = [], set()
    for position, entry in enumerate(value, start=1):
        if "task" not in entry:
            raise ValueError(f"sft_stages[{position - 1}] has no 'task': {dict(entry)}")
        kwargs = {**{k: v for k, v in entry.items() if k not in (*STAGE_KEYS, "task_kwargs")},
                  **dict(entry.get("task_kwargs") or {})}  # fmt: skip
        spec = SFTStageSpec(**{k: entry[k] for k in STAGE_KEYS if k in entry}, task_kwargs=kwargs)
        check_task_arguments(spec.task, {"max_rows": spec.max_rows, **kwargs})
        for key in ("max_rows", "num_train_epochs", "learning_rate"):
            if getattr(spec, key) is not None and not getattr(spec, key) > 0:
                raise ValueError(f"sft_stages[{position - 1}].{key} must be > 0, got {getattr(spec, key)}")
        spec.name = spec.name or f"{position}_{spec.task.rpartition(':')[2]}"
        if spec.name in names:
            raise ValueError(f"two SFT stages are named {spec.name!r}; give one a distinct 'name'")
        names.add(spec.name)
        stages.append(spec)
    return stages


def stage_folders(output_dir: str | Path, stages: list[SFTStageSpec]) -> list[Path]:
    """Where each stage writes: ``OUTPUT_DIR_stages/<name>`` for all but the last, ``OUTPUT_DIR`` for it."""
    output_dir = Path(output_dir)
    side = output_dir.with_name(output_dir.name + "_stages")
    return [side / s.name for s in stages[:-1]] + [output_dir]


def stage_arguments_of(script_args, training_args, model_args, spec: SFTStageSpec, folder: Path, base):
    """The three argument objects of one stage: the run's, with this stage's task, sizes and base model."""
    script = replace(script_args, sft_stages=None, task=spec.task, task_kwargs=dict(spec.task_kwargs) or None,
                     max_train_rows=spec.max_rows)  # fmt: skip
    training = copy.copy(training_args)  # setattr, not replace(): keeps TrainingArguments' resolved fields
    training.output_dir = str(folder)
    if spec.num_train_epochs is not None:
        training.num_train_epochs = float(spec.num_train_epochs)
    if spec.learning_rate is not None:
        training.learning_rate = float(spec.learning_rate)
    model = replace(
        model_args, model_name_or_path=str(base) if base is not None else model_args.model_name_or_path
    )
    return script, training, model


def run_progressive(script_args, training_args, model_args, run_stage: Callable[..., dict]) -> dict:
    """Runs ``script_args.sft_stages`` in order; returns ``{stage name: its metrics}`` ({} when current).

    ``run_stage`` trains one stage from its three argument objects: the SFT stage passes its own
    :func:`eg_grpo.sft.stage.run`, so this module does not import the stage that imports it.

    Raises:
        ValueError: a bad stage list (see :func:`parse_sft_stages`), before anything is trained.
        StageConflict: a stage folder holds a model of other settings (pass ``--overwrite true``).
    """
    stages = parse_sft_stages(script_args.sft_stages)
    if not stages:
        raise ValueError("run_progressive needs a non-empty sft_stages list")
    results, base = {}, None
    for spec, folder in zip(stages, stage_folders(training_args.output_dir, stages)):
        print(f"SFT stage {spec.name}: task {spec.task} -> {folder}")
        metrics = run_stage(*stage_arguments_of(script_args, training_args, model_args, spec, folder, base))
        if metrics:
            results[spec.name] = {k: v for k, v in metrics.items() if k != "log_history"}
        base = folder
    return results
