"""The evaluation harness: constrained beam search over a split → ``eval_results.json`` and a sweep plot.

Every number the project reports comes from :func:`evaluate_model`:

- ``hr@K`` / ``ndcg@K`` (log2) for K in ``ks``, from one beam search of width ``num_beams``; the
  target is the request's target item (purchased, else first clicked; see
  :mod:`eg_grpo.data.sft_dataset`) and a hit is its **SID** among the returned ones. With SIDs unique
  per item (the reference SIDs) that is item-level HR; with cluster SIDs it is cluster-level, which
  is why ``recall@N_items`` exists.
- for each beam size ``B`` in ``beam_sizes``, a beam search of width ``B`` (or the first ``B`` of the
  widest one, ``rerun_beam_sizes=False``): ``click_hitrate@B`` (a clicked item lies in a returned
  cluster), ``semantic_hitrate@B`` (share of returned clusters holding an item of relevance
  ``>= relevance_threshold``; null without ground truth), ``items@B`` (items the clusters hold);
- ``recall@N_items`` for N in ``recall_num_items``: the widest beam's clusters expanded into items
  in beam order, cut at N items;
- the paper's ranking-alignment metrics (arXiv 2605.14434) for K in ``ks``, from the main beam:
  ``clk@K`` (a clicked item lies in one of the first K clusters), ``exp@K`` (an exposed item does) and
  ``pvr@K`` (share of the request's exposed items the first K clusters hold);
- ``budget_hitrate@B_top{N}`` for N in ``item_budgets``: the items of the first B clusters cut to the N
  with the highest train-split click count (impressions break ties), hit if a clicked item survives;
- ``beam_score``: what ranked the beams (:attr:`EvalSettings.beam_score`);
- ``valid_sid_rate`` (returned sequences that are SIDs of the codebook), ``beam_fill_rate``
  (returned ÷ requested beams), ``distinct_sids`` (distinct top-1 SIDs), ``num_examples``, ``seconds``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eg_grpo.data import ground_truth
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import (
    check_codebook_matches,
    check_tokenizer_has_sids,
    clicked_items,
    request_prompts,
    target_items,
)
from eg_grpo.decoding import SIDTrie, check_beam_score, generate_sids, logits_width
from eg_grpo.eval import metrics as M
from eg_grpo.sid.codebook import SIDCodebook

logger = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """What :func:`evaluate_model` measures.

    Args:
        split: the requests to evaluate.
        num_beams: beam width of the run HR/NDCG, recall and validity come from.
        ks: cut-offs of ``hr@K`` / ``ndcg@K`` (each <= ``num_beams``).
        beam_sizes: beam sizes ``B`` of the cluster metrics and of the sweep plot.
        rerun_beam_sizes: run one beam search per ``B`` (what a service with beam ``B`` returns);
            False takes the first ``B`` of the ``num_beams`` run (faster, slightly optimistic).
        recall_num_items: item budgets ``N`` of ``recall@N_items``.
        item_budgets: item budgets ``N`` of ``budget_hitrate@B_top{N}`` (the paper's truncation of the
            recalled items by an item score), one value per beam size ``B``; ``[]`` skips them.
        relevance_threshold: graded relevance (0-3) counted as relevant by ``semantic_hitrate``.
        batch_size: prompts per beam-search call.
        max_examples: evaluate a seeded subsample of at most this many requests (None: all).
        max_history: history items in the prompt (as in training).
        use_titles: titles in the prompt (as in training).
        seed: subsample seed.
        exclude_oracle_slice: leave out the requests the oracle curves use (:mod:`eg_grpo.eval.slices`), so
            what a run is watched and tuned on never shares a request with them.
        beam_score: what ranks the beams: ``"model"`` (the full model's ``log p`` after masking) or
            ``"constrained"`` (the trie-renormalised policy's ``log π_c``, what RL trains); see
            :func:`~eg_grpo.decoding.generate_sids`.
    """

    split: str = "test"
    num_beams: int = 50
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20])
    beam_sizes: list[int] = field(default_factory=lambda: [5, 10, 20, 50])
    rerun_beam_sizes: bool = True
    recall_num_items: list[int] = field(default_factory=lambda: [10, 20, 50, 100])
    item_budgets: list[int] = field(default_factory=lambda: [100])
    relevance_threshold: int = 2
    batch_size: int = 32
    max_examples: int | None = None
    max_history: int = 10
    use_titles: bool = False
    seed: int = 0
    exclude_oracle_slice: bool = False
    beam_score: str = "model"

    def __post_init__(self):
        check_beam_score(self.beam_score)
        if max(self.ks) > self.num_beams:
            raise ValueError(
                f"hr@{max(self.ks)} needs num_beams >= {max(self.ks)}, got num_beams={self.num_beams}"
            )
        if min(self.beam_sizes) < 1 or min(self.ks) < 1:
            raise ValueError("beam sizes and cut-offs must be >= 1")
        if self.item_budgets and min(self.item_budgets) < 1:
            raise ValueError(f"item_budgets must be >= 1 (or [] to skip them), got {self.item_budgets}")


def item_popularity(log: SearchLog) -> tuple[np.ndarray, np.ndarray]:
    """The item score of the budgeted hit rate: train-split clicks, impressions breaking ties.

    Returns:
        ``(item_ids (N,) sorted, scores (N,))``; an item never shown in train scores 0. Only the train
        split is read, so the score leaks nothing of the requests being evaluated.
    """
    train = log.requests.loc[log.requests["split"] == "train", "request_id"]
    imp = log.impressions[log.impressions["request_id"].isin(train)]
    item_ids = np.sort(log.items["item_id"].to_numpy(np.int64))
    pos = np.searchsorted(item_ids, imp["item_id"].to_numpy(np.int64))
    clicks = np.bincount(pos, weights=imp["clicked"].to_numpy(float), minlength=len(item_ids))
    shown = np.bincount(pos, minlength=len(item_ids)).astype(float)
    return item_ids, clicks + shown / (1.0 + shown.max(initial=0.0))


def exposed_items(log: SearchLog, request_ids) -> list[np.ndarray]:
    """The item ids shown for each request, in ``request_ids`` order (empty array: none shown)."""
    imp = log.impressions[log.impressions["request_id"].isin(np.asarray(request_ids))]
    groups = {r: g.to_numpy(np.int64) for r, g in imp.groupby("request_id")["item_id"]}
    empty = np.zeros(0, dtype=np.int64)
    return [groups.get(r, empty) for r in np.asarray(request_ids).tolist()]


def _to_sids(candidates, vocab, codebook) -> tuple[list, int]:
    """Token-id candidates → SID tuples (None where a sequence is not a SID of the codebook)."""
    sids, returned = [], 0
    for cands in candidates:
        row = []
        for c in cands:
            sid = vocab.decode(c.token_ids)
            row.append(sid if sid is not None and codebook.contains(sid) else None)
        returned += len(row)
        sids.append(row)
    return sids, returned


def _relevant_sids(log, request_ids, ranked, codebook, threshold) -> list[set]:
    """Per example, the returned SIDs whose cluster holds an item of relevance >= threshold."""
    pairs_req, pairs_item, pairs_key = [], [], []
    for i, (rid, lst) in enumerate(zip(request_ids, ranked)):
        for sid in {s for s in lst if s is not None}:
            members = codebook.items_of(sid)
            pairs_req.append(np.full(len(members), rid))
            pairs_item.append(members)
            pairs_key.extend([(i, sid)] * len(members))
    out = [set() for _ in ranked]
    if not pairs_key:
        return out
    rel = ground_truth.relevance(log, np.concatenate(pairs_req), np.concatenate(pairs_item))
    for (i, sid), r in zip(pairs_key, rel.tolist()):
        if r >= threshold:
            out[i].add(sid)
    return out


def _beam_search(model, tokenizer, prompts, order, trie, num, settings, vocab, codebook):
    sorted_prompts = [prompts[i] for i in order]  # by length: less padding per batch
    # B=1 is greedy search (generate_sids scores it from the logits, as beam search would).
    cands = generate_sids(
        model, tokenizer, sorted_prompts, trie, mode="beam", num=num,
        batch_size=max(1, settings.batch_size), show_progress=True, score=settings.beam_score,
    )  # fmt: skip
    unsorted = [None] * len(prompts)
    for pos, i in enumerate(order):
        unsorted[i] = cands[pos]
    return _to_sids(unsorted, vocab, codebook)


def evaluate_model(
    model,
    tokenizer,
    log: SearchLog,
    codebook: SIDCodebook,
    settings: EvalSettings | None = None,
) -> dict:
    """Evaluates a SID generator on one split.

    Args:
        model: a causal LM whose tokenizer holds the SID tokens.
        tokenizer: its tokenizer.
        log: the dataset.
        codebook: the SIDs the model was trained on.
        settings: what to measure (default :class:`EvalSettings`).

    Returns:
        The ``eval_results.json`` dict (see the module docstring), plus ``settings``, ``sweep``
        (per beam size, the cluster metrics and seconds) and ``per_request`` (``request_id`` and the
        target's 0-based ``target_rank`` in the main beam, -1 when absent, and each request's
        ``clk@K`` / ``exp@K`` (0 or 1) and ``pvr@K``: what paired comparisons of two models on the same
        rows need; ``recipes/evaluate.py`` writes it to ``per_request.csv``).

    Raises:
        ValueError: the tokenizer lacks SID tokens, the codebook is not this dataset's, or the split
            has no request with a clicked item. SchemaError: the split has no rows.
    """
    settings = settings or EvalSettings()
    start = time.perf_counter()
    # Checks first: a wrong model, codebook or split fails before any decoding.
    vocab = check_tokenizer_has_sids(tokenizer, codebook)
    check_codebook_matches(log, codebook)
    requests = log.split(settings.split)
    targets = target_items(log, requests["request_id"])
    requests = requests[requests["request_id"].isin(targets.index)]
    if settings.exclude_oracle_slice:
        from eg_grpo.eval.slices import in_oracle_slice

        requests = requests[~in_oracle_slice(requests["request_id"].to_numpy())]
    if len(requests) == 0:
        raise ValueError(f"split '{settings.split}' has no request with a clicked item; nothing to evaluate")
    if settings.max_examples is not None and len(requests) > settings.max_examples:
        keep = np.random.default_rng(settings.seed).choice(
            len(requests), size=settings.max_examples, replace=False
        )
        requests = requests.iloc[np.sort(keep)]
    request_ids = requests["request_id"].to_numpy()
    target_sids = [tuple(map(int, s)) for s in codebook.sids_of(targets.loc[request_ids].to_numpy()).tolist()]
    clicked = clicked_items(log, request_ids).tolist()
    clicked_sids = [{codebook.sid_of(i) for i in c} for c in clicked]
    exposed = exposed_items(log, request_ids)
    exposed_item_sids = [[tuple(map(int, s)) for s in codebook.sids_of(e).tolist()] for e in exposed]
    has_gt = ground_truth.has_ground_truth(log)

    prompts = request_prompts(log, requests, codebook, tokenizer, settings.max_history, settings.use_titles)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    vocab_size = logits_width(model)
    trie = SIDTrie.from_sid_token_ids(codebook.sid_token_ids(vocab), vocab_size=vocab_size)

    widths = sorted(set(settings.beam_sizes) | {settings.num_beams})
    if not settings.rerun_beam_sizes:
        widths = [max(widths)]
    ranked_by_width, seconds_by_width, returned_main = {}, {}, 0
    for width in sorted(widths, reverse=True):
        t0 = time.perf_counter()
        ranked_by_width[width], returned = _beam_search(
            model, tokenizer, prompts, order, trie, width, settings, vocab, codebook
        )
        seconds_by_width[width] = time.perf_counter() - t0
        if width == settings.num_beams or not settings.rerun_beam_sizes:
            returned_main = returned
    widest = max(ranked_by_width)
    main = ranked_by_width.get(settings.num_beams, ranked_by_width[widest])
    if not settings.rerun_beam_sizes:
        main = [lst[: settings.num_beams] for lst in main]

    results: dict = {}
    for k in settings.ks:
        results[f"hr@{k}"] = M.hit_rate_at_k(main, target_sids, k)
        results[f"ndcg@{k}"] = M.ndcg_at_k(main, target_sids, k)
    alignment = {}  # the paper's ranking-alignment metrics per request, same beam as hr@K
    for k in settings.ks:
        alignment[f"clk@{k}"] = M.click_hits_at_b(main, clicked_sids, k)
        alignment[f"exp@{k}"] = M.click_hits_at_b(main, [set(e) for e in exposed_item_sids], k)
        alignment[f"pvr@{k}"] = M.exposure_coverage_shares(main, exposed_item_sids, k)
    results.update({key: float(np.mean(values)) for key, values in alignment.items()})
    if settings.item_budgets:
        scored_ids, scores = item_popularity(log)

        def item_score(ids: np.ndarray) -> np.ndarray:
            return scores[np.searchsorted(scored_ids, ids)]

    sweep = {}
    for b in sorted(settings.beam_sizes):
        ranked = (
            ranked_by_width[b] if settings.rerun_beam_sizes else [lst[:b] for lst in ranked_by_width[widest]]
        )
        relevant = (
            _relevant_sids(log, request_ids, ranked, codebook, settings.relevance_threshold)
            if has_gt
            else None
        )
        row = {
            "click_hitrate": M.click_hitrate_at_b(ranked, clicked_sids, b),
            "semantic_hitrate": M.semantic_hitrate_at_b(ranked, relevant, b) if has_gt else None,
            "items": M.items_returned_at_b(ranked, lambda s: len(codebook.items_of(s)), b),
            "seconds": seconds_by_width.get(b),
        }
        for n in settings.item_budgets:
            row[f"budget_hitrate_top{n}"] = M.budget_hitrate_at_b(
                ranked, clicked, codebook.items_of, item_score, b, n
            )
            results[f"budget_hitrate@{b}_top{n}"] = row[f"budget_hitrate_top{n}"]
        sweep[b] = row
        results[f"click_hitrate@{b}"] = row["click_hitrate"]
        results[f"semantic_hitrate@{b}"] = row["semantic_hitrate"]
        results[f"items@{b}"] = row["items"]
    for n in settings.recall_num_items:
        results[f"recall@{n}_items"] = M.recall_at_n_items(
            ranked_by_width[widest], clicked, codebook.items_of, n
        )
    results["valid_sid_rate"] = M.valid_sid_rate(main, codebook.contains) if returned_main else 0.0
    requested = len(main) * min(settings.num_beams, trie.num_sids)
    results["beam_fill_rate"] = sum(len(lst) for lst in main) / requested
    results["distinct_sids"] = M.distinct_sids(main, top=1)
    results["num_examples"] = len(main)
    results["seconds"] = time.perf_counter() - start
    results["beam_search_seconds"] = {str(w): s for w, s in seconds_by_width.items()}
    results["has_ground_truth"] = has_gt
    results["beam_score"] = settings.beam_score
    results["settings"] = asdict(settings)
    ranks = [M.first_hit_rank(lst, t) for lst, t in zip(main, target_sids)]
    results["per_request"] = {  # for paired comparisons of two models on the same rows
        "request_id": request_ids.tolist(),
        "target_rank": [-1 if r is None else r for r in ranks],
        **{key: values.tolist() for key, values in alignment.items()},
    }
    results["sweep"] = {str(b): row for b, row in sweep.items()}
    return results


def plot_beam_sweep(results: dict, path: str | Path, title: str = "") -> Path:
    """Writes the beam-size sweep PNG (cluster metrics vs B; recall vs item budget) with matplotlib Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = {int(b): row for b, row in results["sweep"].items()}
    bs = sorted(sweep)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(bs, [sweep[b]["click_hitrate"] for b in bs], marker="o", label="click_hitrate@B")
    if results.get("has_ground_truth"):
        ax1.plot(bs, [sweep[b]["semantic_hitrate"] for b in bs], marker="s", label="semantic_hitrate@B")
    ax1.set_xscale("log")
    ax1.minorticks_off()
    ax1.set_xticks(bs, [str(b) for b in bs])
    ax1.set_xlabel("beam size B")
    ax1.set_ylim(0, 1)
    ax1.grid(alpha=0.3)
    ax1.legend()
    ns = sorted(int(k.split("@")[1].split("_")[0]) for k in results if k.startswith("recall@"))
    ax2.plot(ns, [results[f"recall@{n}_items"] for n in ns], marker="o", color="C2", label="recall@N_items")
    ks = sorted(int(k.split("@")[1]) for k in results if k.startswith("hr@"))
    ax2.plot(ks, [results[f"hr@{k}"] for k in ks], marker="^", color="C3", label="hr@K (SID)")
    ax2.set_xscale("log")
    ax2.minorticks_off()
    ax2.set_xlabel("N items / K")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.suptitle(title or f"{results['num_examples']} examples")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
