"""eg-grpo: generative retrieval of semantic IDs (CQ-SID) trained with expert-guided GRPO on TRL."""

__version__ = "0.1.0"
