"""Two CPU processes (gloo) through a real `accelerate launch`: groups stay whole, metrics are gathered."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from eg_grpo.pipeline import REPO_ROOT
from eg_grpo.rl.config import EGGRPOConfig


def test_a_layout_that_would_split_groups_across_processes_is_rejected(tmp_path, tiny_sid_dir):
    # In one process TRL's own divisibility check fires first; with several, ours does (whole groups per rank).
    with pytest.raises(ValueError, match="divisible by num_generations|multiple of num_generations"):
        EGGRPOConfig(output_dir=str(tmp_path), sid_dir=str(tiny_sid_dir), num_generations=8,
                     per_device_train_batch_size=4, use_cpu=True, report_to="none")  # fmt: skip


def launch_two(out, data_dir, sid_dir, model_dir, *extra: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO_ROOT / "accelerate_configs/cpu.yaml"), "--num_processes", "2",
        str(REPO_ROOT / "recipes/eg_grpo.py"), "--config", str(REPO_ROOT / "recipes/configs/tiny/eg_grpo.yaml"),
        "--data_dir", str(data_dir), "--sid_dir", str(sid_dir), "--model_name_or_path", str(model_dir),
        "--output_dir", str(out), "--chain", "false", "--rewards", '[{"name": "sid_match"}]',
        "--max_steps", "3", "--save_strategy", "no", "--sid_eval_steps", "0", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "extra, message",
    [(["--per_device_train_batch_size", "4"], r"(divisible by|multiple of) num_generations (\(8\)|= 8)"),
     (["--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2",
       "--per_device_eval_batch_size", "4", "--num_generations_eval", "8"],
      r"divisible by the number of generations used for evaluation|multiple of num_generations_eval")],
)  # fmt: skip
def test_groups_split_across_two_processes_are_refused_at_start_up(tmp_path, tiny_data_dir, tiny_sid_dir,
                                                                   tiny_sft_dir, extra, message):  # fmt: skip
    # Each process would hold half a group of 8. Under `accelerate launch` the config is parsed before the
    # processes form a group, so TRL's own divisibility check already counts one process and refuses the
    # per-process layout; ours (the same condition) backs it up. Either way: refused before any step.
    done = launch_two(tmp_path / "run", tiny_data_dir, tiny_sid_dir, tiny_sft_dir, *extra)
    assert done.returncode != 0 and re.search(message, done.stderr), done.stderr[-3000:]
    # a config error, answered by the recipe in one line (eg_grpo.cli.guarded, exit 2); the traceback
    # after it is accelerate's own report that a worker exited non-zero
    assert "[rl] error:" in done.stderr
    assert not (tmp_path / "run" / "log_history.json").exists()


def test_two_processes_train_with_whole_groups(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir):
    out = tmp_path / "run"
    done = launch_two(out, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, "--per_device_train_batch_size", "8")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    history = json.loads((out / "log_history.json").read_text())
    steps = [h for h in history if "eg/expert_frac" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]
    # Global batch 16 = one group of 8 per process; the gathered expert share counts both groups, so it
    # is a multiple of 1/16 and at most 2 experts per group (k=2): 4/16.
    for h in steps:
        assert 0 < h["eg/expert_frac"] <= 4 / 16 and (h["eg/expert_frac"] * 16) % 1 == 0
        assert h["eg/valid_sid_rate"] == 1.0
        # The sampled-only reward indexes TRL's gathered reward matrix with the gathered expert mask: a
        # local (ungathered) mask has half its rows and fails; the loss-time figures are reduced likewise.
        assert 0 <= h["eg/reward_sampled"] <= 1 and 0 < h["eg/valid_mass"] <= 1
        assert (
            0 <= h["eg/zero_std_group_frac"] <= 1 and (h["eg/zero_std_group_frac"] * 2) % 1 == 0
        )  # 2 groups
    assert (out / "model.safetensors").exists()
