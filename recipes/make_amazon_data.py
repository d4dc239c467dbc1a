"""Converts a dataset folder in the Amazon/MiniOneRec layout into the parquet tables of the schema.

Usage:
    python recipes/make_amazon_data.py --config recipes/configs/amazon_office/data.yaml \
        --dataset_dir data/amazon_office --output_dir outputs/amazon_office/data

Writes ``OUTPUT_DIR/{items,requests,impressions}.parquet``, ``reference_sids.json`` (when the
dataset ships one), ``amazon_provenance.json`` (which rows each split holds) and ``stage.json``
(whose fingerprint covers the dataset files' bytes). The stage is :func:`eg_grpo.stages.data.run_amazon`.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Loaded on first use (the modules import torch), so `--help` answers at once.
    from eg_grpo.stages import data

    return {"MakeAmazonDataArguments": data.MakeAmazonDataArguments, "main": data.run_amazon}[name]


__all__ = ["MakeAmazonDataArguments", "main"]  # noqa: F822  (module __getattr__)

if __name__ == "__main__":
    from eg_grpo.cli import run_recipe

    sys.exit(
        run_recipe(
            "amazon_data",
            own=(
                "eg_grpo.stages.data:MakeAmazonDataArguments",
                "eg_grpo.data.amazon:AmazonConfig",
            ),
        )
    )
