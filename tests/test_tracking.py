"""W&B lineage: an evaluation logs a run of its own that points to the training run (offline, two distinct
ids, nothing written to the cwd's wandb/); the continued-SFT control is tagged as such."""

from __future__ import annotations

import glob
import json
import os
from types import SimpleNamespace

from eg_grpo.stages.evaluate import report_to_wandb
from eg_grpo.tracking import configure_tracking, tracked_run
from tests.rl.test_rl import read_offline_run

WANDB_ENV = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_TAGS", "WANDB_RUN_GROUP", "WANDB_DIR")


def _clean_env(monkeypatch):
    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_offline_train_then_evaluate_gives_two_runs_with_lineage(tmp_path, monkeypatch):
    import wandb

    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "outputs" / "tiny"
    args = SimpleNamespace(report_to=["wandb"], output_dir=str(root / "eg_grpo"), num_expert_samples=1)
    configure_tracking(args, tmp_path / "outputs" / "tiny" / "data")
    assert os.environ["WANDB_DIR"] == str(root)
    # what transformers' WandbCallback does with that environment, then what the RL stage records
    train = wandb.init(name="tiny-eg")
    trained = tracked_run()
    train.finish()
    model_dir = root / "eg_grpo"
    model_dir.mkdir()
    (model_dir / "stage.json").write_text(
        json.dumps({"stage": "rl", "fingerprint": "f", "tracking": {"wandb": trained}})
    )
    try:
        evaluated = report_to_wandb({"hr@10": 0.5}, model_dir, "test", root / "eval" / "eg_grpo")
    finally:
        wandb.teardown()  # stops the W&B service, which flushes the run files
    assert evaluated["id"] != trained["id"] and evaluated["evaluates"] == trained["id"]
    assert evaluated["group"] == trained["group"] == "tiny" and "evaluation" in evaluated["tags"]
    folders = sorted(glob.glob(str(root / "wandb" / "offline-run-*")))
    assert len(folders) == 2 and len({f.rsplit("-", 1)[1] for f in folders}) == 2
    assert not (tmp_path / "wandb").exists()  # nothing under the working directory
    (path,) = glob.glob(str(root / "wandb" / f"offline-run-*-{evaluated['id']}" / "*.wandb"))
    run, config = read_offline_run(path)
    assert config["eg_grpo"]["evaluates"] == trained["id"] and run.run_group == "tiny"
    assert config["eg_grpo"]["split"] == "test" and "eg" in list(run.tags)


def test_the_continued_sft_control_is_not_tagged_eg(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    args = SimpleNamespace(report_to=["wandb"], output_dir=str(tmp_path / "root" / "csft"), num_expert_samples=1,
                           training_objective="continued_sft")  # fmt: skip
    configure_tracking(args, tmp_path / "root" / "data")
    assert os.environ["WANDB_TAGS"] == "continued_sft,root"


def test_trackio_gets_the_lineage_without_wandb(tmp_path, monkeypatch):
    """trackio is optional (not a dependency): a stub module stands in for the run transformers started."""
    import sys
    import types

    from eg_grpo.tracking import LineageToTracker, run_tags

    _clean_env(monkeypatch)
    stub = types.ModuleType("trackio")
    stub.config = {"learning_rate": 1e-6}  # what TrackioCallback put there before
    monkeypatch.setitem(sys.modules, "trackio", stub)
    args = SimpleNamespace(report_to=["trackio"], output_dir=str(tmp_path / "root" / "rsft"), num_expert_samples=1,
                           training_objective="rejection_sft")  # fmt: skip
    lineage = {"rewards": [{"name": "sid_match", "weight": 1.0}], "stage_fingerprint": "f", "inputs": {"sids": "s"},
               "training_objective": "rejection_sft", "num_expert_samples": 1,
               "tags": run_tags(args, tmp_path / "root" / "data")}  # fmt: skip
    callback = LineageToTracker(lineage)
    callback.on_train_begin(args, SimpleNamespace(is_world_process_zero=False), None)
    assert "eg_grpo" not in stub.config  # only the main process logs
    callback.on_train_begin(args, SimpleNamespace(is_world_process_zero=True), None)
    assert stub.config == {"learning_rate": 1e-6, "eg_grpo": lineage}
    assert stub.config["eg_grpo"]["tags"] == ["rejection_sft", "root"] and callback.run_info is None


def test_run_tags_follow_wandb_tags_when_set(tmp_path, monkeypatch):
    from eg_grpo.tracking import run_tags

    _clean_env(monkeypatch)
    args = SimpleNamespace(report_to=["trackio"], output_dir=str(tmp_path / "eg"), num_expert_samples=0)
    assert run_tags(args, tmp_path / "amazon_office") == ["vanilla", "amazon_office"]
    monkeypatch.setenv("WANDB_TAGS", "mine, ablation")
    assert run_tags(args, tmp_path / "amazon_office") == ["mine", "ablation"]
