"""Serve the policy with vLLM for `vllm_mode: server`, with the SID trie loaded as a logits processor.

    # GPU 0 serves, GPUs 1.. train (see README, "Scaling")
    CUDA_VISIBLE_DEVICES=0 python recipes/vllm_serve.py --model outputs/qwen2.5-0.5b/sft --max_model_len 2048

It takes the arguments of `trl vllm-serve` and runs the same `vllm serve` command line TRL 1.16 builds
for its trainers (NCCL weight transfer, `processed_logprobs`, `VLLM_SERVER_DEV_MODE=1`), plus
`--logits-processors eg_grpo.decoding.vllm_processor:SIDTrieVLLMLogitsProcessor`. The processor only
touches requests whose body carries ``"vllm_xargs": {"sid_trie": SID_DIR}``, which `EGGRPOTrainer`
adds when `constrained_decoding` is on; at start-up the trainer checks that the server loaded it.
Unknown arguments go to `vllm serve` as they are. Needs the vLLM extra: `pip install -e ".[vllm]"`.
"""

import os
import shlex
import sys

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)
from trl import TrlParser
from trl.scripts.vllm_serve import ScriptArguments, build_command

from eg_grpo.decoding.vllm_processor import PROCESSOR_FQCN


def serve_command(script_args: ScriptArguments, extra_args: list[str] | None = None) -> list[str]:
    """TRL's `vllm serve` command line (starting with the Python executable) plus our logits processor."""
    command = build_command(script_args, extra_args)
    if PROCESSOR_FQCN not in command:
        command += ["--logits-processors", PROCESSOR_FQCN]
    return command


def main(script_args: ScriptArguments, extra_args: list[str] | None = None):
    command = serve_command(script_args, extra_args)
    # TRL's weight-transfer and /server_info endpoints live behind vLLM's dev mode (as `trl vllm-serve`).
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    shown = shlex.join(["vllm", *command[command.index("serve") :]])
    print(f"[vllm_serve] VLLM_SERVER_DEV_MODE=1 {shown}", flush=True)
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    parser = TrlParser(ScriptArguments)
    script_args, extra_args = parser.parse_args_and_config(return_remaining_strings=True)
    main(script_args, extra_args)
