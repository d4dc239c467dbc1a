"""Compare RL runs from their local logs: a markdown table and PNG curves (no network).

    python recipes/compare.py outputs/demo/vanilla_grpo outputs/demo/eg_grpo --output_dir outputs/demo/compare
"""


import argparse
from pathlib import Path

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.report import plot_curves, test_table, training_table


def main(args):
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = training_table(args.run_dirs)
    if args.eval_dirs:
        table += "\n\n" + test_table(args.eval_dirs)
    (out / "comparison.md").write_text(table + "\n")
    png = plot_curves(args.run_dirs, out / "curves.png")
    print(table)
    print(f"\nwrote {out / 'comparison.md'} and {png}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="RL output folders (log_history.json or checkpoints)")
    parser.add_argument("--eval_dirs", nargs="*", default=[], help="folders with eval_results.json")
    parser.add_argument("--output_dir", default="outputs/compare")
    main(parser.parse_args())
