"""Supervised rows (prompt → target SID) for TRL's ``SFTTrainer``, and the input checks shared with eval.

The target of a request is one item: the **purchased** item if the request has one, else the
**first clicked** item (lowest position). A simulated request can hold several clicks; training
on each of them would weight busy requests more and teach the model an average of several
answers, while the purchase is the strongest signal the log holds. Requests with no click have no
target and are left out. Evaluation uses the same target for HR/NDCG and all clicked items for the
cluster metrics.

Rows are in TRL's prompt-completion format (``prompt``, ``completion`` strings), so ``SFTTrainer``
puts the loss on the completion only: the SID tokens and the end token.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset

from eg_grpo.data.prompts import DEFAULT_MAX_HISTORY, build_prompt, completion_text
from eg_grpo.data.schema import SearchLog
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.tokens import SIDVocab, sid_to_text

logger = logging.getLogger(__name__)


def check_codebook_matches(log: SearchLog, codebook: SIDCodebook) -> None:
    """Fails before any work when the codebook was not built for this dataset.

    Raises:
        ValueError: items of the log have no SID in the codebook (a codebook of another dataset or
            of an older catalogue).
    """
    data_items = log.items["item_id"].to_numpy()
    missing = ~np.isin(data_items, codebook.item_ids)
    if missing.any():
        raise ValueError(
            f"the codebook lacks {int(missing.sum())} of the data's {len(data_items)} items (e.g. item "
            f"{int(data_items[missing][0])}): it was built for another dataset. Build SIDs for this data with "
            "`python recipes/build_sids.py --data_dir DATA ...` and pass that folder as --sid_dir"
        )
    # Simulated and Amazon item ids are all 0..N-1, so coverage alone would accept the codebook of a
    # larger dataset: the item sets must be equal.
    extra = ~np.isin(codebook.item_ids, data_items)
    # A later SID version (the add_items stage) appends launched items after the first version's
    # items: those may be missing from this data, any other extra item may not.
    first_version_items = int(codebook.config.get("root_num_items", len(codebook.item_ids)))
    extra[first_version_items:] = False
    if extra.any():
        raise ValueError(
            f"the codebook holds {int(extra.sum())} items that are not in the data (e.g. item "
            f"{int(codebook.item_ids[extra][0])}; codebook {len(codebook.item_ids)} items, data {len(data_items)}): "
            "it was built for another dataset. Build SIDs for this data and pass that folder as --sid_dir"
        )


def load_codebook(sid_dir: str | Path) -> SIDCodebook:
    """Loads the codebook of a ``build_sids.py`` output folder (``SID_DIR/codebook``) or a codebook folder."""
    sid_dir = Path(sid_dir)
    if (sid_dir / "codebook" / "codebook.json").exists():
        return SIDCodebook.load(sid_dir / "codebook")
    if (sid_dir / "codebook.json").exists():
        return SIDCodebook.load(sid_dir)
    raise FileNotFoundError(
        f"no codebook in {sid_dir}: expected {sid_dir}/codebook/codebook.json; build one with "
        "`python recipes/build_sids.py --config ... --data_dir DATA --output_dir SID_DIR`"
    )


def check_tokenizer_has_sids(tokenizer, codebook: SIDCodebook) -> SIDVocab:
    """The :class:`SIDVocab` of ``tokenizer`` for the codebook's sizes; a clear error if tokens are missing."""
    try:
        return SIDVocab(tokenizer, codebook.codebook_sizes)
    except ValueError as err:
        raise ValueError(
            f"the model's tokenizer cannot spell the SIDs of this codebook (sizes {codebook.codebook_sizes}): "
            f"{err}"
        ) from err


def target_items(log: SearchLog, request_ids) -> pd.Series:
    """The target item of each request: the purchased item, else the first clicked (lowest position).

    Returns:
        A Series indexed by ``request_id`` (requests without a click are absent).
    """
    imp = log.impressions[log.impressions["request_id"].isin(np.asarray(request_ids))]
    imp = imp[imp["clicked"].astype(bool)]
    # purchased first, then by position: the first row of each request is its target
    imp = imp.assign(_not_purchased=~imp["purchased"].astype(bool)).sort_values(
        ["request_id", "_not_purchased", "position"], kind="stable"
    )
    return imp.groupby("request_id", sort=False)["item_id"].first()


def clicked_items(log: SearchLog, request_ids) -> pd.Series:
    """The set of clicked item ids of each request, indexed by ``request_id`` (empty set: no click)."""
    imp = log.impressions[log.impressions["request_id"].isin(np.asarray(request_ids))]
    sets = imp[imp["clicked"].astype(bool)].groupby("request_id")["item_id"].agg(lambda s: set(s.tolist()))
    return sets.reindex(np.asarray(request_ids)).map(lambda v: v if isinstance(v, set) else set())


