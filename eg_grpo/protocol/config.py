"""The protocol's YAML file: the arms, their grids, the seeds, the evaluation configs and the comparisons.

A sketch (``recipes/configs/demo/protocol/protocol.yaml`` is the full one; the arms' configs and the phase
files are read relative to the protocol file's folder, ``inputs`` and ``output_root`` relative to the
working directory, as the chain's are)::

    output_root: outputs/demo/protocol
    inputs: {data_dir: outputs/demo/data, sid_dir: outputs/demo/sids, ranker_dir: outputs/demo/ranker,
             model_name_or_path: outputs/demo/sft}
    arms:
      eg_grpo: {config: eg_grpo.yaml, grid: {learning_rate: [5.0e-5, 1.0e-4], max_steps: [120, 240],
                                             num_expert_samples: [1, 2]}}
      ...
    rl_overrides: {sid_eval_steps: 0}       # the same for every arm
    tune: {seed: 0, evaluate: evaluate_valid.yaml, arena: arena_valid.yaml}
    test: {seeds: [0, 1, 2, 3, 4], evaluate: evaluate_test.yaml, arena: arena_test.yaml}
    selection: {ranking_stage: legacy, budget_mode: supplement, metric: purchases}
    comparisons: [[eg_grpo, sft], [eg_grpo, vanilla_grpo]]
    jobs: 2

Refused with a message naming the key: an unknown key, an arm named ``sft`` (the start model's name), a
grid whose size differs between arms (the protocol gives every arm the same budget), trial names that
collide or hold characters a folder or an arena entry cannot, a comparison naming an arm that does not
exist or named twice, a test seed list shorter than two, ``rl_overrides`` setting what the protocol sets
(the seed, folders, a grid key), and a tuning phase whose evaluation or arena does not read ``valid`` (or
a test phase that does not read ``test``): a choice is never made on test.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

START_MODEL = "sft"  # the arms' common start: a model, not an arm, in comparisons and arenas
METRICS = ("clicks", "purchases", "gmv")  # arena figures a selection may read (per request)
HIT_METRIC = re.compile(r"^hr@(\d+)$")  # or the evaluation's hit of the target SID in the top K (real data)
# short names of grid keys in trial names; a key not listed keeps its own name
SHORT = {"learning_rate": "lr", "max_steps": "steps", "num_expert_samples": "k", "rejection_selection": "sel"}
_KEYS = {"output_root", "inputs", "arms", "rl_overrides", "tune", "test", "selection", "comparisons", "jobs"}
_INPUTS = ("data_dir", "sid_dir", "ranker_dir", "model_name_or_path")
# what the protocol itself passes to every RL run: rl_overrides may not set it
_RESERVED = {*_INPUTS, "seed", "output_dir", "chain", "resume_from_checkpoint", "overwrite"}
_TRIAL_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # a folder name and an arena ``name=path`` entry


@dataclass(frozen=True)
class Trial:
    """One setting of one arm: ``settings`` are the ``--key value`` overrides of the arm's RL config.

    Attributes:
        arm: the arm's name.
        name: the setting as a folder name, e.g. ``lr0.0001_steps240_k2``.
        settings: grid key -> value.
    """

    arm: str
    name: str
    settings: dict

    @property
    def steps(self) -> int | None:
        return self.settings.get("max_steps")


@dataclass(frozen=True)
class ArmSpec:
    """An arm: its RL config (the untuned settings) and its grid (key -> the values tried)."""

    name: str
    config: Path
    grid: dict

    def trials(self) -> list[Trial]:
        """Every combination of the grid, in the file's order (the first key varies slowest)."""
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            settings = dict(zip(keys, values, strict=True))
            name = "_".join(f"{SHORT.get(k, k)}{_show(v)}" for k, v in settings.items())
            out.append(Trial(self.name, name, settings))
        return out


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Phase:
    """Where a phase plays: its seeds and the evaluation and arena configs."""

    seeds: list[int]
    evaluate: Path
    arena: Path | None  # None: no funnel (real data); the selection reads hr@K from the evaluations


