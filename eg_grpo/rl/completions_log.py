"""Completions a person can read: per generated SID, the query, the items behind it, its rewards.

TRL's ``log_completions`` table holds the whole prompt and the completion as SID tokens
(``<a_12><b_3><c_40>``), which say nothing to a reader. With ``log_completions`` on, `EGGRPOTrainer`
adds columns to TRL's rows through TRL's own extra-column channel (the one reward functions reach with
``log_extra``; TRL gathers it across processes with the rows and writes it to its table, its console
sample and ``completions/*.parquet``):

- ``query``: the request's search query (not the prompt);
- ``sid``: the completion's SID, or ``(not a SID)``;
- ``items``: titles of the top :data:`ITEMS_PER_SID` items of the SID's cluster (:class:`ClusterTitles`);
- ``is_expert``: the row is a spliced logged SID, not a policy sample;
- ``reward``: the row's total reward (the weighted sum TRL's ``reward`` metric averages).

At each logging step :func:`log_sid_completions` then logs ``eg/completions`` beside TRL's
``completions``: the latest generation's first whole groups (``num_completions_to_print`` rows, else
:data:`DEFAULT_TABLE_ROWS`), without the prompt, with each reward function, the total and the advantage
the loss used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch

from eg_grpo.sid.tokens import sid_to_text

ITEMS_PER_SID = 3
DEFAULT_TABLE_ROWS = 64  # without num_completions_to_print: a few groups per logging step, not the batch
TABLE_KEY = "eg/completions"
NOT_A_SID = "(not a SID)"
COLUMNS = ("query", "sid", "items", "is_expert", "reward")


class ClusterTitles:
    """Titles of the top items of a SID's cluster, best first.

    Args:
        codebook: the run's `SIDCodebook` (SID -> its items).
        items: the items table, with ``item_id`` and ``title``.
        item_scores: item id -> score, higher first; unscored items come after the scored ones, in the
            codebook's order.
        k: titles per SID.
    """

    def __init__(
        self, codebook, items: pd.DataFrame, item_scores: dict | None = None, k: int = ITEMS_PER_SID
    ):
        self.codebook, self.k = codebook, k
        self._titles = dict(zip(items["item_id"].tolist(), items["title"].astype(str).tolist()))
        self._scores = item_scores or {}
        self._cache: dict[tuple[int, ...], list[str]] = {}  # at most one entry per SID of the codebook

    @classmethod
    def from_log(cls, codebook, log, k: int = ITEMS_PER_SID) -> ClusterTitles:
        """Items ordered as the arena's generative channels expand a cluster: train-split clicks, then
        impressions as the tie-break, so the titles are the items a SID would put in front of a user."""
        from eg_grpo.arena.channels import cluster_item_scores

        return cls(codebook, log.items, cluster_item_scores(log), k)

    def __call__(self, sid: Sequence[int] | None) -> list[str]:
        if sid is None:
            return []
        sid = tuple(int(c) for c in sid)
        if sid not in self._cache:
            members = self.codebook.items_of(sid).tolist()
            # a stable sort: ties and unscored items keep the codebook's order
            members.sort(key=lambda item: -self._scores.get(item, -math.inf))
            self._cache[sid] = [self._titles.get(item, f"item {item}") for item in members[: self.k]]
        return self._cache[sid]


def total_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(rows,)`` the weighted sum of the functions (``None`` skipped as in TRL), NaN where all are None."""
    per_func = rewards_per_func.float()
    total = (per_func * weights.to(per_func)).nansum(dim=1)
    return total.masked_fill(torch.isnan(per_func).all(dim=1), float("nan"))


def readable_columns(rows: Sequence[dict], completion_ids: Sequence[Sequence[int]], decode: Callable,
                     titles: ClusterTitles | None, rewards: Sequence[float]) -> dict[str, list]:  # fmt: skip
    """The :data:`COLUMNS` of this process's rows, in row order.

    Args:
        rows: the rows as `EGGRPOTrainer` passes them to the reward functions (``query``, ``is_expert``).
        completion_ids: each row's completion token ids.
        decode: token ids -> SID codes or None (`SIDVocab.decode`).
        titles: the cluster titles; None leaves ``items`` empty.
        rewards: each row's total reward.
    """
    sids = [decode(ids) for ids in completion_ids]
    return {
        "query": [str(row.get("query", "")) for row in rows],
        "sid": [NOT_A_SID if sid is None else sid_to_text(sid) for sid in sids],
        "items": [" | ".join(titles(sid)) if titles is not None else "" for sid in sids],
        "is_expert": [bool(row.get("is_expert", False)) for row in rows],
        "reward": [float(r) for r in rewards],
    }


