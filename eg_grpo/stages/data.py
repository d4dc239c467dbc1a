"""The data stage: a simulated search log, or a dataset in the Amazon/MiniOneRec layout, as parquet tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eg_grpo.data.simulator import (
    SimulatorConfig,
    data_stage_record,
    simulator_config_of,
    write_simulated_data,
)
from eg_grpo.io import atomic_dir, require_dir, stage_record, up_to_date, write_json, write_stage


@dataclass
class MakeDataArguments(SimulatorConfig):
    """Arguments of the simulated-data stage: every ``SimulatorConfig`` field plus the output.

    Args:
        output_dir: folder to write the data into.
        overwrite: replace an output folder that holds data of another config (or a hand-made one).
    """

    output_dir: str | None = field(default=None, metadata={"help": "Folder to write the data into."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of another config."})


def run_simulated(args: MakeDataArguments) -> dict:
    """Simulates the log and writes it (skipped when ``output_dir`` already holds this config's data).

    Returns:
        The summary statistics (``stats.json``).

    Raises:
        StageConflict: ``output_dir`` holds other data; nothing is replaced without ``overwrite``.
    """
    if not args.output_dir:
        raise ValueError("no output folder: pass --output_dir DIR (or set output_dir in the YAML config)")
    config = simulator_config_of(args)
    if up_to_date(args.output_dir, data_stage_record(config), args.overwrite):
        return json.loads((Path(args.output_dir) / "stats.json").read_text())
    stats = write_simulated_data(config, args.output_dir)
    print(json.dumps(stats, indent=2))
    print(f"wrote {args.output_dir} in {stats['build_seconds']} s of simulation")
    return stats


def simulated_arguments():
    return (MakeDataArguments,)


@dataclass
class MakeAmazonDataArguments:
    """Arguments of the Amazon-layout data stage.

    Args:
        dataset_dir: folder with valid.csv, test.csv, items.json (optionally train.csv, reference_sids.json).
        output_dir: where the parquet tables go.
        overwrite: replace an output folder that holds data of another config (or a hand-made one).
    """

    dataset_dir: str | None = field(default=None, metadata={"help": "Amazon-layout folder (required)."})
    output_dir: str | None = field(default=None, metadata={"help": "Output data folder (required)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder of another config."})


def run_amazon(script_args: MakeAmazonDataArguments, amazon_config) -> dict:
    """Converts the dataset (skipped when ``output_dir`` already holds it); returns the provenance record."""
    from eg_grpo.data.amazon import copy_reference_sids, load_amazon

    dataset = require_dir(
        script_args.dataset_dir, "dataset_dir", "a folder with valid.csv, test.csv, items.json"
    )
    if not script_args.output_dir:
        raise ValueError("no output folder: pass --output_dir DIR")
    record = stage_record("data", {"amazon": amazon_config}, {"dataset": dataset})
    if up_to_date(script_args.output_dir, record, script_args.overwrite):
        return json.loads((Path(script_args.output_dir) / "amazon_provenance.json").read_text())
    log, provenance = load_amazon(dataset, amazon_config)
    with atomic_dir(script_args.output_dir) as tmp:
        log.save(tmp)
        provenance["reference_sids"] = copy_reference_sids(dataset, tmp)
        write_json(tmp / "amazon_provenance.json", provenance)
        write_stage(tmp, record)
    print(json.dumps(provenance, indent=2))
    return provenance


def amazon_arguments():
    from eg_grpo.data.amazon import AmazonConfig

    return (MakeAmazonDataArguments, AmazonConfig)


def simulated_record(args: MakeDataArguments) -> dict:
    return data_stage_record(simulator_config_of(args))
