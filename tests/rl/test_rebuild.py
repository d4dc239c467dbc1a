"""Rebuilding a finished RL run (a config change, ``--overwrite true``): the old model stays until the new one is
complete; a rebuild stopped half-way resumes from its own checkpoints, then swaps in."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_checkpoints import checkpoint
from trl import ModelConfig

import eg_grpo.rl.stage
from eg_grpo.io import PENDING_FILE, claim_stage_folder, read_stage, replacement_folder
from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments, rl_stage_record


class FakeTrainer:
    """Stands in for the trainer: writes a checkpoint into its output folder, then is stopped or finishes."""

    def __init__(self, args, interrupt):
        self.args, self.interrupt, self.resumed_from = args, interrupt, []
        self.accelerator = SimpleNamespace(is_main_process=True, print=print, wait_for_everyone=lambda: None)
        self.state = SimpleNamespace(log_history=[{"step": 1}])
        self.callback_handler = SimpleNamespace(callbacks=[])
        self.processing_class = SimpleNamespace(save_pretrained=lambda d: None)

    def train(self, resume_from_checkpoint=None):
        self.resumed_from.append(resume_from_checkpoint)
        if resume_from_checkpoint is None:
            checkpoint(Path(self.args.output_dir), 1)
        if self.interrupt:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the rebuild

    def save_model(self, folder):
        (Path(folder) / "model.safetensors").write_text("new weights")


def arguments(tmp_path, data_dir, sid_dir, model_dir, lr, **training):
    script = EGGRPOScriptArguments(data_dir=str(data_dir), chain=False, overwrite=True)
    args = EGGRPOConfig(output_dir=str(tmp_path / "root" / "eg_grpo"), sid_dir=str(sid_dir), num_generations=4,
                        per_device_train_batch_size=8, use_cpu=True, report_to="none", learning_rate=lr,
                        **training)  # fmt: skip
    return script, args, ModelConfig(model_name_or_path=str(model_dir))


def test_an_interrupted_rebuild_keeps_the_old_model_and_resumes(
    tmp_path, tiny_data_dir, tiny_sid_dir, monkeypatch
):
    model_dir = tmp_path / "sft"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    old_args = arguments(tmp_path, tiny_data_dir, tiny_sid_dir, model_dir, 1e-6)
    out = Path(old_args[1].output_dir)
    # the finished run of the old config, as the RL stage leaves it
    assert claim_stage_folder(out, rl_stage_record(*old_args)) == "train"
    (out / PENDING_FILE).rename(out / "stage.json")
    (out / "model.safetensors").write_text("old weights")
    (out / "log_history.json").write_text("[]")
    old_files = {p.name: p.read_bytes() for p in out.iterdir()}

    trainers = []

    def fake_build(script_args, training_args, model_args, interrupt):
        trainers.append(FakeTrainer(training_args, interrupt))
        return trainers[-1]

    new_args = arguments(tmp_path, tiny_data_dir, tiny_sid_dir, model_dir, 2e-6)
    monkeypatch.setattr(eg_grpo.rl.stage, "build_trainer", lambda *a: fake_build(*a, interrupt=True))
    with pytest.raises(KeyboardInterrupt):
        eg_grpo.rl.stage.run(*new_args)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old_files  # nothing of the old run was touched
    side = replacement_folder(out)
    assert (side / "checkpoint-1").is_dir() and (side / PENDING_FILE).is_file()

    # the same command with resume: it takes its own unfinished replacement back, then swaps it in
    new_args = arguments(
        tmp_path, tiny_data_dir, tiny_sid_dir, model_dir, 2e-6, resume_from_checkpoint="last"
    )
    monkeypatch.setattr(eg_grpo.rl.stage, "build_trainer", lambda *a: fake_build(*a, interrupt=False))
    assert eg_grpo.rl.stage.run(*new_args) == out
    assert trainers[-1].resumed_from == [str(side / "checkpoint-1")]
    assert read_stage(out)["fingerprint"] == rl_stage_record(*new_args)["fingerprint"]
    assert (out / "model.safetensors").read_text() == "new weights" and not (out / PENDING_FILE).exists()
    assert not side.exists() and json.loads((out / "log_history.json").read_text()) == [{"step": 1}]
    assert new_args[1].output_dir == str(out)
