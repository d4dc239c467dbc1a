"""The full model's probability mass on valid first SID tokens, over test prompts. Prints one JSON object.

    python benchmarks/valid_mass.py --data_dir D --sid_dir S --model_dirs SFT VANILLA EG [--examples 300]

Per model: the mean and the minimum, over a seeded sample of test requests, of the softmax mass (T = 1)
the unconstrained model puts on the tokens the SID trie allows first. The trie hides a drop of it from
every constrained metric; it matters when the model is also decoded, or scored, without the trie.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import request_prompts
from eg_grpo.decoding import SIDTrie, logits_width
from eg_grpo.modeling import load_model_and_tokenizer
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.tokens import SIDVocab


@torch.no_grad()
def first_token_valid_mass(
    model_dir: str, log: SearchLog, codebook: SIDCodebook, examples: int, seed: int
) -> dict:
    model, tokenizer = load_model_and_tokenizer(model_dir, codebook.codebook_sizes)
    model.eval()
    vocab = SIDVocab(tokenizer, codebook.codebook_sizes)
    trie = SIDTrie.from_sid_token_ids(codebook.sid_token_ids(vocab), vocab_size=logits_width(model))
    allowed = trie.allowed_tokens(torch.zeros(1, 0, dtype=torch.long))[0]  # (V,) the first-level tokens
    requests = log.split("test")
    keep = np.sort(
        np.random.default_rng(seed).choice(len(requests), size=min(examples, len(requests)), replace=False)
    )
    prompts = request_prompts(log, requests.iloc[keep], codebook, tokenizer)
    masses = []
    for start in range(0, len(prompts), 32):
        enc = tokenizer(prompts[start : start + 32], return_tensors="pt", padding=True, padding_side="left")
        logits = model(**enc).logits[:, -1].float()  # (rows, V): the next token is the first SID token
        masses.append((logits.softmax(-1) * allowed[: logits.shape[-1]]).sum(-1))
    masses = torch.cat(masses)
    return {"mean": round(masses.mean().item(), 4), "min": round(masses.min().item(), 4), "n": len(masses)}


def main(args):
    log = SearchLog.load(args.data_dir)
    codebook = SIDCodebook.load(Path(args.sid_dir) / "codebook")
    out = {d: first_token_valid_mass(d, log, codebook, args.examples, args.seed) for d in args.model_dirs}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--sid_dir", required=True)
    parser.add_argument("--model_dirs", nargs="+", required=True)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    main(parser.parse_args())
