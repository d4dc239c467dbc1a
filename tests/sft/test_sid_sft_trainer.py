"""SIDSFTTrainer: TRL's SFT loss with the LM head projecting only labelled positions, on CPU too."""

import copy

import pytest
import torch
import trl.trainer.utils as trl_utils
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from eg_grpo.sft.model import build_sft_model, tiny_config
from eg_grpo.sft.trainer import SIDSFTTrainer, check_compact_switch, labelled_positions_only
from eg_grpo.sid.tokens import sid_to_text


@pytest.fixture()
def sft_pair(tiny_log, tiny_codebook, tmp_path):
    """The same tiny model, rows and batch under TRL's SFTTrainer and under SIDSFTTrainer."""
    model, tokenizer, _ = build_sft_model("tiny", tiny_log, tiny_codebook, tiny_config("test", seed=0))
    sids = [sid_to_text(tiny_codebook.sid_of(i)) for i in tiny_codebook.item_ids[:6]]
    # prompts of unequal length, so right padding puts pad positions inside the batch as well
    rows = Dataset.from_dict(
        {"prompt": [f"query {'words ' * k}history" for k in range(6)], "completion": [s + tokenizer.eos_token for s in sids]}
    )  # fmt: skip
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                     per_device_train_batch_size=6, max_length=64)  # fmt: skip
    trainers = [
        cls(model=copy.deepcopy(model), args=args, train_dataset=rows, processing_class=tokenizer)
        for cls in (SFTTrainer, SIDSFTTrainer)
    ]
    batch = trainers[0].data_collator([trainers[0].train_dataset[i] for i in range(6)])
    return trainers, batch


def loss_and_grads(trainer, batch):
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, trainer._metrics["train"]


def test_same_loss_gradients_and_metrics_as_trl(sft_pair):
    (stock, ours), batch = sft_pair
    loss_trl, grads_trl, metrics_trl = loss_and_grads(stock, batch)
    loss_ours, grads_ours, metrics_ours = loss_and_grads(ours, batch)
    assert loss_trl.item() > 0
    torch.testing.assert_close(loss_ours, loss_trl, rtol=1e-6, atol=0)
    assert grads_ours.keys() == grads_trl.keys() and grads_trl
    for name, grad in grads_trl.items():
        torch.testing.assert_close(grads_ours[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    for key in ("entropy", "mean_token_accuracy"):
        assert metrics_ours[key] == pytest.approx(metrics_trl[key], rel=1e-6)


def test_only_labelled_positions_reach_the_lm_head(sft_pair, monkeypatch):
    (stock, ours), batch = sft_pair
    scored = []
    original = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        scored.append(hidden.shape[0])
        return original(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    labels = batch["labels"]
    n_labelled = int((labels[:, 1:] != -100).sum())
    n_positions = labels[:, 1:].numel()
    assert 0 < n_labelled < n_positions / 2  # the prompt is most of the row
    stock.compute_loss(stock.model, dict(batch))
    ours.compute_loss(ours.model, dict(batch))
    assert scored == [n_positions, n_labelled]  # TRL on CPU scores every position; ours the labelled ones


def test_switch_is_restored_and_a_missing_switch_is_a_clear_error(monkeypatch):
    original = trl_utils._use_triton
    with labelled_positions_only():
        assert trl_utils._use_triton(torch.device("cpu")) is True
    assert trl_utils._use_triton is original
    with pytest.raises(ZeroDivisionError), labelled_positions_only():
        1 / 0  # noqa: B018
    assert trl_utils._use_triton is original
    monkeypatch.delattr(trl_utils, "_use_triton")
    with pytest.raises(RuntimeError, match="_use_triton is gone"):
        check_compact_switch()
