"""The five TRL hooks the trainer wraps, against the installed TRL: each is called with the arguments the
trainer expects and its result is what TRL goes on with; the reference log-probs are read after the current
policy's (the expert rows' zero KL depends on it)."""

from __future__ import annotations

import pytest
import torch

from eg_grpo.rl.trainer import check_trl_hooks
from tests.rl.test_trainer import G, make_trainer


class _ReadsReferenceFirst:
    """A parent whose `_compute_loss` reads the reference log-probs before computing the current ones."""

    def _generate_and_score_completions(self, inputs):
        pass

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations):
        pass

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False):  # fmt: skip
        pass

    def _compute_loss(self, model, inputs):
        ref = inputs["ref_per_token_logps"]
        return self._get_per_token_logps_and_entropies(model, None, None, 1), ref

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        pass


def test_a_trl_reading_the_reference_first_is_refused():
    check_trl_hooks()  # the installed TRL passes
    with pytest.raises(RuntimeError, match="reads ref_per_token_logps"):
        check_trl_hooks(_ReadsReferenceFirst)


class _Reads(dict):
    """The loss batch, recording every read of ``ref_per_token_logps`` (a copy of the value) in ``events``."""

    def __init__(self, data, events):
        super().__init__(data)
        self.events = events

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if key == "ref_per_token_logps":
            self.events.append(("read_ref", value.detach().clone()))
        return value

    def get(self, key, default=None):  # TRL reads optional entries with .get: recorded alike
        try:
            return self[key]
        except KeyError:
            return default


def test_each_hook_is_called_as_expected_and_its_result_used(
    tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir
):
    trainer = make_trainer(tmp_path, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, beta=0.5, max_steps=1,
                           num_expert_samples=1)  # fmt: skip
    # Moved off the reference (a separate copy of the start model) first: at the first step the two would
    # otherwise agree and a reference left in place on expert rows could not be told from the current policy.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    events, seen = [], {}
    hooks = {name: getattr(trainer, name) for name in (
        "_generate_and_score_completions", "_generate_single_turn", "_calculate_rewards",
        "_get_per_token_logps_and_entropies", "_compute_loss")}  # fmt: skip

    def generate_and_score(inputs):
        assert isinstance(inputs, list) and len(inputs) == 8 and all("prompt" in row for row in inputs)
        seen["scored"] = hooks["_generate_and_score_completions"](inputs)
        return seen["scored"]

    def single_turn(prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        assert (
            num_generations == G and len(prompt_ids) == 8 and all(isinstance(i, int) for i in prompt_ids[0])
        )
        completion_ids, logprobs = hooks["_generate_single_turn"](
            prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs
        )
        seen["completions"] = [list(c) for c in completion_ids]
        return completion_ids, logprobs

    def rewards(inputs, prompts, completions, completion_ids_list, *args, **kwargs):
        assert [list(c) for c in completion_ids_list] == seen["completions"]  # the spliced rows
        assert [row["is_expert"] for row in inputs] == [j % G == G - 1 for j in range(8)]
        hooks["_calculate_rewards"](inputs, prompts, completions, completion_ids_list, *args, **kwargs)
        # Replaced by a known matrix: the advantages must be computed from it, not from the real rewards.
        planted = torch.tensor([[float(j % G)] for j in range(8)])  # every group 0, 1, 2, 3
        trainer._rewards_per_func = planted
        return planted

    def logps(model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False,
              *args, **kwargs):  # fmt: skip
        assert input_ids.shape == attention_mask.shape and input_ids.shape[1] > logits_to_keep
        out = hooks["_get_per_token_logps_and_entropies"](
            model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, *args, **kwargs
        )
        role = (
            "ref"
            if model is trainer.ref_model
            else ("current" if trainer._loss_inputs is not None else "old")
        )
        events.append(
            (f"returned_{role}", out[0].detach().clone(), None if out[1] is None else out[1].detach())
        )
        return out

    def compute_loss(model, inputs):
        seen["loss_inputs"] = inputs
        return hooks["_compute_loss"](model, _Reads(inputs, events))

    for name, spy in (("_generate_and_score_completions", generate_and_score), ("_generate_single_turn", single_turn),
                      ("_calculate_rewards", rewards), ("_get_per_token_logps_and_entropies", logps),
                      ("_compute_loss", compute_loss)):  # fmt: skip
        setattr(trainer, name, spy)
    trainer.train()

    scored, loss_inputs = seen["scored"], seen["loss_inputs"]
    # _generate_single_turn: its completions are the batch's (right-padded) completion ids
    for row, completion in zip(scored["completion_ids"].tolist(), seen["completions"]):
        assert row[: len(completion)] == completion
    # _calculate_rewards: the planted rewards 0..3 per group give (r - 1.5) / (std + 1e-4), std = sqrt(5/3)
    expected = (torch.arange(G, dtype=torch.float) - 1.5) / ((5 / 3) ** 0.5 + 1e-4)
    torch.testing.assert_close(scored["advantages"].view(-1, G), expected.expand(2, G), rtol=0, atol=1e-5)

    # _generate_and_score_completions: its output (with the wrapper's expert_mask) is the loss's batch, in
    # the order TRL shuffles it into
    def rows(batch):
        return sorted(
            (tuple(c), bool(e)) for c, e in zip(batch["completion_ids"].tolist(), batch["expert_mask"])
        )

    assert rows(loss_inputs) == rows(scored) and int(loss_inputs["expert_mask"].sum()) == 2
    # _get_per_token_logps_and_entropies: the reference's log-probs come from it, and in the loss TRL reads
    # `ref_per_token_logps` only after the current policy's call returned, with the expert rows set to them.
    roles = [e[0] for e in events]
    assert "returned_ref" in roles and roles.index("returned_ref") < roles.index("returned_current")
    ref_returned = next(e[1] for e in events if e[0] == "returned_ref")
    torch.testing.assert_close(scored["ref_per_token_logps"], ref_returned)  # generation order
    current_at = roles.index("returned_current")
    reads = [e[1] for e in events[current_at:] if e[0] == "read_ref"]
    assert reads, "TRL did not read ref_per_token_logps after the current log-probs"
    current, entropy = events[current_at][1], events[current_at][2]
    expert = loss_inputs["expert_mask"]
    torch.testing.assert_close(reads[0][expert], current[expert])
    assert not torch.allclose(reads[0][~expert], current[~expert], atol=1e-3)  # policy and reference differ

    # the sampled rows keep the reference's log-probs (matched by prompt and completion: TRL shuffled the rows)
    def key(batch, i):
        return tuple(batch["prompt_ids"][i].tolist()), tuple(batch["completion_ids"][i].tolist())

    ref_of = {key(scored, i): scored["ref_per_token_logps"][i] for i in range(8)}
    for i in (~expert).nonzero().flatten().tolist():
        torch.testing.assert_close(reads[0][i], ref_of[key(loss_inputs, i)])
    # ... and TRL's logged KL and entropy are those of the returned tensors (its result is used)
    mask = loss_inputs["completion_mask"].float()
    delta = reads[0] - current
    kl = ((torch.exp(delta) - delta - 1) * mask).sum() / mask.sum()
    log = next(h for h in trainer.state.log_history if "kl" in h)
    assert log["kl"] == pytest.approx(kl.item(), rel=1e-4, abs=1e-9)
    assert log["entropy"] == pytest.approx(((entropy * mask).sum() / mask.sum()).item(), rel=1e-4)
