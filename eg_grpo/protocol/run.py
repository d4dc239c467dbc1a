"""The protocol's runs: the tuning grid on valid, then each arm's chosen setting on every test seed.

Every run is a stage of :mod:`eg_grpo.stages` started by :func:`eg_grpo.pipeline.run_stage`, so a folder
that is current is skipped and an interrupted RL run resumes from its newest intact checkpoint. The
layout under ``output_root``::

    tune/<arm>/models/<trial>   tune/<arm>/eval/<trial>   tune/<arm>/arena   tune/sft_eval
    selection.json
    test/<arm>/models/s<seed>   test/<arm>/eval/s<seed>   test/arena         test/sft_eval
    logs/<step>.log (steps run beside others)

With ``jobs: N`` the runs go N at a time, each with ``cores // N`` torch threads (the demo's tiny models
keep one core busy better than they share two). Longer runs start first, so the cores stay busy to the end.
"""

from __future__ import annotations

import json
from pathlib import Path

from eg_grpo.eval.comparability import ComparabilityError, differences, run_facts
from eg_grpo.io import read_stage, write_json
from eg_grpo.pipeline import cores_available, run_all, run_stage
from eg_grpo.protocol.config import START_MODEL, ProtocolConfig, Trial

SELECTION_FILE = "selection.json"


class Runner:
    """Starts the stages of one protocol file (paths made absolute, logs when steps share the cores)."""

    def __init__(self, config: ProtocolConfig, phase: str):
        self.config = config
        self.root = config.output_root.resolve()
        self.owner = f"protocol:{self.root}"
        self.inputs = {k: Path(v).resolve() for k, v in config.inputs[phase].items() if v is not None}
        # the folders are stage outputs; the start model a local model folder (every arm and evaluation reads it)
        missing = [f"{k}: {v}" for k, v in self.inputs.items()
                   if not (v / ("config.json" if k == "model_name_or_path" else "stage.json")).is_file()]  # fmt: skip
        if missing:
            raise FileNotFoundError(
                f"{config.path}: inputs not built ({'; '.join(missing)}); build them first (the demo's: "
                "python -m eg_grpo.pipeline demo, or its data, sids, ranker and sft stages)"
            )
        self.threads = max(1, cores_available() // config.jobs)

    def step(self, name: str, stage: str, config: Path, out: Path, args: dict, alone: bool = False) -> Path:
        """Runs one stage; ``alone``: nothing runs beside it, so it gets every core and the console."""
        shared = {"log": self.root / "logs" / f"{name}.log"} if self.config.jobs > 1 and not alone else {}
        threads = cores_available() if alone else self.threads
        run_stage(name, stage, config, out, args, owner=self.owner, threads=threads, **shared)
        return out

    def train(self, name: str, config: Path, out: Path, seed: int, settings: dict) -> Path:
        args = {**self.config.rl_overrides, **settings, **self.inputs, "chain": "false",
                "resume_from_checkpoint": "last", "seed": seed}  # fmt: skip
        return self.step(name, "rl", config, out, args)

    def evaluate(self, name: str, config: Path, model: Path, out: Path) -> Path:
        args = {"data_dir": self.inputs["data_dir"], "sid_dir": self.inputs["sid_dir"], "model_dir": model}
        return self.step(name, "evaluate", config, out, args)

    def arena(self, name: str, config: Path, models: dict[str, Path], out: Path, alone: bool = False) -> Path:
        # one index cache for every arena of the protocol (the first arena builds it, alone)
        args = {"data_dir": self.inputs["data_dir"], "sid_dir": self.inputs["sid_dir"],
                "ranker_dir": self.inputs["ranker_dir"], "per_request": "true", "index_dir": self.root / "arena_index",
                "generative": [f"{n}={path}" for n, path in models.items()]}  # fmt: skip
        return self.step(name, "arena", config, out, args, alone)


def tune_dirs(root: Path, trial: Trial) -> tuple[Path, Path]:
    """``(model folder, valid evaluation folder)`` of a tuning trial."""
    arm = root / "tune" / trial.arm
    return arm / "models" / trial.name, arm / "eval" / trial.name


def test_dirs(root: Path, arm: str, seed: int) -> tuple[Path, Path]:
    """``(model folder, test evaluation folder)`` of an arm's chosen setting at one seed."""
    return root / "test" / arm / "models" / f"s{seed}", root / "test" / arm / "eval" / f"s{seed}"


def tune(config: ProtocolConfig) -> None:
    """Every arm's grid on the tuning seed, each trial evaluated on valid; then one valid arena per arm
    (its trials and the start model on the same sampled requests)."""
    runner, root, seed = Runner(config, "tune"), config.output_root.resolve(), config.tune.seeds[0]
    trials = sorted(config.trials(), key=lambda t: -(t.steps or 0))  # longest first: no idle core at the end

    def trial_task(trial: Trial):
        model, evaluation = tune_dirs(root, trial)
        runner.train(
            f"tune_{trial.arm}_{trial.name}", config.arms[trial.arm].config, model, seed, trial.settings
        )
        runner.evaluate(f"tune_eval_{trial.arm}_{trial.name}", config.tune.evaluate, model, evaluation)

    start = runner.inputs["model_name_or_path"]
    run_all([*(lambda t=t: trial_task(t) for t in trials),
             lambda: runner.evaluate("tune_eval_sft", config.tune.evaluate, start, root / "tune" / "sft_eval")],
            config.jobs)  # fmt: skip
    check_comparable(
        config, [tune_dirs(root, t)[0] for t in config.trials()], what="tuning", same_setting=False
    )

    def arena_task(arm: str, alone: bool = False):
        models = {START_MODEL: start, **{t.name: tune_dirs(root, t)[0] for t in config.arms[arm].trials()}}
        runner.arena(f"tune_arena_{arm}", config.tune.arena, models, root / "tune" / arm / "arena", alone)

    if config.tune.arena is None:  # no funnel: the selection reads the evaluations
        return
    # the first arena builds the shared channel indexes, alone; the others then read them, side by side
    first, *rest = config.arms
    arena_task(first, alone=True)
    run_all([lambda a=a: arena_task(a) for a in rest], config.jobs)


def read_selection(config: ProtocolConfig) -> dict:
    """``selection.json`` (written by :func:`eg_grpo.protocol.select.select_all`), checked against the file."""
    path = config.output_root / SELECTION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run the tuning and the selection first (--step select)"
        )
    selection = json.loads(path.read_text())
    now = {"grids": {name: arm.grid for name, arm in config.arms.items()}, "selection": config.selection}
    then = {"grids": selection.get("grids"), "selection": selection.get("selection")}
    if then != now:
        raise ValueError(f"{path} was selected under {then}; the protocol file now has {now}: re-run the "
                         "tuning and --step select")  # fmt: skip
    return selection


