"""The private hooks of TRL's `GRPOTrainer` that `EGGRPOTrainer` wraps, checked against the installed TRL."""

from __future__ import annotations

import inspect

import trl
from trl import GRPOTrainer

# The private hooks `EGGRPOTrainer` wraps, with the parameters it relies on. Checked at start-up so an
# upgraded TRL fails loudly here instead of training on silently wrong rollouts.
_EXPECTED_HOOKS = {
    "_generate_and_score_completions": ["self", "inputs"],
    "_generate_single_turn": ["self", "prompt_ids", "images", "multimodal_fields", "num_generations"],
    "_get_per_token_logps_and_entropies": [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
    ],
    "_compute_loss": ["self", "model", "inputs"],
    "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
}


def check_trl_hooks(parent: type = GRPOTrainer) -> None:
    """Raises `RuntimeError` when the installed TRL's hooks differ from what this trainer wraps.

    Checks each hook's leading parameters and, in the source of `_compute_loss`, that the current policy's
    log-probs are computed before `ref_per_token_logps` is read: the expert rows' zero KL is written into
    that entry by the log-prob hook, so a TRL reading it first would apply the KL to expert rows silently.
    (`tests/rl/test_trl_hooks.py` checks on a tiny step that each hook is called and its result used.)
    """
    for name, expected in _EXPECTED_HOOKS.items():
        hook = getattr(parent, name, None)
        if hook is None:
            raise RuntimeError(f"trl {trl.__version__}: GRPOTrainer.{name} is gone; eg-grpo needs trl 1.16.x")
        params = list(inspect.signature(hook).parameters)
        if params[: len(expected)] != expected:
            raise RuntimeError(
                f"trl {trl.__version__}: GRPOTrainer.{name}{tuple(params)} does not start with {tuple(expected)}; "
                "eg-grpo wraps this private hook and is pinned to trl 1.16.x — install `trl>=1.16,<1.17`"
            )
    try:
        source = inspect.getsource(parent._compute_loss)
    except (OSError, TypeError):  # no source shipped: the tests are then the only check
        return
    scored = source.find("self._get_per_token_logps_and_entropies(")
    read = source.find('inputs["ref_per_token_logps"]')
    if scored < 0 or (read >= 0 and read < scored):
        raise RuntimeError(
            f"trl {trl.__version__}: GRPOTrainer._compute_loss no longer computes the current log-probs before it "
            "reads ref_per_token_logps, which the expert rows' zero KL relies on; eg-grpo is pinned to trl 1.16.x"
        )
