"""The supervised tasks of progressive SFT: rows (prompt → SID) for each stage, built by name.

The paper (arXiv 2605.14434) trains its generator in stages before RL, each a supervised task:

- ``item_to_sid``: an item's title → its SID, one row per item of the codebook (aligns text with
  the SID vocabulary; the one task Amazon-style data without queries supports);
- ``query_to_sid``: each distinct query of the split → ``sids_per_query`` SIDs sampled from the items
  clicked or purchased for it (across all its requests), one row per sampled SID;
- ``personalized``: the request rows of :func:`eg_grpo.data.sft_dataset.build_sft_dataset` (profile,
  history and query → the target item's SID);
- any other task as a dotted path ``package.module:function`` called as
  ``function(log, codebook, tokenizer, **kwargs)`` and returning such a ``Dataset``.

Every builder writes its prompt with :func:`eg_grpo.data.prompts.build_prompt` and returns TRL's
prompt-completion rows: ``prompt``, ``completion`` (SID tokens + eos), ``request_id`` (-1 for rows
not tied to one request) and ``target_item``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping

import numpy as np
from datasets import Dataset

from eg_grpo.data.prompts import build_prompt, completion_text
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import build_sft_dataset
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.tokens import sid_to_text


def _rows(prompts: list[str], sids, request_ids, target_items, tokenizer) -> Dataset:
    """``sids``: ``(n, L)`` codes or ``n`` SID texts."""
    sids = sids.tolist() if isinstance(sids, np.ndarray) else list(sids)
    return Dataset.from_dict(
        {
            "prompt": prompts,
            "completion": [completion_text(s, tokenizer) for s in sids],
            "request_id": [int(r) for r in request_ids],
            "target_item": [int(i) for i in target_items],
        }
    )


def _subsample(n: int, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def item_to_sid_rows(
    log: SearchLog, codebook: SIDCodebook, tokenizer, max_rows: int | None = None, seed: int = 0
) -> Dataset:
    """One row per item of the codebook: its title (``item: ...``) → its SID.

    Args:
        log: the dataset (its ``items.title``).
        codebook: item → SID.
        tokenizer: shapes the prompt (chat template) and ends the completion (eos).
        max_rows: a seeded subsample of at most this many items.
        seed: the subsample's seed.

    Raises:
        ValueError: no item of the codebook has a non-empty title.
    """
    items = log.items[log.items["item_id"].isin(codebook.item_ids)]
    items = items[items["title"].str.strip().str.len() > 0]
    if len(items) == 0:
        raise ValueError("item_to_sid needs item titles, but no item of the codebook has one")
    items = items.iloc[_subsample(len(items), max_rows, seed)]
    ids = items["item_id"].to_numpy(np.int64)
    prompts = [build_prompt("", [], tokenizer=tokenizer, item_title=t) for t in items["title"].tolist()]
    return _rows(prompts, codebook.sids_of(ids), [-1] * len(ids), ids, tokenizer)


def query_to_sid_rows(
    log: SearchLog,
    codebook: SIDCodebook,
    tokenizer,
    split: str = "train",
    sids_per_query: int = 3,
    max_rows: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Each distinct query → up to ``sids_per_query`` distinct SIDs of the items engaged with for it.

    The pool of a query is every click (a purchase is also a click) of its requests in ``split``;
    a SID is drawn with probability proportional to the clicks its items got, without replacement,
    so a query with fewer engaged SIDs than ``sids_per_query`` keeps them all. Queries are compared
    after whitespace normalisation; empty queries (recommendation) are left out. The prompt has the
    query only (no history, no profile): the task teaches what the words mean, not who asks.

    Args:
        log: the dataset.
        codebook: item → SID.
        tokenizer: shapes the prompt and ends the completion.
        split: whose requests' queries and clicks are used.
        sids_per_query: the ``N`` SIDs sampled per query (the paper uses 3).
        max_rows: a seeded subsample of at most this many rows, taken after sampling.
        seed: the sampling and subsample seed.

    Returns:
        Rows ordered by query, then draw; ``target_item`` is the most clicked item of the drawn SID
        for that query (lowest id on ties), ``request_id`` is -1.

    Raises:
        ValueError: ``sids_per_query < 1``, or no request of the split has both a query and a click.
    """
    if sids_per_query < 1:
        raise ValueError(f"sids_per_query must be >= 1, got {sids_per_query}")
    requests = log.split(split)[["request_id", "query"]]
    requests = requests.assign(query=requests["query"].map(lambda q: " ".join(str(q).split())))
    requests = requests[requests["query"].str.len() > 0]
    imp = log.impressions[log.impressions["clicked"].astype(bool)][["request_id", "item_id"]]
    clicks = imp.merge(requests, on="request_id")
    if len(clicks) == 0:
        raise ValueError(f"query_to_sid: no request of split '{split}' has both a query and a click")
    sids = codebook.sids_of(clicks["item_id"].to_numpy(np.int64))  # (M, L)
    clicks = clicks.assign(sid=[sid_to_text(s) for s in sids.tolist()])  # text: a hashable group key
    # clicks per (query, sid, item); then per (query, sid) the total and the most clicked item
    per_item = clicks.groupby(["query", "sid", "item_id"], sort=True).size().rename("n").reset_index()
    per_item = per_item.sort_values(["query", "sid", "n", "item_id"], ascending=[True, True, False, True])
    per_sid = per_item.groupby(["query", "sid"], sort=True).agg(n=("n", "sum"), item=("item_id", "first"))
    rng = np.random.default_rng(seed)
    prompts, drawn_sids, targets = [], [], []
    for query, group in per_sid.groupby(level="query", sort=True):
        weights = group["n"].to_numpy(float)
        take = min(sids_per_query, len(group))
        picks = rng.choice(len(group), size=take, replace=False, p=weights / weights.sum())
        prompt = build_prompt(query, [], tokenizer=tokenizer)
        for p in picks.tolist():
            prompts.append(prompt)
            drawn_sids.append(group.index[p][1])
            targets.append(int(group["item"].iloc[p]))
    keep = _subsample(len(prompts), max_rows, seed)
    return _rows(
        [prompts[i] for i in keep], [drawn_sids[i] for i in keep], [-1] * len(keep),
        [targets[i] for i in keep], tokenizer,
    )  # fmt: skip


