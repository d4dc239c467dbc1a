"""Benchmark of SID-trie constrained decoding. Prints one JSON object to stdout.

    python benchmarks/decoding.py                      # CPU, tiny Qwen2, 10k / 100k / 1M SIDs
    python benchmarks/decoding.py --device cuda --model qwen2.5-0.5b --dtype bfloat16 \
        --sizes 1000000 --batch 64 --beams 50

Per catalogue size: ``build_seconds``/``build_peak_mb`` (trie build from token ids), ``trie_bytes``,
``processor_ms_per_step`` (our processor on batch × beams rows, averaged over the L + 1 steps),
``generate_ratio`` (constrained ÷ unconstrained beam search wall time, same model, same inputs, in
one process; best of ``--repeats``), and ``speedup_vs_dict_trie`` (per-step time of a Python dict
keyed by the token prefix used through ``prefix_allowed_tokens_fn``, the common approach, ÷ ours;
the dict's time is measured on ``dict_rows_measured`` rows and scaled linearly to all rows when
fewer). SIDs are random, 3 levels × 256 codes, with Zipf-skewed first and second levels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc

import numpy as np
import torch
from transformers import LogitsProcessorList, Qwen2ForCausalLM
from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

from eg_grpo.decoding import (
    SIDTrie,
    SIDTrieLogitsProcessor,
    isolated_generation_config,
    logits_width,
    sid_generation_config,
)
from eg_grpo.decoding.trie import sid_token_ids_from_codes
from eg_grpo.modeling import TINY_PRESETS, build_tiny_model_and_tokenizer, qwen2_5_0_5b_config

LEVELS, CODES = 3, 256
QWEN_TOKENS, QWEN_EOS = 151665, 151643  # Qwen2.5's tokenizer length and <|endoftext|>


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct SIDs (codes ``(n, 3)``): levels 1 and 2 Zipf-skewed (a = 1.1), level 3 uniform."""
    weights = 1.0 / np.arange(1, CODES + 1) ** 1.1
    weights /= weights.sum()
    perm = [rng.permutation(CODES) for _ in range(2)]  # the popular codes are not 0, 1, 2, ...
    seen = np.empty(0, dtype=np.int64)
    while len(seen) < n:
        m = 2 * (n - len(seen)) + 1000
        c1 = perm[0][rng.choice(CODES, m, p=weights)]
        c2 = perm[1][rng.choice(CODES, m, p=weights)]
        c3 = rng.integers(0, CODES, m)
        seen = np.unique(np.concatenate([seen, (c1 * CODES + c2) * CODES + c3]))
    keys = rng.choice(seen, n, replace=False)
    return np.stack([keys // CODES**2, keys // CODES % CODES, keys % CODES], axis=1)


def build_model(args):
    """``(model, level_token_ids, eos, pad, prompt_vocab)`` with the 3 × 256 SID tokens in the vocabulary."""
    dtype = getattr(torch, args.dtype)
    if args.model == "tiny":
        rng = np.random.default_rng(0)
        words = [
            "red",
            "blue",
            "black",
            "cotton",
            "wool",
            "leather",
            "slim",
            "running",
            "shoes",
            "shirt",
            "bag",
            "hat",
            "phone",
            "case",
            "lamp",
            "desk",
        ]
        texts = [" ".join(rng.choice(words, size=rng.integers(2, 8))) for _ in range(2000)]
        model, tok, vocab = build_tiny_model_and_tokenizer(texts, (CODES,) * LEVELS, TINY_PRESETS["test"])
        model = model.to(device=args.device, dtype=dtype)
        return (
            model,
            vocab.level_token_ids,
            tok.eos_token_id,
            tok.pad_token_id,
            int(vocab.level_token_ids[0][0]),
        )
    # Qwen2.5-0.5B sizes, random init: SID tokens take ids after Qwen's 151,665 tokens, as add_sid_tokens would.
    config = qwen2_5_0_5b_config(vocab_size=QWEN_TOKENS + LEVELS * CODES)
    with torch.device(args.device):
        model = Qwen2ForCausalLM(config).to(dtype).eval()
    level_ids = [QWEN_TOKENS + level * CODES + np.arange(CODES) for level in range(LEVELS)]
    return model, level_ids, QWEN_EOS, QWEN_EOS, QWEN_EOS


def make_prompts(args, prompt_vocab: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, P)`` left-padded random prompts of 16–48 tokens, and their attention mask."""
    lengths = rng.integers(16, 49, args.batch)
    width = int(lengths.max())
    ids = torch.zeros(args.batch, width, dtype=torch.long)
    mask = torch.zeros(args.batch, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.from_numpy(rng.integers(3, prompt_vocab, n))
        mask[i, width - n :] = 1
    return ids.to(args.device), mask.to(args.device)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call, seconds."""
    fn()  # warm-up: first calls pay for allocation and lazy initialisation
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def build_dict_trie(seqs: np.ndarray) -> dict[tuple[int, ...], list[int]]:
    """The common trie: a dict from every token prefix to the list of allowed next tokens."""
    children: dict[tuple[int, ...], set[int]] = {}
    for row in seqs.tolist():
        for t in range(len(row)):
            children.setdefault(tuple(row[:t]), set()).add(row[t])
    return {prefix: sorted(tokens) for prefix, tokens in children.items()}


def step_inputs(seqs: np.ndarray, prompt_rows: torch.Tensor, rows: int, t: int, rng) -> torch.Tensor:
    """``(rows, P + t)``: prompts followed by ``t`` tokens of random valid SIDs (the state at step t)."""
    picked = torch.from_numpy(seqs[rng.integers(0, len(seqs), rows), :t]).to(prompt_rows.device)
    return torch.cat([prompt_rows, picked], dim=1)


def bench_size(n: int, args, model, level_ids, eos, pad, prompts, mask, rng) -> dict:
    rows = args.batch * args.beams
    V = logits_width(model)
    seqs = sid_token_ids_from_codes(random_codes(n, rng), level_ids, eos)  # (n, L + 1)

    tracemalloc.start()
    start = time.perf_counter()
    trie = SIDTrie.from_sid_token_ids(seqs, vocab_size=V)
    build_seconds = time.perf_counter() - start
    build_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    trie = trie.to(args.device)
    log(f"[{n}] {trie}, built in {build_seconds:.2f} s")

    # Per-step processor time on synthetic states at every depth (same inputs for ours and the dict).
    prompt_rows = prompts.repeat_interleave(args.beams, dim=0)  # (rows, P)
    P = prompt_rows.shape[1]
    states = [step_inputs(seqs, prompt_rows, rows, t, rng) for t in range(LEVELS + 1)]
    scores = torch.randn(rows, V, device=args.device, dtype=torch.float32)
    ours = SIDTrieLogitsProcessor(trie, prompt_length=P, pad_token_id=pad)
    ours_ms = [float("inf")] * len(states)
    for _ in range(max(20, args.repeats)):  # cheap calls: many rounds, interleaved across steps, best kept
        for t, state in enumerate(states):
            ours_ms[t] = min(ours_ms[t], 1000 * timed(lambda s=state: ours(s, scores), args.device, 1))

    start = time.perf_counter()
    table = build_dict_trie(seqs)
    dict_build = time.perf_counter() - start

    def allowed(batch_id, sent):  # the common prefix_allowed_tokens_fn
        return table.get(tuple(sent[P:].tolist()), [eos])

    dict_rows = min(rows, max(args.beams, args.dict_rows // args.beams * args.beams))
    baseline = PrefixConstrainedLogitsProcessor(allowed, num_beams=args.beams)
    dict_ms = [
        1000
        * timed(lambda s=s: baseline(s[:dict_rows], scores[:dict_rows]), args.device, args.repeats)
        * rows
        / dict_rows
        for s in states
    ]

    # Full beam search, constrained vs unconstrained, same model and inputs.
    config = sid_generation_config("beam", args.beams, LEVELS + 1, eos, pad)
    config.return_dict_in_generate, config.output_scores = False, False

    def generate(constrained: bool):
        processors = [SIDTrieLogitsProcessor(trie, prompt_length=P, pad_token_id=pad)] if constrained else []
        with torch.inference_mode(), isolated_generation_config(model):
            return model.generate(input_ids=prompts, attention_mask=mask, generation_config=config,
                                  logits_processor=LogitsProcessorList(processors))  # fmt: skip

    out_c, out_u = generate(True), generate(False)  # warm-up, and the outputs checked below
    times = {True: float("inf"), False: float("inf")}
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits both arms alike
        for constrained in (True, False):
            times[constrained] = min(
                times[constrained], timed(lambda c=constrained: generate(c), args.device, 1)
            )
    valid_c = trie.contains(out_c[:, P:]).float().mean().item()
    valid_u = trie.contains(out_u[:, P:]).float().mean().item() if out_u.shape[1] >= P + LEVELS + 1 else 0.0
    per_step = float(np.mean(ours_ms))
    return {
        "build_seconds": round(build_seconds, 3),
        "build_peak_mb": round(build_peak / 2**20, 1),
        "trie_bytes": trie.nbytes,
        "num_sids": trie.num_sids,
        "max_fanout": list(trie.max_fanout),
        "processor_ms_per_step": round(per_step, 3),
        "processor_ms_by_step": [round(x, 3) for x in ours_ms],
        "dict_trie_build_seconds": round(dict_build, 2),
        "dict_trie_ms_per_step": round(float(np.mean(dict_ms)), 2),
        "dict_rows_measured": dict_rows,
        "dict_scaled_to_rows": rows,
        "speedup_vs_dict_trie": round(float(np.mean(dict_ms)) / per_step, 1),
        "constrained_seconds": round(times[True], 4),
        "unconstrained_seconds": round(times[False], 4),
        "generate_ratio": round(times[True] / times[False], 3),
        # Noise-free estimate: the processor's measured time added to the unconstrained run's L + 1 steps.
        "generate_ratio_estimate": round(1 + per_step * (LEVELS + 1) / 1000 / times[False], 4),
        "new_tokens_constrained": out_c.shape[1] - P,
        "new_tokens_unconstrained": out_u.shape[1] - P,
        "valid_sid_fraction_constrained": valid_c,
        "valid_sid_fraction_unconstrained": valid_u,
    }


def main(args) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, level_ids, eos, pad, prompt_vocab = build_model(args)
    prompts, mask = make_prompts(args, prompt_vocab, rng)
    result = {
        "config": {
            "model": args.model,
            "device": str(args.device),
            "dtype": args.dtype,
            "batch": args.batch,
            "beams": args.beams,
            "rows": args.batch * args.beams,
            "levels": LEVELS,
            "codes_per_level": CODES,
            "vocab_size": logits_width(model),
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name()
            if torch.device(args.device).type == "cuda"
            else "cpu",
        },  # fmt: skip
        "sizes": {},
    }
    for n in args.sizes:
        result["sizes"][str(n)] = bench_size(n, args, model, level_ids, eos, pad, prompts, mask, rng)
        log(json.dumps({str(n): result["sizes"][str(n)]}))
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=["tiny", "qwen2.5-0.5b"], default="tiny")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (the best is kept)")
    parser.add_argument("--dict_rows", type=int, default=640, help="rows the dict baseline is timed on")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(main(parse_args())))
