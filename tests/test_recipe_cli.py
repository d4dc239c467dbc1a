"""Every recipe answers like ``python -m eg_grpo.stages``: a config typo is one line and exit 2, and ``--help``
answers from source without importing torch, our options and the model path first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv, python_flags=()):
    return subprocess.run([sys.executable, *python_flags, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_a_typo_through_the_sft_recipe_is_one_line_and_exit_2():
    done = _run("recipes/sft.py", "--config", "recipes/configs/tiny/sft.yaml", "--lr_scheduler_type", "cosin")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "'cosin'" in lines[0] and lines[0].startswith("python recipes/sft.py: error:")


def test_a_bad_setting_in_the_stage_cli_is_one_line_and_exit_2(tmp_path, capsys):
    from eg_grpo.stages.__main__ import main

    argv = ["rl", "--sid_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--training_objective",
            "continued_sf", "--use_cpu", "true"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "training_objective='continued_sf' must be one of" in err


def test_help_is_fast_and_lists_our_options_and_the_model_path_first():
    done = _run("recipes/eg_grpo.py", "--help", python_flags=("-X", "importtime"))
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported  # the 10-20 s of imports
    text = done.stdout
    assert len(text.splitlines()) < 150
    order = [
        text.index(o) for o in ("--config YAML", "--model_name_or_path", "--data_dir", "--num_expert_samples")
    ]
    assert order == sorted(order)
    assert "Folder with items/requests/impressions.parquet." in text  # the field's help, read from source
    assert "--help_all" in text and "--learning_rate" not in text
