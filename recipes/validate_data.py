"""Checks a data folder before any stage reads it: every schema error and warning in one report.

Usage:
    python recipes/validate_data.py DATA_DIR

Exits 0 when the folder can be used (warnings may remain), 1 when a stage would refuse it.
"""

import argparse
import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.data.validate import validate_data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data_dir", help="folder holding items.parquet, requests.parquet, impressions.parquet"
    )
    report = validate_data_dir(parser.parse_args(argv).data_dir)
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