@dataclass(frozen=True)
class ProtocolConfig:
    """The parsed protocol file (see the module docstring)."""

    path: Path
    output_root: Path
    inputs: dict  # phase ("tune", "test") -> the four input folders (ranker_dir may be None)
    arms: dict
    rl_overrides: dict
    tune: Phase
    test: Phase
    selection: dict
    comparisons: list
    jobs: int

    @classmethod
    def load(cls, path: str | Path) -> ProtocolConfig:
        path = Path(path)
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a protocol file is a mapping of keys, got {type(raw).__name__}")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; a protocol file has {sorted(_KEYS)}")
        missing = sorted({"output_root", "inputs", "arms", "tune", "test", "comparisons"} - set(raw))
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}")
        here = path.parent
        inputs = _inputs(path, raw["inputs"])
        arms = {}
        for name, spec in raw["arms"].items():
            if name == START_MODEL:
                raise ValueError(f"{path}: an arm may not be named {START_MODEL!r}: that is the start model")
            if set(spec) != {"config", "grid"} or not spec["grid"]:
                raise ValueError(f"{path}: arm {name!r} needs exactly `config` and a non-empty `grid`")
            bad = [k for k, v in spec["grid"].items() if not isinstance(v, list) or not v]
            if bad:
                raise ValueError(f"{path}: arm {name!r}: grid values must be non-empty lists: {bad}")
            arms[name] = ArmSpec(name, here / spec["config"], dict(spec["grid"]))
        for arm in arms.values():
            names = [t.name for t in arm.trials()]
            bad = [n for n in names if not _TRIAL_NAME.match(n)]
            if bad or len(set(names)) != len(names):
                raise ValueError(f"{path}: arm {arm.name!r}: trial names must be distinct and use only letters, "
                                 f"digits, '.', '_' and '-': {names}")  # fmt: skip
        sizes = {name: len(arm.trials()) for name, arm in arms.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"{path}: every arm gets the same tuning budget, but the grids have {sizes} trials"
            )
        tune, test = (_phase(path, raw[k], k) for k in ("tune", "test"))
        if len(test.seeds) < 2:
            raise ValueError(f"{path}: test.seeds needs at least two seeds (seed spread), got {test.seeds}")
        selection = {"ranking_stage": "legacy", "budget_mode": "supplement", "metric": "purchases",
                     **(raw.get("selection") or {})}  # fmt: skip
        if set(selection) != {"ranking_stage", "budget_mode", "metric"}:
            raise ValueError(
                f"{path}: selection keys are ranking_stage, budget_mode, metric; got {sorted(selection)}"
            )
        if selection["metric"] not in METRICS and not HIT_METRIC.match(str(selection["metric"])):
            raise ValueError(
                f"{path}: selection.metric must be one of {METRICS} (an arena's) or hr@K (the evaluation's), "
                f"got {selection['metric']!r}"
            )
        hit = HIT_METRIC.match(str(selection["metric"]))
        beams = min((yaml.safe_load(p.evaluate.read_text()) or {}).get("num_beams", 0) for p in (tune, test))
        if hit and not 1 <= int(hit.group(1)) <= beams:
            raise ValueError(f"{path}: selection.metric {selection['metric']} needs 1 <= K <= the evaluations' "
                             f"num_beams ({beams}): a target ranked past the beam is not seen")  # fmt: skip
        for phase, name in ((tune, "tune"), (test, "test")):
            if phase.arena is None and selection["metric"] in METRICS:
                raise ValueError(f"{path}: {name} has no arena, but selection.metric {selection['metric']!r} "
                                 "is an arena figure")  # fmt: skip
            if phase.arena is not None and inputs[name]["ranker_dir"] is None:
                raise ValueError(f"{path}: {name} plays an arena, which needs inputs.ranker_dir")
        comparisons = [tuple(c) for c in raw["comparisons"]]
        known = {START_MODEL, *arms}
        for pair in comparisons:
            if len(pair) != 2 or not set(pair) <= known or pair[0] == pair[1]:
                raise ValueError(f"{path}: comparison {list(pair)} must name two of {sorted(known)}")
        if len({frozenset(p) for p in comparisons}) != len(comparisons):
            raise ValueError(f"{path}: a comparison is named twice in {comparisons} (Holm counts each once)")
        rl_overrides = dict(raw.get("rl_overrides") or {})
        clash = sorted(set(rl_overrides) & (_RESERVED | {k for arm in arms.values() for k in arm.grid}))
        if clash:
            raise ValueError(f"{path}: rl_overrides may not set {clash}: the protocol sets the seed, the folders "
                             "and the grid's keys itself")  # fmt: skip
        jobs = raw.get("jobs", 1)
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise ValueError(f"{path}: jobs must be a whole number >= 1, got {jobs!r}")
        return cls(path=path, output_root=Path(raw["output_root"]), inputs=inputs, arms=arms,
                   rl_overrides=rl_overrides, tune=tune, test=test,
                   selection=selection, comparisons=comparisons, jobs=jobs)  # fmt: skip

    def trials(self) -> list[Trial]:
        return [t for arm in self.arms.values() for t in arm.trials()]

    @property
    def hit_k(self) -> int | None:
        """K of an ``hr@K`` selection metric (read from the evaluations), None for an arena figure."""
        match = HIT_METRIC.match(str(self.selection["metric"]))
        return int(match.group(1)) if match else None

    def tuned_keys(self) -> tuple[str, ...]:
        """The grid keys: what each arm chooses for itself, and may differ between arms."""
        return tuple(sorted({k for arm in self.arms.values() for k in arm.grid}))


