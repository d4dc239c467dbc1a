"""Resuming runs: a damaged newest checkpoint is skipped, missing optimizer state is an error, a kill says how
to resume, and a killed SFT takes its own folder back from the newest intact checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch
from safetensors.torch import save_file

from eg_grpo.checkpoints import ResumeHint, checkpoint_problem, resolve_checkpoint, resume_command


def checkpoint(root, step, optimizer=True):
    """A checkpoint folder laid out as transformers' Trainer writes it (tiny tensors)."""
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32).reshape(8, 8)}, str(folder / "model.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if optimizer:
        torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    return folder


def test_last_skips_a_truncated_newest_checkpoint_with_a_warning_naming_the_file(tmp_path, capsys):
    checkpoint(tmp_path, 2)
    newest = checkpoint(tmp_path, 4)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # the machine died while writing it
    assert resolve_checkpoint("last", tmp_path) == str(tmp_path / "checkpoint-2")
    out = capsys.readouterr().out
    assert "skipping damaged checkpoint checkpoint-4" in out and str(weights) in out and "truncated" in out


def test_a_checkpoint_without_trainer_state_is_skipped_and_step_order_is_numeric(tmp_path, capsys):
    checkpoint(tmp_path, 9)
    (checkpoint(tmp_path, 10) / "trainer_state.json").unlink()  # "10" sorts before "9" as text
    assert resolve_checkpoint("true", tmp_path) == str(tmp_path / "checkpoint-9")
    assert "trainer_state.json is missing" in capsys.readouterr().out
    assert checkpoint_problem(tmp_path / "checkpoint-9") is None


def test_missing_optimizer_state_is_an_error_unless_reset_is_asked_for(tmp_path):
    checkpoint(tmp_path, 3, optimizer=False)
    with pytest.raises(ValueError, match=r"no optimizer state .*--reset_optimizer true"):
        resolve_checkpoint("last", tmp_path)
    assert resolve_checkpoint("last", tmp_path, reset_optimizer=True) == str(tmp_path / "checkpoint-3")


def test_a_named_damaged_checkpoint_and_all_damaged_are_errors(tmp_path):
    folder = checkpoint(tmp_path, 1)
    (folder / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(ValueError, match="unreadable header"):
        resolve_checkpoint(str(folder), tmp_path)
    with pytest.raises(ValueError, match="every checkpoint"):
        resolve_checkpoint("last", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_checkpoint(str(tmp_path / "checkpoint-7"), tmp_path)
    assert resolve_checkpoint("last", tmp_path / "empty") is None
    assert resolve_checkpoint("false", tmp_path) is None


def test_sigterm_prints_the_command_that_resumes(capsys, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = ["recipes/eg_grpo.py", "--config", "my config.yaml", "--resume_from_checkpoint", "false"]
    command = resume_command(argv)
    assert command == "python recipes/eg_grpo.py --config 'my config.yaml' --resume_from_checkpoint last"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped, ResumeHint(command):
        os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert command in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def _sft_args(parse_recipe, data_dir, sid_dir, out, *extra):
    from trl import ModelConfig, SFTConfig

    from recipes.sft import SFTScriptArguments

    return parse_recipe(
        (SFTScriptArguments, SFTConfig, ModelConfig),
        ["--config", "recipes/configs/tiny/sft.yaml", "--data_dir", data_dir, "--sid_dir", sid_dir,
         "--output_dir", out, "--disable_tqdm", "true", "--max_train_rows", 128, "--num_train_epochs", 1,
         "--save_strategy", "steps", "--save_steps", 2, "--logging_steps", 1, *extra],
    )  # fmt: skip


def test_a_killed_sft_resumes_from_its_newest_intact_checkpoint(
    parse_recipe, tiny_data_dir, tiny_sid_dir, tmp_path, monkeypatch, capsys
):
    import eg_grpo.sft.stage
    from eg_grpo.io import StageConflict
    from recipes.sft import main

    out = tmp_path / "sft"
    real_save = eg_grpo.sft.stage.save_sft_model

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the machine went down after the last checkpoint, before the model was saved

    monkeypatch.setattr(eg_grpo.sft.stage, "save_sft_model", killed)
    with pytest.raises(KeyboardInterrupt):
        main(*_sft_args(parse_recipe, tiny_data_dir, tiny_sid_dir, out))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "stage.json").exists() and (out / "stage.pending.json").exists()
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    # another config must not take the unfinished folder over
    with pytest.raises(StageConflict, match="learning_rate"):
        main(*_sft_args(parse_recipe, tiny_data_dir, tiny_sid_dir, out, "--learning_rate", 1.0e-3))
    monkeypatch.setattr(eg_grpo.sft.stage, "save_sft_model", real_save)
    # a newest intact checkpoint without optimizer state: refused, naming the SFT option that accepts it
    bare = out / "checkpoint-3"
    shutil.copytree(out / "checkpoint-2", bare)
    (bare / "optimizer.pt").unlink()
    with pytest.raises(ValueError, match="no optimizer state .*--reset_optimizer true"):
        main(*_sft_args(parse_recipe, tiny_data_dir, tiny_sid_dir, out, "--resume_from_checkpoint", "last"))
    shutil.rmtree(bare)
    capsys.readouterr()
    from trl import SFTTrainer

    steps_trained = []
    real_step = SFTTrainer.training_step
    monkeypatch.setattr(
        SFTTrainer, "training_step", lambda self, *a, **k: steps_trained.append(1) or real_step(self, *a, **k)
    )
    metrics = main(*_sft_args(parse_recipe, tiny_data_dir, tiny_sid_dir, out, "--resume_from_checkpoint", "last",
                              "--reset_optimizer", "false"))  # fmt: skip
    printed = capsys.readouterr().out
    assert "skipping damaged checkpoint checkpoint-4" in printed
    assert f"[eg_grpo] resuming from {out / 'checkpoint-2'}" in printed
    # 128 rows at batch 32: 4 steps in all; the resumed run trained steps 3 and 4 only
    assert len(steps_trained) == 2
    assert [h["step"] for h in metrics["log_history"] if "loss" in h] == [1, 2, 3, 4]
    # the recorded loss covers the whole run (steps 1-4), not only the resumed steps 3 and 4
    losses = {h["step"]: h["loss"] for h in metrics["log_history"] if "loss" in h}
    assert metrics["resumed_from_step"] == 2
    assert metrics["train_loss_resumed_segment"] == pytest.approx((losses[3] + losses[4]) / 2, rel=1e-4)
    assert metrics["train_loss"] == pytest.approx(sum(losses.values()) / 4, rel=1e-4)
    assert json.loads((out / "sft_metrics.json").read_text())["train_loss"] == metrics["train_loss"]
    assert (out / "stage.json").exists() and not list(out.glob("checkpoint-*"))
    assert not (out / "stage.pending.json").exists()


def test_whole_run_loss_weights_the_logged_intervals_by_their_steps():
    from eg_grpo.checkpoints import whole_run_loss

    # logged every 4 steps up to the checkpoint at step 10: steps 9-10 have no recorded loss; an
    # evaluation is no training loss, and a log after the checkpoint belongs to another attempt
    history = [{"step": 4, "loss": 2.0}, {"step": 8, "loss": 1.0}, {"step": 10, "eval_loss": 9.0}]
    history.append({"step": 12, "loss": 7.0})
    assert whole_run_loss(history, 10, 0.5, 6) == pytest.approx((2.0 * 4 + 1.0 * 4 + 0.5 * 6) / 14)
    assert whole_run_loss([], 10, 0.5, 6) == 0.5  # nothing logged before: the segment's own loss
