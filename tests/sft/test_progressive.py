"""Progressive SFT: stages run in order from one recipe call, each from the previous model, cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eg_grpo.io import StageConflict
from eg_grpo.sft.progressive import parse_sft_stages, stage_folders

STAGES = [
    {"task": "item_to_sid", "max_rows": 40, "num_train_epochs": 1, "learning_rate": 3.0e-3},
    {"task": "query_to_sid", "sids_per_query": 2, "max_rows": 48, "num_train_epochs": 1},
    {"task": "personalized", "max_rows": 64, "num_train_epochs": 1, "learning_rate": 1.0e-3},
]


def _args(parse_recipe, data_dir, sid_dir, out, stages, *extra):
    from trl import ModelConfig, SFTConfig

    from recipes.sft import SFTScriptArguments

    return parse_recipe(
        (SFTScriptArguments, SFTConfig, ModelConfig),
        ["--config", "recipes/configs/tiny/sft.yaml", "--data_dir", data_dir, "--sid_dir", sid_dir,
         "--output_dir", out, "--disable_tqdm", "true", "--sft_stages", json.dumps(stages), *extra],
    )  # fmt: skip


def _record(folder):
    return json.loads((folder / "stage.json").read_text())


def test_parse_stages_names_and_errors():
    stages = parse_sft_stages(json.dumps(STAGES))
    assert [s.name for s in stages] == ["1_item_to_sid", "2_query_to_sid", "3_personalized"]
    assert stages[1].task_kwargs == {"sids_per_query": 2} and stages[1].max_rows == 48
    assert stages[0].learning_rate == 3.0e-3 and stages[1].learning_rate is None
    assert parse_sft_stages(None) == [] and parse_sft_stages([]) == []
    with pytest.raises(ValueError, match="has no 'task'"):
        parse_sft_stages([{"max_rows": 3}])
    with pytest.raises(ValueError, match="does not take \\['sids_per_query'\\]"):
        parse_sft_stages([{"task": "item_to_sid", "sids_per_query": 3}])
    with pytest.raises(ValueError, match="unknown SFT task"):
        parse_sft_stages([{"task": "sid_to_title"}])
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        parse_sft_stages([{"task": "item_to_sid", "learning_rate": 0}])
    with pytest.raises(ValueError, match="named '1_a'"):
        parse_sft_stages([{"task": "item_to_sid", "name": "1_a"}, {"task": "personalized", "name": "1_a"}])
    with pytest.raises(ValueError, match="list of stages"):
        parse_sft_stages("item_to_sid")  # not JSON
    with pytest.raises(ValueError, match="list of mappings"):
        parse_sft_stages({"task": "item_to_sid"})


def test_stages_run_in_order_from_the_previous_model_and_resume(
    parse_recipe, tiny_data_dir, tiny_sid_dir, tmp_path
):
    from recipes.sft import main

    out = tmp_path / "sft"
    results = main(*_args(parse_recipe, tiny_data_dir, tiny_sid_dir, out, STAGES))
    assert list(results) == ["1_item_to_sid", "2_query_to_sid", "3_personalized"]
    assert [results[k]["train_rows"] for k in results] == [40, 48, 64]  # each stage's own task and size
    folders = stage_folders(out, parse_sft_stages(STAGES))
    assert folders[-1] == out and folders[0] == tmp_path / "sft_stages" / "1_item_to_sid"
    records = [_record(f) for f in folders]
    # stage 1 starts from the tiny model; every later stage from the folder before it
    assert "base_model" not in records[0]["inputs"]
    for before, rec in zip(folders, records[1:]):
        assert rec["inputs"]["base_model"]["path"] == str(before.resolve())
    # each stage's own epochs and learning rate reached its trainer
    assert [r["config"]["training"]["learning_rate"] for r in records] == [3.0e-3, 3.0e-3, 1.0e-3]
    assert records[1]["config"]["script"]["task_kwargs"] == {"sids_per_query": 2}
    steps = [json.loads((f / "sft_metrics.json").read_text())["log_history"][-1]["step"] for f in folders]
    assert steps == [2, 2, 2]  # one epoch of 40 / 48 / 64 rows at batch 32

    # a rerun is a no-op: every stage is current
    created = [r["created"] for r in records]
    assert main(*_args(parse_recipe, tiny_data_dir, tiny_sid_dir, out, STAGES)) == {}
    assert [_record(f)["created"] for f in folders] == created
    # changed stage 2 settings: its folder is kept unless --overwrite (the project's stage policy) ...
    changed = [STAGES[0], {**STAGES[1], "learning_rate": 2.0e-3}, STAGES[2]]
    with pytest.raises(StageConflict, match="learning_rate: 0.003 -> 0.002"):
        main(*_args(parse_recipe, tiny_data_dir, tiny_sid_dir, out, changed))
    # ... and with it stages 2 and 3 retrain (3 starts from a new model), stage 1 stays current
    results = main(*_args(parse_recipe, tiny_data_dir, tiny_sid_dir, out, changed, "--overwrite", "true"))
    assert list(results) == ["2_query_to_sid", "3_personalized"]
    assert _record(folders[0])["created"] == created[0]


def test_stages_from_yaml_and_a_plain_run_records_no_task(
    parse_recipe, tiny_data_dir, tiny_sid_dir, tmp_path
):
    import yaml

    from eg_grpo.sft.stage import sft_stage_record

    config = yaml.safe_load(Path("recipes/configs/tiny/sft.yaml").read_text())
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump({**config, "sft_stages": STAGES}))
    script, training, model = parse_recipe(
        _arg_types(), ["--config", tmp_path / "sft.yaml", "--data_dir", tiny_data_dir, "--sid_dir", tiny_sid_dir,
                       "--output_dir", tmp_path / "out"],
    )  # fmt: skip
    assert [s.task for s in parse_sft_stages(script.sft_stages)] == [s["task"] for s in STAGES]
    # without stages or a task, the record is the one a run before tasks existed wrote
    plain = parse_recipe(_arg_types(), ["--config", "recipes/configs/tiny/sft.yaml", "--data_dir", tiny_data_dir,
                                        "--sid_dir", tiny_sid_dir, "--output_dir", tmp_path / "out"])  # fmt: skip
    recorded = sft_stage_record(*plain)["config"]["script"]
    assert not {"task", "task_kwargs", "sft_stages"} & set(recorded)
    item_task = parse_recipe(_arg_types(), ["--config", "recipes/configs/tiny/sft.yaml", "--data_dir", tiny_data_dir,
                                            "--sid_dir", tiny_sid_dir, "--output_dir", tmp_path / "out",
                                            "--task", "item_to_sid"])  # fmt: skip
    assert sft_stage_record(*item_task)["config"]["script"]["task"] == "item_to_sid"


def _arg_types():
    from trl import ModelConfig, SFTConfig

    from recipes.sft import SFTScriptArguments

    return (SFTScriptArguments, SFTConfig, ModelConfig)
