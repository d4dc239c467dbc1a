"""The RL rows: one per request, with its prompt and its logged SIDs as reward and expert columns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from datasets import Dataset

from eg_grpo.data.prompts import DEFAULT_MAX_HISTORY
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import request_prompts
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.tokens import SIDVocab

SOURCE_COLUMNS = {"purchased": "purchased_sids", "clicked": "clicked_sids", "exposed": "exposed_sids"}


def _unique(seq):
    seen, out = set(), []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def logged_sids(log: SearchLog, codebook: SIDCodebook) -> pd.DataFrame:
    """Per request: the distinct SIDs of its purchased, clicked and exposed items, best position first.

    Returns:
        A frame indexed by ``request_id`` with list columns ``purchased_sids``, ``clicked_sids``,
        ``exposed_sids`` (each a list of SID code lists).
    """
    imp = log.impressions.sort_values(["request_id", "position"])
    codes = codebook.sids_of(imp["item_id"].to_numpy())  # (n_impressions, L)
    keys = [tuple(int(c) for c in row) for row in codes]
    imp = imp.assign(sid=keys)
    out = {}
    for column, mask in (
        ("purchased_sids", imp["purchased"].astype(bool)),
        ("clicked_sids", imp["clicked"].astype(bool)),
        ("exposed_sids", np.ones(len(imp), dtype=bool)),
    ):
        grouped = (
            imp[mask].groupby("request_id", sort=False)["sid"].agg(lambda s: [list(x) for x in _unique(s)])
        )
        out[column] = grouped
    frame = pd.DataFrame(out)
    for column in SOURCE_COLUMNS.values():
        frame[column] = [v if isinstance(v, list) else [] for v in frame[column]]
    return frame


def build_rl_dataset(
    log: SearchLog,
    codebook: SIDCodebook,
    vocab: SIDVocab,
    tokenizer,
    split: str = "train",
    expert_source: Sequence[str] = ("purchased", "clicked"),
    require_expert: bool = True,
    max_history: int = DEFAULT_MAX_HISTORY,
    use_titles: bool = False,
    max_rows: int | None = None,
    seed: int = 0,
    keep_rows: str = "random",
) -> Dataset:
    """Builds the rows `EGGRPOTrainer` trains on.

    Args:
        log: the dataset.
        codebook: item → SID.
        vocab: SID codes ↔ token ids of the policy's tokenizer.
        tokenizer: the policy's tokenizer (chat template when it has one).
        split: which requests.
        expert_source: logged SIDs that become `expert_completion_ids`, in priority order.
        require_expert: keep only requests with at least one expert SID (the sparse SID-match reward
            carries no signal for the others).
        max_history, use_titles: prompt settings; must be those the SFT model was trained with (the
            prompt is built by the same function as in SFT and evaluation).
        max_rows: optionally keep only this many rows.
        seed: seed of the random subsample.
        keep_rows: which ``max_rows`` rows: ``"random"`` (a seeded sample) or ``"latest"`` (the
            latest by ``timestamp``: when what users want drifts, the period right before the
            evaluation is the best evidence of it).

    Returns:
        A `datasets.Dataset` with `prompt`, `request_id`, `user_id`, `query`, `purchased_sids`,
        `clicked_sids`, `exposed_sids`, `expert_completion_ids` (token-id lists ending with eos) and
        `query_category` (the top-level category of the request's intent, `""` when unknown).

    Raises:
        ValueError: when no row is left (an empty split, or no request with a logged positive).
    """
    if keep_rows not in ("random", "latest"):
        raise ValueError(f"keep_rows={keep_rows!r}: use 'random' or 'latest'")
    requests = log.split(split)
    sids = logged_sids(log, codebook)
    requests = requests[requests["request_id"].isin(sids.index)]
    prompts = request_prompts(log, requests, codebook, tokenizer, max_history, use_titles)
    rows, timestamps = [], []
    categories = requests["gt_category"] if "gt_category" in requests else [""] * len(requests)
    for req, prompt, category in zip(requests.itertuples(index=False), prompts, categories):
        logged = sids.loc[req.request_id]
        experts = _unique(tuple(s) for src in expert_source for s in logged[SOURCE_COLUMNS[src]])
        if require_expert and not experts:
            continue
        rows.append(
            {
                "prompt": prompt,
                "request_id": int(req.request_id),
                "user_id": int(req.user_id),
                "query": req.query,
                "purchased_sids": logged["purchased_sids"],
                "clicked_sids": logged["clicked_sids"],
                "exposed_sids": logged["exposed_sids"],
                "expert_completion_ids": [vocab.encode(s, add_eos=True) for s in experts],
                "query_category": category.split(" > ")[0] if category else "",
            }
        )
        timestamps.append(req.timestamp)
    if not rows:
        raise ValueError(
            f"no RL rows in split '{split}': it has no request with a logged {'/'.join(expert_source)} item"
        )
    if max_rows is not None and len(rows) > max_rows:
        if keep_rows == "latest":
            keep = np.argsort(np.asarray(timestamps), kind="stable")[len(rows) - max_rows :]
        else:
            keep = np.random.default_rng(seed).choice(len(rows), size=max_rows, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    return Dataset.from_list(rows)