def _inputs(path: Path, raw) -> dict:
    """``{"tune": {...}, "test": {...}}``: one mapping for both phases, or one per phase (real data tunes on
    an earlier layout with its own data, SIDs and SFT model). ``ranker_dir`` may be left out (no arena)."""
    per_phase = raw if isinstance(raw, dict) and set(raw) == {"tune", "test"} else {"tune": raw, "test": raw}
    out = {}
    for phase, inputs in per_phase.items():
        inputs = {"ranker_dir": None, **(inputs or {})}
        if sorted(inputs) != sorted(_INPUTS):
            raise ValueError(f"{path}: inputs ({phase}) must name {list(_INPUTS)} (ranker_dir optional), got "
                             f"{sorted(inputs)}")  # fmt: skip
        out[phase] = inputs
    return out


def _phase(path: Path, raw, key: str) -> Phase:
    allowed = {"seed", "evaluate", "arena"} if key == "tune" else {"seeds", "evaluate", "arena"}
    if isinstance(raw, dict) and "arena" not in raw:
        raw = {**raw, "arena": None}  # no arena: the selection reads an evaluation metric (hr@K)
    if not isinstance(raw, dict) or set(raw) != allowed:
        raise ValueError(f"{path}: {key} needs exactly {sorted(allowed)} (arena optional), got {raw!r}")
    seeds = [raw["seed"]] if key == "tune" else list(raw["seeds"])
    whole = all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    if not whole or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: {key} seeds must be distinct whole numbers, got {seeds}")
    arena = path.parent / raw["arena"] if raw["arena"] else None
    phase = Phase(seeds, path.parent / raw["evaluate"], arena)
    split = "valid" if key == "tune" else "test"
    for file in (f for f in (phase.evaluate, phase.arena) if f is not None):
        if not file.is_file():
            raise ValueError(f"{path}: {key}: {file} does not exist")
        read = (yaml.safe_load(file.read_text()) or {}).get("split")
        if read != split:
            raise ValueError(f"{path}: {key} must read the {split} split, but {file} has split: {read!r}")
    return phase
