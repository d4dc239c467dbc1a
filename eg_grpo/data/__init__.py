"""Data: the schema, the search-log simulator, real-dataset loaders and the one prompt builder."""

from eg_grpo.data.schema import SPLITS, SchemaError, SearchLog, validate_table

__all__ = ["SPLITS", "SchemaError", "SearchLog", "validate_table"]