def add_readable_columns(trainer, rows, completion_ids, rewards_per_func: torch.Tensor) -> None:
    """Queues :func:`readable_columns` for TRL's completions table (``trainer._log_completion_extra``).

    Called from the trainer's reward hook with the gathered ``(global rows, functions)`` matrix; each process
    queues its own rows, which TRL then gathers in process order, as it gathers the prompts.
    """
    start = trainer.accelerator.process_index * len(rows)
    totals = total_rewards(rewards_per_func[start : start + len(rows)], trainer.reward_weights)
    # `cluster_titles`: set by the RL stage (`eg_grpo.rl.stage.build_trainer`); without it `items` stays empty
    titles = getattr(trainer, "cluster_titles", None)
    columns = readable_columns(rows, completion_ids, trainer.sid_vocab.decode, titles, totals.tolist())
    for name, values in columns.items():
        trainer._log_completion_extra(name, values)


def sid_completions_frame(logs: dict, reward_names: Sequence[str], step: int, max_rows: int, group_size: int,
                          expert_advantage_weight: float = 1.0) -> pd.DataFrame | None:  # fmt: skip
    """``eg/completions``: the first whole groups of TRL's latest completion logs (``trainer._logs``).

    Args:
        logs: TRL's ``_logs`` (``rewards``, ``advantages`` and the ``extra`` columns, one entry per row).
        reward_names: the reward functions, in order.
        step: the global step of the rows.
        max_rows: rows to keep, rounded up to whole groups so a group's experts sit beside its samples.
        group_size: rows per group.
        expert_advantage_weight: TRL logs the advantage before `EGGRPOTrainer` scales the expert rows'; the
            table shows the one the loss used.

    Returns:
        The frame, or None when the logs hold no readable columns (nothing generated since they were on).
    """
    extra = logs["extra"]
    if any(name not in extra for name in COLUMNS):
        return None
    columns = {name: list(extra[name]) for name in COLUMNS}
    columns.update({name: list(logs["rewards"][name]) for name in reward_names})
    columns["advantage"] = list(logs["advantages"])
    # TRL's deques are bounded alike and extended together: aligned from their newest row.
    n = min(len(values) for values in columns.values())
    keep = min(n, -(-max_rows // group_size) * group_size)
    rows = {name: values[len(values) - n :][:keep] for name, values in columns.items()}
    rows["advantage"] = [a * expert_advantage_weight if expert else a
                         for a, expert in zip(rows["advantage"], rows["is_expert"])]  # fmt: skip
    order = ["query", "sid", "items", "is_expert", *reward_names, "reward", "advantage"]
    return pd.DataFrame({"step": [step] * keep, **{name: rows[name] for name in order}})


def log_sid_completions(trainer) -> pd.DataFrame | None:
    """Logs :func:`sid_completions_frame` as ``eg/completions`` to W&B and trackio (where TRL logs its own
    table); main process only. Returns the frame logged, if any."""
    args = trainer.args
    report_to = args.report_to or []
    backends = []
    if "wandb" in report_to:
        import wandb

        if wandb.run is not None:
            backends.append(wandb)
    if "trackio" in report_to:
        import trackio

        backends.append(trackio)
    if not backends:
        return None
    G = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
    frame = sid_completions_frame(trainer._logs, trainer.reward_func_names, trainer.state.global_step,
                                  args.num_completions_to_print or DEFAULT_TABLE_ROWS, G,
                                  args.expert_advantage_weight)  # fmt: skip
    if frame is None:
        return None
    for backend in backends:
        backend.log({TABLE_KEY: backend.Table(dataframe=frame)})
    return frame
