"""Converts a dataset folder in the Amazon/MiniOneRec layout into the parquet tables of the schema.

Usage:
    python recipes/make_amazon_data.py --config recipes/configs/amazon_office/data.yaml \
        --dataset_dir data/amazon_office --output_dir outputs/amazon_office/data

Writes ``OUTPUT_DIR/{items,requests,impressions}.parquet``, ``reference_sids.json`` (when the
dataset ships one), ``amazon_provenance.json`` (which rows each split holds) and ``stage.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
from trl import TrlParser

from eg_grpo.data.amazon import AmazonConfig, copy_reference_sids, load_amazon
from eg_grpo.io import atomic_dir, mark_stage_done, stage_is_current, write_json


@dataclass
class MakeAmazonDataArguments:
    """Script arguments.

    Args:
        dataset_dir: folder with valid.csv, test.csv, items.json (optionally train.csv, reference_sids.json).
        output_dir: where the parquet tables go.
        overwrite: rebuild even when OUTPUT_DIR already holds the output of this exact config.
    """

    dataset_dir: str = field(
        default="data/amazon_office", metadata={"help": "Amazon-layout folder (see docs/amazon.md)."}
    )
    output_dir: str = field(default="outputs/amazon_office/data", metadata={"help": "Output data folder."})
    overwrite: bool = field(default=False, metadata={"help": "Rebuild even if up to date."})


def main(script_args: MakeAmazonDataArguments, amazon_config: AmazonConfig) -> None:
    stage_config = {"dataset_dir": script_args.dataset_dir, "amazon": asdict(amazon_config)}
    if not script_args.overwrite and stage_is_current(script_args.output_dir, stage_config):
        print(f"{script_args.output_dir} is up to date; nothing to do (pass --overwrite to rebuild)")
        return
    log, provenance = load_amazon(script_args.dataset_dir, amazon_config)
    with atomic_dir(script_args.output_dir) as tmp:
        log.save(tmp)
        provenance["reference_sids"] = copy_reference_sids(script_args.dataset_dir, tmp)
        write_json(tmp / "amazon_provenance.json", provenance)
        mark_stage_done(tmp, stage_config, stage="data")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    parser = TrlParser((MakeAmazonDataArguments, AmazonConfig))
    main(*parser.parse_args_and_config())