def test(config: ProtocolConfig) -> None:
    """Each arm's chosen setting (``selection.json``) on every test seed, evaluated on test; the runs are
    checked to be comparable arms (everything but the tuned keys held equal, the same seeds), then all of
    them and the start model are played in one test arena on the same sampled requests."""
    selection = read_selection(config)
    runner, root = Runner(config, "test"), config.output_root.resolve()
    # the selection these test runs were made under: a later selection must choose the same (select.py)
    (root / "test").mkdir(parents=True, exist_ok=True)
    if not (root / "test" / SELECTION_FILE).is_file():
        write_json(root / "test" / SELECTION_FILE, selection)
    chosen = {arm: selection["arms"][arm]["chosen"]["settings"] for arm in config.arms}
    runs = [(arm, seed) for arm in config.arms for seed in config.test.seeds]
    runs.sort(key=lambda r: -(chosen[r[0]].get("max_steps") or 0))

    def seed_task(arm: str, seed: int):
        model, evaluation = test_dirs(root, arm, seed)
        runner.train(f"test_{arm}_s{seed}", config.arms[arm].config, model, seed, chosen[arm])
        runner.evaluate(f"test_eval_{arm}_s{seed}", config.test.evaluate, model, evaluation)

    start = runner.inputs["model_name_or_path"]
    run_all([*(lambda a=a, s=s: seed_task(a, s) for a, s in runs),
             lambda: runner.evaluate("test_eval_sft", config.test.evaluate, start, root / "test" / "sft_eval")],
            config.jobs)  # fmt: skip
    check_comparable(config, [test_dirs(root, arm, seed)[0] for arm, seed in runs])
    if config.test.arena is None:
        return
    models = {START_MODEL: start, **{f"{arm}_s{seed}": test_dirs(root, arm, seed)[0] for arm, seed in runs}}
    runner.arena("test_arena", config.test.arena, models, root / "test" / "arena", alone=True)


def check_comparable(config: ProtocolConfig, model_dirs: list[Path], what: str = "test",
                     same_setting: bool = True) -> None:  # fmt: skip
    """Refuses runs that differ in anything the protocol holds equal (rows, prompts per step, schedule type,
    optimizer, inputs, seeds across arms). The grid's keys may differ between arms; with ``same_setting``
    (the test runs) every run of one arm must share one value of each (its seeds differ in the seed only).
    A model folder is ``<arm>/models/<run>``."""
    problems = differences([run_facts(d, f"{d.parent.parent.name}/{d.name}") for d in model_dirs],
                           tuned=config.tuned_keys())  # fmt: skip
    if same_setting:
        by_arm: dict[str, list[Path]] = {}
        for d in model_dirs:
            by_arm.setdefault(d.parent.parent.name, []).append(d)
        for arm, dirs in by_arm.items():
            for key in config.tuned_keys():
                values = {json.dumps(_training(d).get(key)) for d in dirs}
                if len(values) > 1:
                    problems.append(f"{key}: the runs of {arm} differ ({', '.join(sorted(values))})")
    if problems:
        raise ComparabilityError(
            f"the protocol's {what} runs are not comparable arms:\n  " + "\n  ".join(problems)
        )


def _training(model_dir: Path) -> dict:
    return ((read_stage(model_dir) or {}).get("config") or {}).get("training") or {}
