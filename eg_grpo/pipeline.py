"""The stage chain: data -> SIDs -> ranker -> SFT -> vanilla / expert-guided GRPO -> evaluation -> report.

Each step is a stage of :data:`eg_grpo.stages.STAGES` with its config file, writing one folder
under the chain's ``output_root``. The chain uses the same check as the recipes (see
:mod:`eg_grpo.io`): it parses each stage's arguments in-process and compares the record the stage
would write with the folder's ``stage.json``; a current stage is skipped without starting a
process. Anything else runs as ``python -m eg_grpo.stages NAME ...`` in the user's working
directory (paths are made absolute first), so the chain works from any folder and from a
non-editable install.

A stage whose folder this chain built (its ``stage.json`` says ``built_by``: this output root) and
whose config or inputs changed is rebuilt, and so is everything after it. A folder the chain did not
build (by hand, by a recipe, another chain) is never replaced: the chain stops and names what
differs and the ``rebuild`` option. The RL stages resume from their newest intact checkpoint.

After the RL runs the chain checks that they are comparable arms (same steps, prompts per step,
learning rate and schedule, RL rows, inputs and seed; each what its name says) and stops, naming
each difference, before any of them is evaluated (:func:`check_rl_runs`).

With ``jobs: N`` in the chain file, the steps after SFT (the RL runs and the SFT model's evaluation,
then the RL runs' evaluations) run N at a time, each with ``cores // N`` torch threads and its console
output in ``OUTPUT_ROOT/logs/<step>.log``: the tiny models of the demo keep one core busy better
than they share two, so two single-threaded runs side by side finish sooner than one after the other.
A step that runs alone gets every core (``OMP_NUM_THREADS``), whatever the launcher exported.

    python -m eg_grpo.pipeline tiny                      # the tiny chain (a couple of minutes on CPU)
    python -m eg_grpo.pipeline demo --rebuild sft        # the demo chain, replacing a hand-made SFT folder
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from eg_grpo.eval.comparability import ComparabilityError, differences, label_problem, run_facts
from eg_grpo.io import OWNER_ENV, PENDING_FILE, StageConflict, check_stage_folder, read_stage
from eg_grpo.stages import get_stage

# The source checkout holding recipes/ (absent from a non-editable install; tests and benchmarks use it).
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class StageResult:
    name: str
    output_dir: Path
    fingerprint: str
    skipped: bool
    seconds: float = 0.0


def preset_dir(name: str) -> Path:
    """The config folder of a shipped preset (``tiny``, ``demo``, ...): packaged data, else the checkout's."""
    packaged = resources.files("eg_grpo").joinpath("configs", name)
    if packaged.is_dir():
        return Path(str(packaged))
    source = REPO_ROOT / "recipes" / "configs" / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"no config preset {name!r}: pass a chain.yaml path, or one of the folders of "
                            "recipes/configs")  # fmt: skip


def resolve_chain_path(chain: str | Path) -> Path:
    """A chain file: a path (against the working directory), or a preset name such as ``tiny``."""
    path = Path(chain).expanduser()
    if path.is_file():
        return path.resolve()
    if path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
        return preset_dir(str(path)) / "chain.yaml"
    raise FileNotFoundError(f"chain file {chain} not found (resolved against {Path.cwd()})")


