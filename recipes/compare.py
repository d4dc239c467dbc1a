"""Compare RL runs from their local logs: a markdown table and PNG curves (no network).

    python recipes/compare.py outputs/demo/vanilla_grpo outputs/demo/eg_grpo --output_dir outputs/demo/compare

    # test metrics only, each model paired with the first (only when data and split match)
    python recipes/compare.py --eval_dirs outputs/demo/eval/sft outputs/demo/eval/eg_grpo

A folder that does not exist is an error. The comparison is :func:`eg_grpo.compare.run`.
"""

import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import StageParser, guarded
from eg_grpo.compare import CompareArguments, run

main = run
__all__ = ["CompareArguments", "main"]


def _main(argv: list[str]) -> None:
    parser = StageParser((CompareArguments,))
    args, rest = parser.parse_args_and_config(args=argv, return_remaining_strings=True)
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        parser.error(f"unknown option(s): {' '.join(unknown)}")
    args.run_dirs = [*rest, *args.run_dirs]  # positional folders are RL runs
    run(args)


if __name__ == "__main__":
    sys.exit(guarded("compare", lambda: _main(sys.argv[1:])))
