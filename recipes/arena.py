"""The search-funnel arena: a simulated online A/B of recall channels (docs/arena.md).

Usage:
    python recipes/arena.py --config recipes/configs/demo/arena.yaml
    python recipes/arena.py --config recipes/configs/tiny/arena.yaml --data_dir outputs/tiny/data \
        --output_dir outputs/tiny/arena --channels bm25:24 oracle:24 --generative sft=outputs/tiny/sft

Plays control (the legacy channels, or any ``--control``) against one treatment per added channel or
generative model, per ranking stage and budget mode, on one split of a simulated data folder; with
``--control_views legacy=logged:48 ...`` the same requests under further controls too, each channel
recalled once. Writes into ``OUTPUT_DIR`` (atomically): ``arena_results.json``, ``arena.md``,
``arena_lifts.png``, ``arena_shares.png`` (and both per further view) and ``stage.json``. Every figure is an expectation under the simulator's
user model: simulated, not measured on people. Every ``ArenaArguments`` field can be set in the
YAML or on the command line.
"""

import logging
import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Loaded on first use (the arena imports torch), so `--help` answers at once.
    from eg_grpo.arena import ArenaArguments

    return {"ArenaArguments": ArenaArguments}[name]


__all__ = ["ArenaArguments", "main"]  # noqa: F822  (module __getattr__)


def main(args):
    from eg_grpo.arena import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = run(args)
    print((output / "arena.md").read_text())
    return output


if __name__ == "__main__":
    from eg_grpo.cli import run_recipe

    sys.exit(run_recipe("arena", main, own=("eg_grpo.arena.config:ArenaArguments",)))