@dataclass
class ChainConfig:
    """A chain file: where outputs go and the config of every stage (see recipes/configs/*/chain.yaml).

    Stage config paths are relative to the chain file's folder (or absolute); ``output_root`` is
    relative to the working directory. ``jobs`` is how many steps after SFT run at once (1: one
    after the other, their output on the console). ``allow_incomparable: true`` turns the refusal of RL
    runs that are not comparable arms (:func:`check_rl_runs`) into a warning, for chains that test the
    machinery rather than compare arms.
    """

    output_root: str
    stages: dict[str, str]
    rl_runs: list[str] = field(default_factory=lambda: ["vanilla_grpo", "eg_grpo"])
    jobs: int = 1
    allow_incomparable: bool = False
    path: Path | None = None

    @classmethod
    def load(cls, chain: str | Path) -> ChainConfig:
        path = resolve_chain_path(chain)
        raw = yaml.safe_load(path.read_text()) or {}
        allowed = ("output_root", "stages", "rl_runs", "jobs", "allow_incomparable")
        unknown = set(raw) - set(allowed)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(allowed)}")
        allow = raw.get("allow_incomparable", False)
        if not isinstance(allow, bool):
            raise ValueError(f"{path}: allow_incomparable must be true or false, got {allow!r}")
        jobs = raw.get("jobs", 1)
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise ValueError(f"{path}: jobs must be a whole number >= 1, got {jobs!r}")
        rl_runs = raw.get("rl_runs", ["vanilla_grpo", "eg_grpo"])
        missing = {"data", "sids", "ranker", "sft", "evaluate", *rl_runs} - set(raw.get("stages", {}))
        if missing:
            raise ValueError(f"{path}: 'stages' lacks a config for {sorted(missing)}")
        stages = {}
        for name, config in raw["stages"].items():
            resolved = (path.parent / config).resolve()
            if not resolved.is_file():
                raise FileNotFoundError(f"{path}: the '{name}' config {config} does not exist ({resolved})")
            stages[name] = str(resolved)
        return cls(output_root=raw["output_root"], stages=stages, rl_runs=rl_runs, jobs=jobs,
                   allow_incomparable=allow, path=path)  # fmt: skip


def _argv(config: str | Path, output_dir: Path, args: dict) -> list[str]:
    argv = ["--config", str(config), "--output_dir", str(output_dir)]
    for key, value in args.items():
        argv += (
            [f"--{key}", *map(str, value)] if isinstance(value, list | tuple) else [f"--{key}", str(value)]
        )
    return argv


def run_stage(name: str, stage: str, config: str | Path, output_dir: str | Path, args: dict | None = None,
              owner: str | None = None, rebuild: bool = False, log: Path | None = None,
              threads: int | None = None) -> StageResult:  # fmt: skip
    """Runs one stage unless its folder is current; never replaces a folder ``owner`` did not build.

    Args:
        name: the step's name in messages (``sft``, ``eval_eg_grpo``).
        stage: its entry in :data:`eg_grpo.stages.STAGES`.
        config: the stage's YAML config.
        output_dir: the stage folder.
        args: further ``--key value`` arguments (input folders).
        owner: who is building (the chain's output root); a stale folder built by the same owner is rebuilt.
        rebuild: replace the folder even if someone else built it.
        log: write the stage's console output to this file instead of the console (parallel steps).
        threads: ``OMP_NUM_THREADS`` of the stage process (None: inherited).

    Raises:
        StageConflict: the folder holds another config or a hand-built artifact, and may not be replaced.
        RuntimeError: the stage failed; its output was streamed to the console above.
    """
    output_dir = Path(output_dir).resolve()
    entry = get_stage(stage)
    argv = _argv(config, output_dir, dict(args or {}))
    record_function = entry.record_function()
    existing = read_stage(output_dir)
    pending = output_dir / PENDING_FILE
    started = json.loads(pending.read_text()) if pending.is_file() else None
    owned = owner is not None and (existing or started or {}).get("built_by") == owner
    overwrite = rebuild
    if record_function is not None:
        record = record_function(*entry.parse(argv))
        if existing is not None and existing["fingerprint"] == record["fingerprint"]:
            print(f"[chain] {name}: up to date in {output_dir}, skipped")
            return StageResult(name, output_dir, record["fingerprint"], skipped=True)
        resumable = (
            existing is None and started is not None and started["fingerprint"] == record["fingerprint"]
        )
        if not resumable and not rebuild:
            if owned:
                print(f"[chain] {name}: config or inputs changed, rebuilding {output_dir}")
                overwrite = True
            else:
                try:
                    check_stage_folder(output_dir, record)
                except StageConflict as err:
                    raise StageConflict(_conflict_hint(name, err, owner)) from None
    command = [sys.executable, "-m", "eg_grpo.stages", stage, *argv] + (
        ["--overwrite", "true"] if overwrite else []
    )
    print(f"[chain] {name}: {' '.join(command[1:])}" + (f"\n[chain] {name}: output in {log}" if log else ""),
          flush=True)  # fmt: skip
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({OWNER_ENV: owner} if owner else {}),
           **({"OMP_NUM_THREADS": str(threads)} if threads else {})}  # fmt: skip
    if log is None:
        returncode = subprocess.run(command, env=env).returncode
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as sink:
            returncode = subprocess.run(command, env=env, stdout=sink, stderr=subprocess.STDOUT).returncode
        if returncode != 0:  # the error is at the end of the log; show it where the user is looking
            tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-30:]
            print(f"[chain] {name} failed; the end of {log}:\n" + "\n".join(tail), flush=True)
    where = "above" if log is None else f"in {log}"
    if returncode == 3:
        raise StageConflict(_conflict_hint(name, f"see the message {where}", owner))
    if returncode != 0:
        raise RuntimeError(f"stage '{name}' failed (exit {returncode}); fix the error {where} and re-run: "
                           "finished stages are kept")  # fmt: skip
    done = read_stage(output_dir)
    if done is None:
        raise RuntimeError(f"stage '{name}' exited 0 but wrote no {output_dir}/stage.json")
    seconds = time.perf_counter() - start
    if log is not None:
        print(f"[chain] {name}: built in {seconds:.0f} s", flush=True)
    return StageResult(name, output_dir, done["fingerprint"], skipped=False, seconds=seconds)


