"""The stage chain end to end on the tiny size, run from a folder outside the repository: two kills,
resume, skip when current, rebuild what the chain built when its config changed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from eg_grpo.io import STAGE_FILE
from eg_grpo.pipeline import ChainConfig

MARKER = STAGE_FILE
# Overrides that keep every stage to seconds; the configs are otherwise the shipped tiny ones.
OVERRIDES = {
    "sids": {"method": "rqkmeans"},
    "sft": {"num_train_epochs": 1},
    "vanilla_grpo": {"max_steps": 2, "sid_eval_steps": 0, "save_strategy": "no"},
    "eg_grpo": {"max_steps": 8, "save_steps": 2, "sid_eval_steps": 4, "save_total_limit": None},
    "evaluate": {
        "num_beams": 10,
        "ks": [1, 5, 10],
        "beam_sizes": [5, 10],
        "recall_num_items": [10, 50],
        "max_examples": 40,
    },  # fmt: skip
}
STAGES = ["data", "sids", "ranker", "sft", "vanilla_grpo", "eg_grpo", "eval_sft", "eval_vanilla_grpo",
          "eval_eg_grpo"]  # fmt: skip


def write_chain(folder: Path) -> Path:
    stages = {}
    for stage, source in ChainConfig.load("tiny").stages.items():
        config = yaml.safe_load(Path(source).read_text())
        config.update(OVERRIDES.get(stage, {}))
        if stage in ("vanilla_grpo", "eg_grpo"):
            config.pop("stage_configs", None)
        stages[stage] = str(folder / f"{stage}.yaml")
        Path(stages[stage]).write_text(yaml.safe_dump(config))
    chain = folder / "chain.yaml"
    # output_root is relative: it resolves against the chain's working directory (the tmp folder)
    chain.write_text(
        # vanilla trains 2 steps and EG-GRPO 8 (enough to be killed mid-way): not comparable arms, which
        # the chain would refuse; this test is about kills, resume and rebuilds
        yaml.safe_dump(
            {
                "output_root": "out",
                "stages": {k: Path(v).name for k, v in stages.items()},
                "allow_incomparable": True,
            }
        )  # fmt: skip
    )
    return chain


def start_chain(chain: Path, log: Path) -> subprocess.Popen:
    code = f"from eg_grpo.pipeline import run_chain; run_chain({str(chain)!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=chain.parent, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip


def kill_when(process: subprocess.Popen, condition, timeout: float = 600) -> None:
    """SIGKILLs the chain and every stage it started once ``condition()`` holds (a crashed machine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the chain ended before the point where it was to be killed"
        assert time.monotonic() < deadline, "timed out waiting for the kill point"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_to_end(chain: Path, log: Path) -> str:
    process = start_chain(chain, log)
    assert process.wait(timeout=900) == 0, log.read_text()[-3000:]
    return log.read_text()


def skipped(output: str) -> set[str]:
    return {s for s in STAGES if f"[chain] {s}: up to date" in output}


@pytest.fixture(scope="module")
def interrupted_chain(tmp_path_factory):
    """Runs the chain killed twice (between stages, then mid-RL after a checkpoint), then to its end."""
    folder = tmp_path_factory.mktemp("chain")
    chain = write_chain(folder)
    out = folder / "out"
    first = start_chain(chain, folder / "run1.log")
    kill_when(first, lambda: (out / "sft" / MARKER).exists())
    second = start_chain(chain, folder / "run2.log")
    kill_when(second, lambda: (out / "eg_grpo" / "checkpoint-2" / "trainer_state.json").exists())
    markers = {s: (out / s / MARKER).stat().st_mtime_ns for s in ("data", "sids", "ranker", "sft")}
    # a newer checkpoint the kill left truncated: the resume must skip it, not crash in safetensors
    damaged = out / "eg_grpo" / "checkpoint-3"
    shutil.copytree(out / "eg_grpo" / "checkpoint-2", damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    third = run_to_end(chain, folder / "run3.log")
    return folder, chain, out, markers, third


def test_killed_chain_redoes_no_finished_stage_and_resumes_rl(interrupted_chain):
    folder, _, out, markers, third = interrupted_chain
    assert {"data", "sids", "ranker", "sft", "vanilla_grpo"} <= skipped(third)
    for stage, mtime in markers.items():
        assert (out / stage / MARKER).stat().st_mtime_ns == mtime, f"{stage} was redone"
    run_dir = out.resolve() / "eg_grpo"
    assert (
        f"skipping damaged checkpoint checkpoint-3: {run_dir / 'checkpoint-3' / 'model.safetensors'} is truncated"
        in third
    )
    assert f"[eg_grpo] resuming from {run_dir / 'checkpoint-2'}" in third
    history = json.loads((out / "eg_grpo" / "log_history.json").read_text())
    assert max(h["step"] for h in history) == 8
    assert any("valid/hr@10" in h for h in history)
    for run in ("sft", "vanilla_grpo", "eg_grpo"):
        results = json.loads((out / "eval" / run / "eval_results.json").read_text())
        assert results["valid_sid_rate"] == 1.0 and results["num_examples"] == 40
    report = (out / "report" / "report.md").read_text()
    assert (
        "vanilla_grpo" in report and "eg_grpo" in report and (out / "report" / "training_curves.png").exists()
    )
    assert not list(out.glob(".*partial*")), "a half-written artifact was left behind"
    built = json.loads((out / "eval" / "eg_grpo" / MARKER).read_text())
    assert built["built_by"] == f"chain:{out.resolve()}" and set(built["inputs"]) == {"data", "sids", "model"}
    assert not (out / "eg_grpo" / "stage.pending.json").exists()


def test_rerun_skips_everything_and_a_changed_config_rebuilds_what_follows(interrupted_chain):
    folder, chain, out, _, _ = interrupted_chain
    assert skipped(run_to_end(chain, folder / "run4.log")) == set(STAGES)

    config_path = folder / "eg_grpo.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["learning_rate"] = config["learning_rate"] / 2
    config_path.write_text(yaml.safe_dump(config))
    output = run_to_end(chain, folder / "run5.log")
    assert skipped(output) == set(STAGES) - {"eg_grpo", "eval_eg_grpo"}
    assert "[chain] eg_grpo: config or inputs changed" in output
