"""Data: the schema, the search-log simulator, real-dataset loaders and the one prompt builder.

Also the rows several stages share: SFT's request rows and prompts (``sft_dataset``, read by RL's rows,
evaluation and the stages) and RL's rows (``rl_dataset``).

May import: eg_grpo.io, eg_grpo.sid
"""

from eg_grpo.data.schema import SPLITS, SchemaError, SearchLog, validate_table

__all__ = ["SPLITS", "SchemaError", "SearchLog", "validate_table"]
