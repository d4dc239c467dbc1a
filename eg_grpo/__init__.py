"""eg-grpo: generative retrieval of semantic IDs (CQ-SID) trained with expert-guided GRPO on TRL."""

__version__ = "0.1.0"

import warnings

# TRL 1.16 and PEFT use the `gradient_checkpointing` aliases that transformers 5.2x deprecates in
# favour of `activation_checkpointing` (`model.is_gradient_checkpointing` around every generation in
# `trl.models.utils`, `gradient_checkpointing_enable/disable` there too, `is_gradient_checkpointing`
# when PEFT wraps a model): FutureWarnings no argument of ours can avoid. Only those messages are
# silenced; our own configs use the new names.
_CHECKPOINTING_ALIASES = r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated"


def silence_checkpointing_alias_warnings() -> None:
    """Ignores the FutureWarnings of TRL's and PEFT's calls to the deprecated checkpointing aliases (see above).

    Runs when the package is imported, and again when an `EGGRPOTrainer` is built, for hosts such as
    pytest that reset the warning filters.
    """
    warnings.filterwarnings("ignore", message=_CHECKPOINTING_ALIASES, category=FutureWarning)


silence_checkpointing_alias_warnings()

# The trainer and its config import TRL and torch; they load on first use, so `import eg_grpo.data`
# (the simulator, the schema, the data validator) stays light.
_LAZY = {"EGGRPOConfig": "eg_grpo.rl.config", "EGGRPOTrainer": "eg_grpo.rl.trainer"}
__all__ = ["EGGRPOConfig", "EGGRPOTrainer", "silence_checkpointing_alias_warnings"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eg_grpo' has no attribute {name!r}")