def request_prompts(
    log: SearchLog,
    requests: pd.DataFrame,
    codebook: SIDCodebook,
    tokenizer=None,
    max_history: int = DEFAULT_MAX_HISTORY,
    use_titles: bool = False,
) -> list[str]:
    """The prompt of every row of ``requests`` (query + history SIDs, optionally titles, and the
    ``profile`` column when the requests carry one)."""
    item_sid = dict(zip(codebook.item_ids.tolist(), (sid_to_text(c) for c in codebook.codes.tolist())))
    titles = dict(zip(log.items["item_id"].tolist(), log.items["title"].tolist())) if use_titles else None
    prompts = []
    # The optional profile column: absent (or "") leaves the prompt as it was without profiles.
    profiles = requests["profile"].tolist() if "profile" in requests.columns else [None] * len(requests)
    for query, history, profile in zip(requests["query"].tolist(), requests["history"].tolist(), profiles):
        history = [int(i) for i in history][-max_history:] if max_history > 0 else []
        missing = [i for i in history if i not in item_sid]
        if missing:
            raise KeyError(
                f"history item {missing[0]} has no SID in the codebook; rebuild the SIDs for this data"
            )
        prompts.append(
            build_prompt(
                query,
                [item_sid[i] for i in history],
                [titles[i] for i in history] if titles is not None else None,
                tokenizer=tokenizer,
                max_history=max_history,
                profile=profile,
            )
        )
    return prompts


def build_sft_dataset(
    log: SearchLog,
    codebook: SIDCodebook,
    tokenizer,
    split: str = "train",
    max_history: int = DEFAULT_MAX_HISTORY,
    use_titles: bool = False,
    max_rows: int | None = None,
    seed: int = 0,
    recent_fraction: float = 0.0,
    recent_repeats: int = 1,
) -> Dataset:
    """Prompt → target-SID rows of one split, for ``SFTTrainer``.

    Args:
        log: the dataset.
        codebook: item → SID.
        tokenizer: the model's tokenizer (its chat template, if any, shapes the prompt; its eos ends
            the completion).
        split: which requests.
        max_history: history items in the prompt.
        use_titles: add titles after the history SIDs.
        max_rows: optionally subsample (seeded) to this many rows.
        seed: the subsample's seed.
        recent_fraction: the share of the rows, latest ``timestamp`` first, that ``recent_repeats``
            applies to. What users want next drifts with time (on Amazon Office a popularity baseline
            scores 2.8x higher on the test period than on the last valid rows), so the latest rows are
            the best evidence of what the evaluation period wants.
        recent_repeats: how many times each of those rows appears (1: no oversampling).

    Returns:
        A `datasets.Dataset` with ``prompt``, ``completion`` (SID tokens + eos), ``request_id``,
        ``target_item``; oversampled rows repeat (same ``request_id``).

    Raises:
        SchemaError: the split has no rows. ValueError: no request of the split has a click.
    """
    requests = log.split(split)
    targets = target_items(log, requests["request_id"])
    requests = requests[requests["request_id"].isin(targets.index)]
    if len(requests) == 0:
        raise ValueError(f"split '{split}' has no request with a clicked item; there is nothing to learn")
    if max_rows is not None and len(requests) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(requests), size=max_rows, replace=False))
        requests = requests.iloc[keep]
    if not 0.0 <= recent_fraction <= 1.0 or recent_repeats < 1:
        raise ValueError(
            f"need 0 <= recent_fraction <= 1 and recent_repeats >= 1, got {recent_fraction}, {recent_repeats}"
        )
    num_recent = int(round(recent_fraction * len(requests)))
    if recent_repeats > 1 and num_recent:
        latest = requests.sort_values("timestamp", kind="stable").iloc[len(requests) - num_recent :]
        requests = pd.concat([requests] + [latest] * (recent_repeats - 1))
    prompts = request_prompts(log, requests, codebook, tokenizer, max_history, use_titles)
    target = targets.loc[requests["request_id"]].to_numpy()
    sids = codebook.sids_of(target)
    return Dataset.from_dict(
        {
            "prompt": prompts,
            "completion": [completion_text(s, tokenizer) for s in sids.tolist()],
            "request_id": requests["request_id"].astype(np.int64).tolist(),
            "target_item": target.astype(np.int64).tolist(),
        }
    )


def dataset_texts(log: SearchLog) -> list[str]:
    """The text a tiny tokenizer is trained on: titles, brands, queries and the prompt's own words."""
    texts = log.items["title"].astype(str).tolist() + log.items["brand"].astype(str).tolist()
    texts += log.requests["query"].astype(str).tolist()
    texts += ["history: query: sid:\n"] * 100
    if "profile" in log.requests.columns:  # only then: profile-free data keeps its tokenizer
        texts += ["user: " + p.replace(";", " ") for p in log.requests["profile"].astype(str) if p]
    return [t for t in texts if t]
