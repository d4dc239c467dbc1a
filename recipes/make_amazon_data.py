"""Converts a dataset folder in the Amazon/MiniOneRec layout into the parquet tables of the schema.

Usage:
    python recipes/make_amazon_data.py --config recipes/configs/amazon_office/data.yaml \
        --dataset_dir data/amazon_office --output_dir outputs/amazon_office/data

Writes ``OUTPUT_DIR/{items,requests,impressions}.parquet``, ``reference_sids.json`` (when the
dataset ships one), ``amazon_provenance.json`` (which rows each split holds) and ``stage.json``
(whose fingerprint covers the dataset files' bytes). The stage is :func:`eg_grpo.stages.data.run_amazon`.
"""

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser
from eg_grpo.data.amazon import AmazonConfig
from eg_grpo.stages.data import MakeAmazonDataArguments, run_amazon

main = run_amazon
__all__ = ["MakeAmazonDataArguments", "main"]

if __name__ == "__main__":
    parser = StageParser((MakeAmazonDataArguments, AmazonConfig))
    script_args, amazon_config = parser.parse_args_and_config()
    run_amazon(script_args, amazon_config)
