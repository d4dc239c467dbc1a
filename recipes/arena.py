"""The search-funnel arena: a simulated online A/B of recall channels (docs/arena.md).

Usage:
    python recipes/arena.py --config recipes/configs/demo/arena.yaml
    python recipes/arena.py --config recipes/configs/tiny/arena.yaml --data_dir outputs/tiny/data \
        --output_dir outputs/tiny/arena --channels bm25:24 oracle:24 --generative sft=outputs/tiny/sft

Plays control (the legacy channels) against one treatment per added channel or generative model,
per ranking stage and budget mode, on one split of a simulated data folder, and writes into
``OUTPUT_DIR`` (atomically): ``arena_results.json``, ``arena.md``, ``arena_lifts.png``,
``arena_shares.png`` and ``stage.json``. Every figure is an expectation under the simulator's
user model: simulated, not measured on people. Every ``ArenaArguments`` field can be set in the
YAML or on the command line.
"""

import logging

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.arena import ArenaArguments, run
from eg_grpo.cli import StageParser


def main(args: ArenaArguments):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = run(args)
    print((output / "arena.md").read_text())
    return output


if __name__ == "__main__":
    (script_args,) = StageParser((ArenaArguments,)).parse_args_and_config()
    main(script_args)
