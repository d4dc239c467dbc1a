"""The paper's Tables 1-4 (arXiv 2605.14434) on our evaluation folders, the paper's numbers beside ours.

    python recipes/paper_tables.py --config recipes/configs/demo/paper_tables.yaml

The YAML maps each table's rows (named as the paper's) to evaluation folders written by
``recipes/evaluate.py``; Table 4 rows may list several folders (seeds). Writes ``output`` (markdown)
and prints it. Table 4's rows must be comparable arms (their models what the labels say, trained
with the same budget, rows, inputs and seeds): otherwise it stops, naming each difference, unless
``--allow_incomparable true`` (or ``allow_incomparable: true`` in the YAML), which builds the tables
under a warning banner. See :mod:`eg_grpo.eval.paper_tables` and docs/paper.md.
"""

import argparse
import sys
from pathlib import Path

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
import yaml

from eg_grpo.cli import guarded
from eg_grpo.eval.paper_tables import PaperTables

KEYS = ("table1", "table2", "table3", "table4", "beams", "item_budget", "allow_incomparable", "output")


def main(config: dict) -> str:
    unknown = set(config) - set(KEYS)
    if unknown or "table1" not in config:
        raise SystemExit(
            f"paper_tables.py: the config needs table1 and may hold {KEYS}; unknown keys {sorted(unknown)}"
        )
    tables = PaperTables(**{k: config[k] for k in KEYS[:-1] if config.get(k) is not None})
    text = tables.markdown()
    if config.get("output"):
        out = Path(config["output"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", required=True, help="YAML with table1..table4, beams, item_budget, output"
    )
    parser.add_argument("--output", help="markdown file (overrides the config's)")
    parser.add_argument("--allow_incomparable", choices=("true", "false"), default=None,
                        help="build Table 4 even when its rows are not comparable arms, under a warning")  # fmt: skip
    args = parser.parse_args()

    def _run():
        config = yaml.safe_load(Path(args.config).read_text()) or {}
        if args.output:
            config["output"] = args.output
        if args.allow_incomparable is not None:
            config["allow_incomparable"] = args.allow_incomparable == "true"
        main(config)

    sys.exit(guarded("paper_tables", _run))
