"""Compare RL runs from their local logs: a markdown table and PNG curves (no network).

    python recipes/compare.py outputs/demo/vanilla_grpo outputs/demo/eg_grpo --output_dir outputs/demo/compare

    # test metrics only, each model paired with the first on the same rows
    python recipes/compare.py --eval_dirs outputs/demo/eval_sft outputs/demo/eval_eg_grpo
"""


import argparse
from pathlib import Path

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.report import paired_table, plot_curves, test_table, training_table


def main(args):
    if not args.run_dirs and not args.eval_dirs:
        raise SystemExit("compare.py: give RL run folders, --eval_dirs, or both")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [training_table(args.run_dirs)] if args.run_dirs else []
    if args.eval_dirs:
        parts.append(test_table(args.eval_dirs))
        paired = paired_table(args.eval_dirs)
        if paired:
            parts.append("Paired with the first (same rows; Δ ± standard error):\n\n" + paired)
    table = "\n\n".join(parts)
    (out / "comparison.md").write_text(table + "\n")
    written = [out / "comparison.md"]
    if args.run_dirs:
        written.append(plot_curves(args.run_dirs, out / "curves.png"))
    print(table)
    print("\nwrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", help="RL output folders (log_history.json or checkpoints)")
    parser.add_argument("--eval_dirs", nargs="*", default=[],
                        help="folders with eval_results.json (and per_request.csv: paired Δ against the first)")  # fmt: skip
    parser.add_argument("--output_dir", default="outputs/compare")
    main(parser.parse_args())