def personalized_rows(log: SearchLog, codebook: SIDCodebook, tokenizer, **kwargs) -> Dataset:
    """The request rows (profile, history, query → target SID): :func:`build_sft_dataset`'s arguments."""
    return build_sft_dataset(log, codebook, tokenizer, **kwargs)


SFT_TASKS: dict[str, Callable[..., Dataset]] = {
    "item_to_sid": item_to_sid_rows,
    "query_to_sid": query_to_sid_rows,
    "personalized": personalized_rows,
}


def resolve_task(task: str) -> Callable[..., Dataset]:
    """The row builder of a task: a built-in name (:data:`SFT_TASKS`) or a dotted path ``pkg.mod:fn``."""
    if task in SFT_TASKS:
        return SFT_TASKS[task]
    if isinstance(task, str) and ":" in task:
        from reward_models.objectives import import_object

        fn = import_object(task)
        if not callable(fn):
            raise ValueError(f"SFT task {task!r} is not callable")
        return fn
    raise ValueError(
        f"unknown SFT task {task!r}: use one of {sorted(SFT_TASKS)} or a dotted path 'package.module:function' "
        "returning prompt/completion rows"
    )


def check_task_arguments(task: str, kwargs: dict) -> None:
    """Fails early (before any model is built) on an unknown task or arguments its builder does not take.

    Raises:
        ValueError: naming the task, the unknown arguments and the ones it takes.
    """
    fn = resolve_task(task)
    target = build_sft_dataset if fn is personalized_rows else fn
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # a user's builder that takes **kwargs checks its own
    accepted = set(params) - {"log", "codebook", "tokenizer"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise ValueError(f"SFT task {task!r} does not take {sorted(unknown)}; it takes {sorted(accepted)}")


def task_takes(task: str, argument: str) -> bool:
    """Whether the task's builder has a parameter ``argument`` (e.g. ``split``)."""
    fn = resolve_task(task)
    return argument in inspect.signature(build_sft_dataset if fn is personalized_rows else fn).parameters


def build_task_rows(task: str, log: SearchLog, codebook: SIDCodebook, tokenizer, **kwargs) -> Dataset:
    """The rows of one SFT task, with a clear error for arguments the task does not take.

    Raises:
        ValueError: an unknown task, arguments the builder does not accept, or rows without the
            ``prompt`` and ``completion`` columns.
    """
    check_task_arguments(task, kwargs)
    rows = resolve_task(task)(log, codebook, tokenizer, **kwargs)
    missing = {"prompt", "completion"} - set(getattr(rows, "column_names", []))
    if missing:
        raise ValueError(f"SFT task {task!r} returned rows without the column(s) {sorted(missing)}")
    if len(rows) == 0:
        raise ValueError(f"SFT task {task!r} built no rows; there is nothing to learn")
    return rows


def task_kwargs_of(script_args, seed: int) -> dict:
    """The builder arguments of ``script_args.task``: its ``task_kwargs`` (a mapping or JSON text),
    then, where the builder takes them and they are not given, the SFT run's ``max_train_rows`` (as
    ``max_rows``), ``train_split`` (as ``split``), seed and prompt options.

    Raises:
        ValueError: ``task_kwargs`` that is not a mapping, or arguments the task does not take.
    """
    kwargs = script_args.task_kwargs or {}
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"task_kwargs must be a mapping (YAML or JSON), got {kwargs!r}: {err}") from None
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"task_kwargs must be a mapping of the task's arguments, got {kwargs!r}")
    kwargs = dict(kwargs)
    run_defaults = {"max_rows": script_args.max_train_rows, "split": script_args.train_split, "seed": seed,
                    "max_history": script_args.max_history, "use_titles": script_args.use_titles,
                    "recent_fraction": script_args.recent_fraction, "recent_repeats": script_args.recent_repeats}  # fmt: skip
    for key, value in run_defaults.items():
        if key not in kwargs and task_takes(script_args.task, key):
            kwargs[key] = value
    check_task_arguments(script_args.task, kwargs)
    return kwargs


def task_rows_from_arguments(
    log: SearchLog, codebook: SIDCodebook, tokenizer, script_args, seed: int
) -> Dataset:
    """The training rows of an SFT run whose ``task`` is set (see :func:`task_kwargs_of`)."""
    return build_task_rows(script_args.task, log, codebook, tokenizer, **task_kwargs_of(script_args, seed))
