"""What a side-by-side comparison of training arms holds equal, read from the folders' ``stage.json``.

A table that puts EG-GRPO beside vanilla GRPO or a supervised control claims that only the arm
differs: the objective (``training_objective``) and the number of expert rows
(``num_expert_samples``). Everything else that shapes the model must be the same in every arm:

- the budget: ``max_steps``, prompts per optimizer step (``per_device_train_batch_size ×
  gradient_accumulation_steps / num_generations``, as :mod:`eg_grpo.rl.continued_sft` matches it; the
  process count is not in the record, so runs launched on other GPU counts are not told apart);
- the optimisation: ``learning_rate``, the schedule (``lr_scheduler_type``, its kwargs, warm-up)
  and ``optim``;
- the rows: ``train_split``, ``max_train_rows``, ``keep_train_rows``;
- the inputs, by fingerprint: the data, the SIDs and the start model;
- the seed, across arms: seeds may differ between the runs of one arm (its seeds), but every arm
  must have been run with the same seeds.

:func:`run_facts` reads these from an RL folder, or from an evaluation folder by following its
``inputs`` to the model's ``stage.json``; :func:`differences` lists what differs between arms,
naming the key and both values; :func:`label_problem` checks that a row label (``EG-GRPO (K=2)``,
``GRPO (K=0)``, ``vanilla``, ``continued SFT``, ``rejection SFT``, ``SFT``) is what the model is.
``eg_grpo.eval.paper_tables``, ``eg_grpo.compare`` and ``eg_grpo.pipeline`` refuse on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from eg_grpo.io import PENDING_FILE, read_stage

# Keys of the record's config.training / config.script that every arm must share.
TRAINING_KEYS = ("max_steps", "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio",
                 "warmup_steps", "optim")  # fmt: skip
SCRIPT_KEYS = ("train_split", "max_train_rows", "keep_train_rows")
INPUT_KEYS = {"data": "data", "sids": "sids", "start_model": "model"}  # fact name -> record input name
HELD_EQUAL = (*TRAINING_KEYS, "prompts_per_step", *SCRIPT_KEYS, *INPUT_KEYS)


class ComparabilityError(ValueError):
    """Runs put side by side differ in what the comparison holds equal; the message names each key."""


@dataclass
class RunFacts:
    """What one folder says about the model it holds or evaluates.

    Attributes:
        name: how messages name it (the folder's name unless the caller gives a label).
        folder: the folder read (RL or evaluation).
        stage: the model's stage (``rl``, ``sft``, ...), None when it cannot be told.
        objective: ``training_objective`` of an RL model (``grpo`` for records older than the field).
        num_expert_samples: its ``k``.
        seed: its seed.
        held: the :data:`HELD_EQUAL` facts.
        note: why nothing could be read (no record, a model rebuilt after its evaluation), else None.
    """

    name: str
    folder: str
    stage: str | None = None
    objective: str | None = None
    num_expert_samples: int | None = None
    seed: int | None = None
    held: dict = field(default_factory=dict)
    note: str | None = None

    @property
    def arm(self) -> tuple[str | None, int | None]:
        return self.objective, self.num_expert_samples


def _prompts_per_step(training: Mapping) -> int | float | None:
    try:
        value = Fraction(training["per_device_train_batch_size"] * training["gradient_accumulation_steps"],
                         training["num_generations"])  # fmt: skip
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return int(value) if value.denominator == 1 else float(value)


def facts_from_record(record: Mapping, name: str, folder: str | Path) -> RunFacts:
    """The facts of a model's stage record (an RL record gives them all; another stage, only its name)."""
    if record.get("stage") != "rl":
        return RunFacts(name, str(folder), stage=record.get("stage"))
    config = record.get("config") or {}
    training, script = config.get("training") or {}, config.get("script") or {}
    inputs = record.get("inputs") or {}
    held = {key: training.get(key) for key in TRAINING_KEYS}
    held["prompts_per_step"] = _prompts_per_step(training)
    held.update({key: script.get(key) for key in SCRIPT_KEYS})
    held.update({fact: (inputs.get(source) or {}).get("fingerprint") for fact, source in INPUT_KEYS.items()})
    return RunFacts(name, str(folder), stage="rl", objective=training.get("training_objective", "grpo"),
                    num_expert_samples=training.get("num_expert_samples"), seed=training.get("seed"),
                    held=held)  # fmt: skip


def run_facts(folder: str | Path, name: str | None = None) -> RunFacts:
    """The facts of an RL folder, or of the model an evaluation folder evaluated.

    An evaluation's ``stage.json`` names its model (``inputs.model``: path and fingerprint); a
    folder without one falls back on ``eval_results.json``'s ``model_dir``. An RL run still training
    is read from its ``stage.pending.json``. When the model folder now holds another fingerprint than
    the evaluation recorded, the model was rebuilt after it was evaluated: the facts would describe
    a model that was not evaluated, so none are given and ``note`` says to re-evaluate.
    """
    folder = Path(folder)
    name = name or folder.name
    record = read_stage(folder) or _pending(folder)
    if record is not None and record.get("stage") != "evaluate":
        return facts_from_record(record, name, folder)
    model_path, recorded = None, None
    if record is not None:
        entry = (record.get("inputs") or {}).get("model") or {}
        model_path, recorded = entry.get("path"), entry.get("fingerprint")
    elif (folder / "eval_results.json").is_file():
        model_path = json.loads((folder / "eval_results.json").read_text()).get("model_dir")
    if model_path is None:
        return RunFacts(name, str(folder), note=f"{folder} records no stage.json naming its model")
    model = read_stage(model_path)
    if model is None:
        return RunFacts(name, str(folder), note=f"the model {model_path} of {folder} has no stage.json")
    if recorded is not None and model["fingerprint"] != recorded:
        return RunFacts(name, str(folder), note=(
            f"the model {model_path} was rebuilt after {folder} evaluated it (fingerprint {recorded} then, "
            f"{model['fingerprint']} now): re-evaluate it"))  # fmt: skip
    return facts_from_record(model, name, folder)


def _pending(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / PENDING_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("stage") == "rl" else None


def _show(value) -> str:
    return json.dumps(value, default=str)


def _names(runs: Iterable[RunFacts]) -> str:
    return ", ".join(sorted({r.name for r in runs}))


def differences(runs: Sequence[RunFacts], tuned: Sequence[str] = ()) -> list[str]:
    """What the RL runs among ``runs`` do not hold equal: ``key: value (runs) vs value (runs)`` lines.

    Runs of one arm (same objective and ``k``) are its seeds: they may differ in ``seed`` only. Arms
    must agree on every :data:`HELD_EQUAL` fact and have been run with the same seeds. Runs that are
    not RL (the SFT start model) or could not be read are left out: SFT against RL differs by design.
    ``tuned`` names facts each arm chose for itself under one tuning protocol (:mod:`eg_grpo.protocol`:
    the same grid size and selection rule on valid), which may therefore differ between arms.
    """
    rl = [r for r in runs if r.stage == "rl"]
    out = []
    for key in (k for k in HELD_EQUAL if k not in tuned):
        by_value: dict[str, list[RunFacts]] = {}
        for run in rl:
            by_value.setdefault(_show(run.held.get(key)), []).append(run)
        if len(by_value) > 1:
            out.append(f"{key}: " + " vs ".join(f"{v} ({_names(r)})" for v, r in by_value.items()))
    arms: dict[tuple, list[RunFacts]] = {}
    for run in rl:
        arms.setdefault(run.arm, []).append(run)
    by_seeds: dict[str, list[RunFacts]] = {}
    for members in arms.values():
        by_seeds.setdefault(_show(sorted({r.seed for r in members}, key=str)), []).extend(members)
    if len(by_seeds) > 1:
        out.append("seed: " + " vs ".join(f"{v} ({_names(r)})" for v, r in by_seeds.items()))
    return out


def expected_for_label(label: str) -> dict | None:
    """What a row label claims: ``{"stage": ..., "objective": ..., "num_expert_samples": ...}``, or None.

    ``K=n`` in a label is the number of expert rows; ``EG-GRPO`` without it needs ``k > 0`` (given
    as ``"k>0"``). Labels that name none of the arms (a SID variant, a free name) claim nothing.
    """
    text = re.sub(r"[_\-]+", " ", label.lower()).strip()
    match = re.search(r"\bk\s*=\s*(\d+)", text)
    k = int(match.group(1)) if match else None
    for word, objective in (("rejection", "rejection_sft"), ("reward weighted", "reward_weighted_sft"),
                            ("continued", "continued_sft")):  # fmt: skip
        if word in text:
            return {
                "stage": "rl",
                "objective": objective,
                **({"num_expert_samples": k} if k is not None else {}),
            }
    if re.fullmatch(r"sft(\s*\(.*\))?", text):
        return {"stage": "sft"}
    if "grpo" in text:
        if k is None:  # EG-GRPO without its K: some experts; plain or vanilla GRPO: none
            k = "k>0" if re.search(r"\beg grpo", text) else 0
        return {"stage": "rl", "objective": "grpo", "num_expert_samples": k}
    if "vanilla" in text:
        return {"stage": "rl", "objective": "grpo", "num_expert_samples": 0}
    return None


# Folder names the chain and the shipped configs give runs (``eval/eg_grpo``, ``eg_grpo_k4_s1``): such a
# name is a claim about the model, as a row label is. Free names claim nothing.
_RUN_NAME = re.compile(
    r"(sft|vanilla_grpo|eg_grpo(?:_k(\d+))?|continued_sft|rejection_sft|reward_weighted_sft)(?:_s\d+)?"
)


def name_label(name: str) -> str | None:
    """The row label a chain-style folder name claims (``eg_grpo_k4_s1`` → ``eg_grpo (K=4)``), or None."""
    match = _RUN_NAME.fullmatch(name)
    if match is None:
        return None
    return re.sub(r"_k\d+$", "", match.group(1)) + (f" (K={match.group(2)})" if match.group(2) else "")


def label_problem(label: str, run: RunFacts) -> str | None:
    """Why ``run`` is not what ``label`` says it is, or None (it is, or either cannot be told)."""
    expected = expected_for_label(label)
    if expected is None or run.stage is None:
        return None
    actual = {
        "stage": run.stage,
        "training_objective": run.objective,
        "num_expert_samples": run.num_expert_samples,
    }
    wrong = []
    for key, want in expected.items():
        key = "training_objective" if key == "objective" else key
        got = actual[key]
        if want == "k>0" and not (isinstance(got, int) and got > 0):
            wrong.append(f"{key} {_show(got)} (the label needs > 0)")
        elif want != "k>0" and got != want:
            wrong.append(f"{key} {_show(got)} (the label needs {_show(want)})")
    if not wrong:
        return None
    return f"{label!r}: the model of {run.folder} has " + ", ".join(wrong)


def check_rows(rows: Mapping[str, Sequence[str | Path]]) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` of a table whose rows (label → folders, one per seed) are arms.

    Problems: a folder that is not what its label says (:func:`label_problem`) and the
    :func:`differences` between the rows. Notes: folders that could not be checked (no record).
    """
    problems, notes, runs = [], [], []
    for label, folders in rows.items():
        for folder in folders:
            run = run_facts(folder, name=f"{label}: {Path(folder).name}")
            runs.append(run)
            if run.note:
                notes.append(f"{label}: not checked: {run.note}")
            elif problem := label_problem(label, run):
                problems.append(problem)
    return problems + differences(runs), notes
