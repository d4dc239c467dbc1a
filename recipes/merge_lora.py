"""Merge a LoRA adapter saved by `recipes/eg_grpo.py` (or `recipes/sft.py`) into a standalone model.

    python recipes/merge_lora.py --adapter_dir outputs/qwen2.5-0.5b/eg_grpo --output_dir outputs/qwen2.5-0.5b/eg_grpo_merged

The adapter folder holds the LoRA matrices and, through `modules_to_save`, full copies of the
embeddings and head that carry the SID tokens; the merged folder loads with
`AutoModelForCausalLM.from_pretrained` like any model (evaluation, the recall API, serving).
"""

import argparse
import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.cli import guarded


def main(args):
    from eg_grpo.modeling import merge_lora_adapter  # here, not above: `--help` answers without torch

    out = merge_lora_adapter(args.adapter_dir, args.output_dir)
    print(f"merged model and tokenizer written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adapter_dir", required=True, help="folder with adapter_config.json")
    parser.add_argument("--output_dir", required=True, help="where the standalone model goes")
    arguments = parser.parse_args()
    sys.exit(guarded("merge_lora", lambda: main(arguments)))
