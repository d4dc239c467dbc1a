"""Benchmark of SID beam search: ``generate()`` with the trie processor vs the SID beam search. Prints JSON.

    python benchmarks/sid_beam.py                       # demo-sized Qwen2, 1 thread, beam 20
    python benchmarks/sid_beam.py --beams 50 --requests 256 --batch_size 64

The model has the demo preset's sizes (Qwen2, 4 layers, hidden 256, a ~4k BPE vocabulary plus 3 × 64
SID tokens, random weights); the trie holds ``--sids`` random valid SIDs of 3 × 64 codes; prompts are
the generator's own (``build_prompt``: a random history of up to 10 SIDs and a query of 1-4 words).

Reported, both engines timed in this one process, interleaved round by round so a noisy neighbour
hits both alike (the best round is kept):

- ``batched``: requests/s over ``--requests`` prompts in batches of ``--batch_size`` (tokenisation
  included, as callers see it), and their ratio; ``sid_constrained`` is the SID search ranking by the
  constrained policy's log-prob (``score="constrained"``: the allowed ids' logits only, no eos forward),
  timed in the same rounds;
- ``single``: per-request latency percentiles (ms) at batch size 1 over ``--single`` prompts;
- ``agreement``: whether both engines return the same SIDs in the same order, and the largest score gap;
- ``load``: ``/proc/loadavg`` before and after (other work on the machine skews every number).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from eg_grpo.data.prompts import build_prompt
from eg_grpo.decoding import SIDTrie, generate_sids, logits_width
from eg_grpo.decoding.trie import sid_token_ids_from_codes
from eg_grpo.modeling import TINY_PRESETS, build_tiny_model_and_tokenizer

LEVELS, CODES = 3, 64  # the demo's codebook (recipes/configs/demo/sids.yaml)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(args):
    """``(model, tokenizer, trie, prompts)`` of demo size."""
    rng = np.random.default_rng(args.seed)
    # Random pseudo-words, so the BPE fills about the demo's 4,096-token vocabulary.
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(6000)]
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 9))) for _ in range(20000)]
    model, tokenizer, vocab = build_tiny_model_and_tokenizer(texts, (CODES,) * LEVELS, TINY_PRESETS["demo"])
    model.eval()
    keys = rng.choice(CODES**LEVELS, size=args.sids, replace=False)
    codes = np.stack([keys // CODES**2, keys // CODES % CODES, keys % CODES], axis=1)
    seqs = sid_token_ids_from_codes(codes, vocab.level_token_ids, tokenizer.eos_token_id)
    trie = SIDTrie.from_sid_token_ids(seqs, vocab_size=logits_width(model))

    def prompt():
        history = [tuple(c) for c in codes[rng.integers(0, len(codes), rng.integers(0, 11))]]
        return build_prompt(" ".join(rng.choice(words, size=rng.integers(1, 5))), history)

    return model, tokenizer, trie, [prompt() for _ in range(max(args.requests, args.single))]


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return path.read_text().strip() if path.exists() else "n/a"


def main(args) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, tokenizer, trie, prompts = build(args)
    load_before = loadavg()
    log(f"{trie}; vocab {logits_width(model)}; load {load_before}")
    kwargs = {"mode": "beam", "num": args.beams}

    def run(engine, batch, size):
        if engine == "sid_constrained":
            return generate_sids(model, tokenizer, batch, trie, batch_size=size, engine="sid", score="constrained",
                                 **kwargs)  # fmt: skip
        return generate_sids(model, tokenizer, batch, trie, batch_size=size, engine=engine, **kwargs)

    batch = prompts[: args.requests]
    outputs = {engine: run(engine, batch, args.batch_size) for engine in ("hf", "sid")}  # warm-up, checked
    same = [
        [c.token_ids for c in a] == [c.token_ids for c in b] for a, b in zip(outputs["hf"], outputs["sid"])
    ]
    gap = max(abs(x.score - y.score) for a, b in zip(outputs["hf"], outputs["sid"]) for x, y in zip(a, b))

    best = {"hf": float("inf"), "sid": float("inf"), "sid_constrained": float("inf")}
    for _ in range(args.repeats):
        for engine in best:
            start = time.perf_counter()
            run(engine, batch, args.batch_size)
            best[engine] = min(best[engine], time.perf_counter() - start)
    throughput = {engine: len(batch) / seconds for engine, seconds in best.items()}

    latency = {"hf": [], "sid": [], "sid_constrained": []}
    for prompt in prompts[: args.single]:
        for engine, times in latency.items():
            start = time.perf_counter()
            run(engine, [prompt], 1)
            times.append(1000 * (time.perf_counter() - start))

    def pct(values):
        return {f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 90, 99)}

    return {
        "config": {
            "model": "qwen2 demo preset (4 layers, hidden 256), random weights",
            "vocab_size": logits_width(model),
            "sids": trie.num_sids,
            "max_fanout": list(trie.max_fanout),
            "beams": args.beams,
            "requests": len(batch),
            "batch_size": args.batch_size,
            "torch_threads": torch.get_num_threads(),
            "prompt_tokens_mean": round(float(np.mean([len(tokenizer(p)["input_ids"]) for p in batch])), 1),
            "repeats": args.repeats,
        },
        "batched": {
            "hf_requests_per_s": round(throughput["hf"], 1),
            "sid_requests_per_s": round(throughput["sid"], 1),
            "speedup": round(throughput["sid"] / throughput["hf"], 2),
            "sid_constrained_requests_per_s": round(throughput["sid_constrained"], 1),
            "constrained_speedup": round(throughput["sid_constrained"] / throughput["hf"], 2),
        },
        "single": {
            "requests": len(latency["sid"]),
            "hf_ms": pct(latency["hf"]),
            "sid_ms": pct(latency["sid"]),
            "sid_constrained_ms": pct(latency["sid_constrained"]),
        },
        "agreement": {"same_sids_same_order": float(np.mean(same)), "max_score_gap": gap},
        "load": {"before": load_before, "after": loadavg()},
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32, help="EvalSettings' default")
    parser.add_argument("--single", type=int, default=100, help="requests timed one at a time")
    parser.add_argument("--sids", type=int, default=2800)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (the best is kept)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(main(parse_args())))