def _conflict_hint(name: str, err, owner: str | None) -> str:
    if owner is None:  # an RL run building its earlier stages: the user rebuilds that stage by hand
        return (
            f"{err}\n[{name}] rebuild it with `python -m eg_grpo.stages {name} ... --overwrite true` first."
        )
    return (f"{err}\n[chain] {name}: this folder was not built by this chain, so it is kept. To replace it, re-run "
            f"with rebuild=['{name}'] (`python -m eg_grpo.pipeline CHAIN --rebuild {name}`), or set another "
            "output_root.")  # fmt: skip


def run_chain(chain_path: str | Path = "demo", output_root: str | Path | None = None,
              rebuild: tuple[str, ...] | list[str] = ()) -> dict[str, StageResult]:  # fmt: skip
    """Runs the whole chain; returns each step's result. Re-running continues where it stopped.

    Args:
        chain_path: a chain file, or a preset name (``tiny``, ``demo``).
        output_root: overrides the file's ``output_root`` (relative to the working directory).
        rebuild: step names (``sft``, ``eg_grpo``, ``eval_sft``, ...) whose folders may be replaced even
            though this chain did not build them.
    """
    chain = ChainConfig.load(chain_path)
    root = Path(output_root or chain.output_root).resolve()
    owner = f"chain:{root}"
    s = chain.stages
    t0 = time.perf_counter()
    done: dict[str, StageResult] = {}

    cores = cores_available()

    def step(name, stage, config, out, args=None, shared=False):
        # A step that runs beside others (jobs > 1) gets a log file and its share of the cores; a step that
        # runs alone gets every core, whatever the launcher set (`accelerate launch` exports
        # OMP_NUM_THREADS=1, which left the SID stage's text encoder on one core of two).
        if shared and chain.jobs > 1:
            where = {"log": root / "logs" / f"{name}.log", "threads": max(1, cores // chain.jobs)}
        else:
            where = {"threads": cores}
        done[name] = run_stage(name, stage, config, out, args, owner=owner, rebuild=name in rebuild, **where)
        return done[name]

    step("data", "data", s["data"], root / "data")
    data = {"data_dir": root / "data"}
    step("sids", "sids", s["sids"], root / "sids", data)
    step("ranker", "ranker", s["ranker"], root / "ranker", data)
    sid_args = {**data, "sid_dir": root / "sids"}
    models = {
        "sft": step("sft", "sft", s["sft"], root / "sft", {**sid_args, "resume_from_checkpoint": "last"})
    }

    def train(run):
        rl_args = {**sid_args, "ranker_dir": root / "ranker", "model_name_or_path": root / "sft", "chain": "false",
                   "resume_from_checkpoint": "last"}  # fmt: skip
        models[run] = step(run, "rl", s[run], root / run, rl_args, shared=True)

    def evaluate(run):
        step(f"eval_{run}", "evaluate", s["evaluate"], root / "eval" / run,
             {**sid_args, "model_dir": models[run].output_dir}, shared=True)  # fmt: skip

    # Every RL run (the SFT model's evaluation after them, filling a gap when jobs > 1), then the check that
    # the runs are comparable arms, then their evaluations: nothing is evaluated or played in the arena
    # beside runs of other steps, learning rate, rows or inputs.
    run_all([*(lambda r=r: train(r) for r in chain.rl_runs), lambda: evaluate("sft")], chain.jobs)
    check_rl_runs(root, chain, owner)
    run_all([lambda r=r: evaluate(r) for r in chain.rl_runs], chain.jobs)
    models = {run: models[run] for run in ("sft", *chain.rl_runs)}
    order = ["data", "sids", "ranker", *models, *(f"eval_{run}" for run in models)]
    done = {name: done[name] for name in order}
    arena_dir = None
    if "arena" in s:  # every model as a generative channel beside the classical ones (simulated A/B)
        generative = [f"{run}={result.output_dir}" for run, result in models.items()]
        arena_args = {**sid_args, "ranker_dir": root / "ranker", "generative": generative}
        arena_dir = step("arena", "arena", s["arena"], root / "arena", arena_args).output_dir
    from eg_grpo.report import write_report

    rl_dirs = [str(root / run) for run in chain.rl_runs]
    eval_dirs = [str(root / "eval" / run) for run in models]
    report = write_report(
        root, sid_dir=root / "sids", rl_dirs=rl_dirs, eval_dirs=eval_dirs, arena_dir=arena_dir
    )
    _print_summary(done, report, time.perf_counter() - t0)
    return done


def check_rl_runs(root: Path, chain: ChainConfig, owner: str) -> None:
    """Refuses to go on when the chain's RL runs are not comparable arms (:mod:`eg_grpo.eval.comparability`).

    Each run must be what its name says (``vanilla_grpo``: GRPO with ``num_expert_samples: 0``,
    ``continued_sft``: the continued-SFT objective, ...) and all must hold equal steps, prompts per
    step, learning rate and schedule, RL rows, inputs and seed. A run folder without a record (a
    stage that wrote none) is not checked.

    Raises:
        ComparabilityError: naming each differing key with both values, the runs' config files and
            the fix (make the configs agree; ``--rebuild NAME`` for a run this chain did not build).
    """
    facts = [run_facts(root / run, name=run) for run in chain.rl_runs]
    problems = [p for f in facts if (p := label_problem(f.name, f))] + differences(facts)
    if not problems:
        return
    foreign = [run for run in chain.rl_runs if (read_stage(root / run) or {}).get("built_by") != owner]
    configs = ", ".join(f"{run}: {chain.stages[run]}" for run in chain.rl_runs)
    rebuild = (f" The chain did not build {', '.join(foreign)}: re-run with `--rebuild {' '.join(foreign)}` so "
               "it may replace them." if foreign else "")  # fmt: skip
    if chain.allow_incomparable:
        print("[chain] WARNING: the RL runs are not comparable arms (allow_incomparable: true), going on:\n"
              + "\n".join(f"  - {p}" for p in problems), file=sys.stderr, flush=True)  # fmt: skip
        return
    raise ComparabilityError(
        "[chain] the RL runs are not comparable, so nothing is evaluated:\n"
        + "\n".join(f"  - {p}" for p in problems)
        + f"\nFix: make their stage configs agree ({configs}) and re-run the chain: it rebuilds the runs whose "
        f"config changed.{rebuild}"
    )


def cores_available() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_all(tasks, jobs: int) -> None:
    """Calls ``tasks`` ``jobs`` at a time; after a failure, starts no more and re-raises it once the running ones end."""
    if jobs == 1:
        for task in tasks:
            task()
        return
    failed = threading.Event()

    def guarded(task):
        if failed.is_set():  # not started: left for the re-run (finished stages are kept)
            return
        try:
            task()
        except BaseException:
            failed.set()  # before this worker takes the next task
            raise

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(guarded, task) for task in tasks]
        wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def _print_summary(done: dict[str, StageResult], report: Path, seconds: float) -> None:
    width = max(len(n) for n in done)
    print("\n" + "=" * 72)
    print(f"eg-grpo chain finished in {seconds / 60:.1f} min")
    for name, r in done.items():
        state = "skipped (up to date)" if r.skipped else f"built in {r.seconds:.0f} s"
        print(f"  {name:<{width}}  {state:<22} {r.output_dir}")
    print(f"report: {report}")
    print("=" * 72)


_UPSTREAM = [("data", "data", "data_dir"), ("sids", "sids", "sid_dir"), ("ranker", "ranker", "ranker_dir"),
             ("sft", "sft", "model_dir")]  # fmt: skip


def ensure_upstream(data_dir: str, sid_dir: str, model_dir: str, ranker_dir: str | None,
                    stage_configs: dict[str, str]) -> None:  # fmt: skip
    """Builds the missing stages an RL run reads (data, SIDs, ranker, SFT), each at the folder its config declares.

    A folder that exists is checked like any stage folder: current is fine, anything else is an
    error (nothing is replaced here). A missing folder is built only when its stage config declares
    that very ``output_dir`` (so a mistyped ``--data_dir`` is an error, not a new dataset there).

    Raises:
        FileNotFoundError: a folder is missing and no stage config declares it.
        StageConflict: an existing folder holds another config or a hand-built artifact.
    """
    unknown = set(stage_configs) - {"data", "sids", "ranker", "sft"}
    if unknown:
        raise ValueError(f"stage_configs: unknown stage(s) {sorted(unknown)}; use data, sids, ranker, sft")
    paths = {"data_dir": data_dir, "sid_dir": sid_dir, "ranker_dir": ranker_dir, "model_dir": model_dir}
    inputs = {"sids": {"data_dir": data_dir}, "ranker": {"data_dir": data_dir},
              "sft": {"data_dir": data_dir, "sid_dir": sid_dir}}  # fmt: skip
    for name, stage, key in _UPSTREAM:
        out = paths[key]
        if out is None:
            continue
        out = Path(out)
        config = stage_configs.get(name)
        if config is None:
            if not out.exists():
                raise FileNotFoundError(f"{key} {out} does not exist (resolved against {Path.cwd()}) and "
                                        f"stage_configs has no '{name}' config to build it")  # fmt: skip
            continue
        declared = (yaml.safe_load(Path(config).read_text()) or {}).get("output_dir")
        if not out.exists() and (declared is None or Path(declared).resolve() != out.resolve()):
            raise FileNotFoundError(
                f"{key} {out} does not exist (resolved against {Path.cwd()}). Its stage config {config} builds "
                f"{declared or 'no declared output_dir'}: fix the path, or build it first with "
                f"`python -m eg_grpo.stages {stage} --config {config} --output_dir {out}`"
            )
        run_stage(name, stage, config, out, {k: v for k, v in inputs.get(name, {}).items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eg_grpo.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("chain", nargs="?", default="demo", help="chain file or preset name (tiny, demo)")
    parser.add_argument("--output_root", default=None, help="overrides the chain file's output_root")
    parser.add_argument("--rebuild", nargs="*", default=[], help="steps whose folders may be replaced")
    args = parser.parse_args(argv)
    try:
        run_chain(args.chain, args.output_root, args.rebuild)
    except (StageConflict, FileNotFoundError, ValueError, RuntimeError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
