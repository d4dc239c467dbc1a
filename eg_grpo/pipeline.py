"""The stage chain: data → SIDs → ranker → SFT → vanilla / expert-guided GRPO → evaluation → report.

Each stage is its recipe, run as a subprocess with its config, writing one artifact folder. A
stage is skipped when its folder holds a marker whose fingerprint matches the config file's
content, the arguments and the fingerprints of the stages it reads; otherwise it is (re)built,
and so is everything after it. Recipes write their folders atomically, and the marker is written
only after the recipe succeeded, so an interrupted chain re-run loses no finished stage and never
takes a half-written one as done. The RL stages resume from their last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from eg_grpo.io import write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES = REPO_ROOT / "recipes"
CHAIN_MARKER = "chain_stage.json"


@dataclass
class StageResult:
    name: str
    output_dir: Path
    fingerprint: str
    skipped: bool
    seconds: float = 0.0


def _file_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    if not path.exists():
        raise FileNotFoundError(f"stage config {path} not found")
    return path.read_text()


def stage_fingerprint(recipe: str, config: str | Path, args: dict, upstream: list[str]) -> str:
    payload = json.dumps(
        {"recipe": recipe, "config": _file_text(config), "args": {k: str(v) for k, v in sorted(args.items())},
         "upstream": upstream}, sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def is_current(output_dir: Path, fingerprint: str) -> bool:
    marker = Path(output_dir) / CHAIN_MARKER
    try:
        return json.loads(marker.read_text())["fingerprint"] == fingerprint
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False


def run_stage(name: str, recipe: str, config: str | Path, output_dir: str | Path, args: dict | None = None,
              upstream: list[str] | None = None, extra_argv: list[str] | None = None) -> StageResult:  # fmt: skip
    """Runs ``recipes/<recipe>.py --config CONFIG --output_dir OUT --key value ...`` unless current.

    Raises:
        RuntimeError: when the recipe fails; its output was streamed to the console above.
    """
    args, output_dir = dict(args or {}), Path(output_dir)
    fp = stage_fingerprint(recipe, config, args, list(upstream or []))
    if is_current(output_dir, fp):
        print(f"[chain] {name}: up to date in {output_dir}, skipped")
        return StageResult(name, output_dir, fp, skipped=True)
    if (output_dir / CHAIN_MARKER).exists():
        print(f"[chain] {name}: config or inputs changed, rebuilding {output_dir}")
        (output_dir / CHAIN_MARKER).unlink()
    argv = [sys.executable, str(RECIPES / f"{recipe}.py"), "--config", str(config), "--output_dir", str(output_dir)]
    for key, value in args.items():
        argv += [f"--{key}", str(value)]
    argv += list(extra_argv or [])
    print(f"[chain] {name}: {' '.join(argv[1:])}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(argv, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if completed.returncode != 0:
        raise RuntimeError(f"stage '{name}' failed (exit {completed.returncode}); fix the error above and re-run: "
                           "finished stages are kept")  # fmt: skip
    seconds = time.perf_counter() - start
    write_json(output_dir / CHAIN_MARKER, {"fingerprint": fp, "stage": name, "seconds": round(seconds, 1)})
    return StageResult(name, output_dir, fp, skipped=False, seconds=seconds)


@dataclass
class ChainConfig:
    """A chain file: where outputs go and the config of every stage (see recipes/configs/*/chain.yaml)."""

    output_root: str
    stages: dict[str, str]
    rl_runs: list[str] = field(default_factory=lambda: ["vanilla_grpo", "eg_grpo"])

    @classmethod
    def load(cls, path: str | Path) -> ChainConfig:
        raw = yaml.safe_load(_file_text(path))
        unknown = set(raw) - {"output_root", "stages", "rl_runs"}
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: output_root, stages, rl_runs")
        rl_runs = raw.get("rl_runs", ["vanilla_grpo", "eg_grpo"])
        missing = {"data", "sids", "ranker", "sft", "evaluate", *rl_runs} - set(raw.get("stages", {}))
        if missing:
            raise ValueError(f"{path}: 'stages' lacks a config for {sorted(missing)}")
        return cls(**raw)


def run_chain(chain_path: str | Path, output_root: str | None = None) -> dict[str, StageResult]:
    """Runs the whole chain; returns each stage's result. Re-running continues where it stopped."""
    chain = ChainConfig.load(chain_path)
    root = Path(output_root or chain.output_root)
    s = chain.stages
    t0 = time.perf_counter()
    done: dict[str, StageResult] = {}
    done["data"] = run_stage("data", "make_data", s["data"], root / "data")
    data = {"data_dir": root / "data"}
    done["sids"] = run_stage("sids", "build_sids", s["sids"], root / "sids", data, [done["data"].fingerprint])
    done["ranker"] = run_stage("ranker", "train_ranker", s["ranker"], root / "ranker", data,
                               [done["data"].fingerprint])  # fmt: skip
    sid_args = {**data, "sid_dir": root / "sids"}
    done["sft"] = run_stage("sft", "sft", s["sft"], root / "sft", sid_args,
                            [done["data"].fingerprint, done["sids"].fingerprint])  # fmt: skip
    models = {"sft": done["sft"]}
    for run in chain.rl_runs:
        rl_args = {**data, "sid_dir": root / "sids", "ranker_dir": root / "ranker",
                   "model_name_or_path": root / "sft", "chain": "false", "resume_from_checkpoint": "last"}  # fmt: skip
        upstream = [done[k].fingerprint for k in ("data", "sids", "ranker", "sft")]
        models[run] = done[run] = run_stage(run, "eg_grpo", s[run], root / run, rl_args, upstream)
    for run, result in models.items():
        name = f"eval_{run}"
        done[name] = run_stage(name, "evaluate", s["evaluate"], root / "eval" / run,
                               {**sid_args, "model_dir": result.output_dir},
                               [result.fingerprint, done["sids"].fingerprint])  # fmt: skip
    rl_dirs = [str(root / run) for run in chain.rl_runs]
    eval_dirs = [str(root / "eval" / run) for run in models]
    from eg_grpo.report import write_report

    report = write_report(root, sid_dir=root / "sids", rl_dirs=rl_dirs, eval_dirs=eval_dirs)
    _print_summary(done, report, time.perf_counter() - t0)
    return done


def _print_summary(done: dict[str, StageResult], report: Path, seconds: float) -> None:
    width = max(len(n) for n in done)
    print("\n" + "=" * 72)
    print(f"eg-grpo chain finished in {seconds / 60:.1f} min")
    for name, r in done.items():
        state = "skipped (up to date)" if r.skipped else f"built in {r.seconds:.0f} s"
        print(f"  {name:<{width}}  {state:<22} {r.output_dir}")
    print(f"report: {report}")
    print("=" * 72)


def ensure_upstream(data_dir: str, sid_dir: str, model_dir: str, ranker_dir: str | None,
                    stage_configs: dict[str, str]) -> None:  # fmt: skip
    """Builds the stages an RL run reads (data, SIDs, ranker, SFT), each only when missing or stale.

    A stage with no config in ``stage_configs`` must already exist: it is a user-supplied artifact.
    """
    unknown = set(stage_configs) - {"data", "sids", "ranker", "sft"}
    if unknown:
        raise ValueError(f"stage_configs: unknown stage(s) {sorted(unknown)}; use data, sids, ranker, sft")

    def stage(name, recipe, out, args, upstream):
        if name in stage_configs:
            return run_stage(name, recipe, stage_configs[name], out, args, upstream).fingerprint
        if not Path(out).exists():
            raise FileNotFoundError(f"{out} does not exist and stage_configs has no '{name}' config to build it")
        marker = Path(out) / CHAIN_MARKER
        return json.loads(marker.read_text())["fingerprint"] if marker.exists() else str(out)

    fp_data = stage("data", "make_data", data_dir, {}, [])
    fp_sids = stage("sids", "build_sids", sid_dir, {"data_dir": data_dir}, [fp_data])
    if ranker_dir is not None:
        stage("ranker", "train_ranker", ranker_dir, {"data_dir": data_dir}, [fp_data])
    stage("sft", "sft", model_dir, {"data_dir": data_dir, "sid_dir": sid_dir}, [fp_data, fp_sids])
