"""Simulates a search log and writes it as the data artifact every later stage reads.

Usage:
    python recipes/make_data.py --config recipes/configs/demo/data.yaml --output_dir outputs/demo/data

Writes ``items.parquet``, ``requests.parquet``, ``impressions.parquet``, ``stats.json`` and
``stage.json`` into ``--output_dir`` (atomically) and prints the summary statistics. Every
``SimulatorConfig`` field can be set in the YAML or on the command line (e.g. ``--seed 1``).
"""


import json
from dataclasses import dataclass, field

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
from trl import TrlParser

from eg_grpo.data.simulator import SimulatorConfig, simulator_config_of, write_simulated_data


@dataclass
class MakeDataArguments(SimulatorConfig):
    """Script arguments: the simulator config plus where to write the data."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Folder to write the data into (replaced atomically if it exists)."}
    )


def main(args: MakeDataArguments) -> dict:
    if not args.output_dir:
        raise ValueError("no output folder: pass --output_dir DIR (or set output_dir in the YAML config)")
    config = simulator_config_of(args)
    stats = write_simulated_data(config, args.output_dir)
    print(json.dumps(stats, indent=2))
    print(f"wrote {args.output_dir} in {stats['build_seconds']} s of simulation")
    return stats


if __name__ == "__main__":
    (script_args,) = TrlParser((MakeDataArguments,)).parse_args_and_config()
    main(script_args)
