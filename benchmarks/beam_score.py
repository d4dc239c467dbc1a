"""Which beam ranking finds the target more often: ``score="model"`` or ``score="constrained"``. Prints JSON.

    python benchmarks/beam_score.py --model_dir outputs/demo/sft --data_dir outputs/demo/data \\
        --sid_dir outputs/demo/sids                       # the valid split, beam 10
    python benchmarks/beam_score.py ... --split test --num_beams 20 --max_examples 2000

One model, one split, the same requests, two beam searches: ranked by the full model's log-prob after the
trie mask (``model``, the evaluator's default) and by the trie-renormalised policy's log-prob
(``constrained``, the policy RL trains). Both go through :func:`eg_grpo.eval.evaluator.evaluate_model`
with only ``beam_score`` changed, so the numbers are what ``recipes/evaluate.py --beam_score ...`` reports.

Reported:

- ``scores``: per ranking, ``hr@1``, ``hr@5``, ``hr@10``, ``ndcg@10`` and the seconds it took;
- ``paired``: per metric, ``constrained − model`` on the same requests with the paired standard error
  (:func:`eg_grpo.eval.metrics.paired_difference`) and how many requests only one ranking hit
  (``constrained_only`` / ``model_only``); ``|diff| > 2 se`` is the usual bar for "not noise";
- ``load``: ``/proc/loadavg`` before and after (the seconds follow the machine's load; the metrics do not).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KS = (1, 5, 10)
SCORES = ("model", "constrained")  # the baseline first: differences are constrained − model


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:  # not Linux
        return None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model_dir", required=True, help="a model folder (recipes/sft.py or recipes/eg_grpo.py)"
    )
    parser.add_argument("--data_dir", required=True, help="the data folder the model was trained on")
    parser.add_argument("--sid_dir", required=True, help="the SID folder the model was trained with")
    parser.add_argument("--split", default="valid", help="the requests scored (default valid)")
    parser.add_argument("--num_beams", type=int, default=10, help="beam width (>= 10, the largest K)")
    parser.add_argument("--max_examples", type=int, default=None, help="a seeded subsample (default: all)")
    parser.add_argument("--batch_size", type=int, default=32, help="prompts per beam-search call")
    parser.add_argument(
        "--max_history", type=int, default=10, help="history items in the prompt (as trained)"
    )
    parser.add_argument("--use_titles", action="store_true", help="titles in the prompt (as trained)")
    parser.add_argument("--seed", type=int, default=0, help="subsample seed")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.num_beams < max(KS):
        parser.error(f"--num_beams must be >= {max(KS)} (hr@{max(KS)} reads the first {max(KS)} SIDs)")
    return args


def paired(ranks: dict[str, list[int]]) -> dict:
    """Per metric, ``constrained − model`` on the same requests with its paired standard error."""
    from eg_grpo.eval.metrics import paired_difference

    out = {}
    for metric, k in [("hr", k) for k in KS] + [("ndcg", 10)]:
        d = paired_difference(ranks["model"], ranks["constrained"], k, metric)
        out[f"{metric}@{k}"] = {"model": d["a"], "constrained": d["b"], "diff": d["diff"], "se": d["se"],
                                "constrained_only": d["b_only"], "model_only": d["a_only"], "n": d["n"]}  # fmt: skip
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from eg_grpo.data.schema import SearchLog
    from eg_grpo.data.sft_dataset import load_codebook
    from eg_grpo.eval.evaluator import EvalSettings, evaluate_model
    from eg_grpo.io import check_lineage
    from eg_grpo.modeling import load_model_and_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    # A model trained on other data or SIDs is refused here, as the evaluation stage refuses it.
    check_lineage(data_dir=args.data_dir, sid_dir=args.sid_dir, model_dir=args.model_dir)
    log_ = SearchLog.load(args.data_dir)
    codebook = load_codebook(args.sid_dir)
    model, tokenizer = load_model_and_tokenizer(args.model_dir)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model.to(device).eval()

    load_before = load_average()
    scores, ranks, request_ids = {}, {}, {}
    for score in SCORES:
        settings = EvalSettings(split=args.split, num_beams=args.num_beams, ks=list(KS), beam_sizes=[args.num_beams],
                                rerun_beam_sizes=False, recall_num_items=[args.num_beams], item_budgets=[],
                                batch_size=args.batch_size, max_examples=args.max_examples,
                                max_history=args.max_history, use_titles=args.use_titles, seed=args.seed,
                                beam_score=score)  # fmt: skip
        log(f"beam_score={score}: {args.split} split, beam {args.num_beams}")
        start = time.perf_counter()
        results = evaluate_model(model, tokenizer, log_, codebook, settings)
        scores[score] = {**{f"hr@{k}": results[f"hr@{k}"] for k in KS}, "ndcg@10": results["ndcg@10"],
                         "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
        ranks[score] = results["per_request"]["target_rank"]
        request_ids[score] = results["per_request"]["request_id"]
    # The subsample is seeded, so both rankings scored the same requests in the same order: checked.
    if request_ids["model"] != request_ids["constrained"]:
        raise RuntimeError("the two beam searches scored different requests; the pairing would be wrong")
    out = {
        "model_dir": str(args.model_dir),
        "data_dir": str(args.data_dir),
        "sid_dir": str(args.sid_dir),
        "split": args.split,
        "num_beams": args.num_beams,
        "num_examples": len(ranks["model"]),
        "device": device,
        "scores": scores,
        "paired": paired(ranks),
        "load": {"before": load_before, "after": load_average()},
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
