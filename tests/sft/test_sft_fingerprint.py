"""The SFT fingerprint follows the folder contract: content only. Where a model lies, how often the run saved
checkpoints, or an empty stage list change nothing that is trained, so they change no fingerprint."""

from __future__ import annotations

import json
import shutil

from eg_grpo.sft.stage import sft_stage_record

STAGES = [
    {"task": "item_to_sid", "max_rows": 16, "num_train_epochs": 1},
    {"task": "personalized", "max_rows": 16, "num_train_epochs": 1},
]


def _args(parse_recipe, data_dir, sid_dir, out, *extra):
    from trl import ModelConfig, SFTConfig

    from recipes.sft import SFTScriptArguments

    return parse_recipe(
        (SFTScriptArguments, SFTConfig, ModelConfig),
        ["--config", "recipes/configs/tiny/sft.yaml", "--data_dir", data_dir, "--sid_dir", sid_dir,
         "--output_dir", out, "--disable_tqdm", "true", *extra],
    )  # fmt: skip


def test_save_settings_and_an_empty_stage_list_do_not_change_the_fingerprint(
    parse_recipe, tiny_data_dir, tiny_sid_dir, tmp_path
):
    def fp(*extra):
        return sft_stage_record(*_args(parse_recipe, tiny_data_dir, tiny_sid_dir, tmp_path / "o", *extra))[
            "fingerprint"
        ]

    plain = fp()
    assert fp("--save_strategy", "steps", "--save_steps", 7, "--save_total_limit", 2) == plain
    assert fp("--sft_stages", "[]") == plain
    assert fp("--learning_rate", 0.123) != plain  # the fingerprint still sees what shapes the weights


def test_a_moved_progressive_sft_output_is_up_to_date(parse_recipe, tiny_data_dir, tiny_sid_dir, tmp_path,
                                                      monkeypatch, capsys):  # fmt: skip
    from trl import SFTTrainer

    from recipes.sft import main

    stages = ("--sft_stages", json.dumps(STAGES))
    main(*_args(parse_recipe, tiny_data_dir, tiny_sid_dir, tmp_path / "a" / "sft", *stages))
    shutil.move(tmp_path / "a", tmp_path / "b")  # the output and its stage folders, moved together
    capsys.readouterr()

    def trained(*args, **kwargs):
        raise AssertionError("a moved, current progressive SFT must not retrain")

    monkeypatch.setattr(SFTTrainer, "train", trained)
    assert main(*_args(parse_recipe, tiny_data_dir, tiny_sid_dir, tmp_path / "b" / "sft", *stages)) == {}
    printed = capsys.readouterr().out
    assert printed.count("is up to date; nothing to do") == 2
    recorded = json.loads((tmp_path / "b" / "sft" / "stage.json").read_text())
    assert "model_name_or_path" not in recorded["config"]["model"]  # the previous stage is an input instead
    assert "base_model" in recorded["inputs"]
