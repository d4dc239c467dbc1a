"""Plays the arena: recall once per channel, then every arm of every control view, ranking stage and
budget mode (:mod:`eg_grpo.arena.views`).

>>> from eg_grpo.arena import ArenaArguments, run
>>> run(ArenaArguments(data_dir="outputs/tiny/data", output_dir="outputs/tiny/arena"))
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from eg_grpo.arena.channels import (
    BM25Channel,
    Channel,
    DenseChannel,
    GenerativeChannel,
    ItemCFChannel,
    LoggedChannel,
    OracleChannel,
    RequestBatch,
    data_fingerprint,
)
from eg_grpo.arena.config import GENERATIVE_PREFIX, ArenaArguments
from eg_grpo.arena.funnel import learned_ranking_stage, legacy_ranking_stage
from eg_grpo.arena.live import NewItemFigures, lineage_data_dir, on_sale_channels
from eg_grpo.arena.oracle import Oracle
from eg_grpo.arena.views import Played, comparison_family, correct_for_multiplicity, play_view
from eg_grpo.data.schema import SearchLog
from eg_grpo.io import (
    atomic_dir,
    check_lineage,
    content_config,
    stage_record,
    up_to_date,
    write_json,
    write_stage,
)

logger = logging.getLogger(__name__)

PAPER = {
    "source": "arXiv 2605.14434 (online A/B after rollout)",
    "exposure_share": 0.5025,
    "click_share": 0.5896,
    "purchase_share": 0.7263,
    "gmv_lift": 0.0115,
    "uctcvr_lift": 0.0040,
}


def build_channels(args: ArenaArguments, oracle: Oracle) -> dict[str, Channel]:
    """Every channel the arms use, indexes loaded from (or built into) the index cache."""
    log, index_dir, key = oracle.log, args.resolved_index_dir(), data_fingerprint(args.data_dir)
    names = list(args.recall_quotas())  # every view's channels, each built (and recalled) once
    models = args.generative_models()
    channels: dict[str, Channel] = {}
    for name in names:
        if name == "logged":
            channels[name] = LoggedChannel(oracle, seed=args.seed)
        elif name == "bm25":
            channels[name] = BM25Channel(log.items, index_dir, key)
        elif name == "dense":
            channels[name] = DenseChannel(
                log.items,
                args.dense_encoder,
                args.dense_description_chars,
                args.encoder_cache_dir,
                index_dir,
                key,
            )
        elif name == "item_cf":
            channels[name] = ItemCFChannel(log, index_dir=index_dir, data_key=key)
        elif name == "oracle":
            channels[name] = OracleChannel(oracle)
        else:
            model_dir, sid_dir = models[name[len(GENERATIVE_PREFIX) :]]
            channels[name] = GenerativeChannel(
                name, model_dir, sid_dir or args.sid_dir, log, beam=args.beam, max_history=args.max_history,
                use_titles=args.use_titles, device=args.device, batch_size=min(args.batch_size, 16),
                item_order=args.item_order, beam_score=args.beam_score,
            )  # fmt: skip
    return on_sale_channels(channels, oracle)  # with launches: no item before its launch


def recall_all(
    channels: Mapping[str, Channel],
    quotas: Mapping[str, int],
    batch: RequestBatch,
    oracle: Oracle,
    batch_size: int,
) -> tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """Each channel's items (as item rows) for every request at its largest quota, and its latency
    per request in ms (the call's time / the requests in the call).

    Raises:
        ValueError: a channel returned unknown, repeated or too many items.
    """
    recalled, latency = {}, {}
    for name, channel in channels.items():
        rows, ms = [], []
        for start in range(0, len(batch), batch_size):
            part = batch.slice(start, start + batch_size)
            tic = time.perf_counter()
            found = channel.recall(part, quotas[name])
            ms.extend([1000.0 * (time.perf_counter() - tic) / len(part)] * len(part))
            if len(found) != len(part):
                raise ValueError(f"channel {name!r} answered {len(found)} lists for {len(part)} requests")
            for items in found:
                items = np.asarray(items, dtype=np.int64)
                if len(items) > quotas[name] or len(np.unique(items)) != len(items):
                    raise ValueError(
                        f"channel {name!r} returned {len(items)} items (quota {quotas[name]}) or repeats"
                    )
                rows.append(oracle.item_rows(items))
        recalled[name], latency[name] = rows, np.asarray(ms)
        logger.info("channel %s: %.2f ms/request", name, float(np.median(ms)) if ms else 0.0)
    return recalled, latency


def recall_of_clicks(recalled: list[np.ndarray], request_rows: np.ndarray, oracle: Oracle) -> float | None:
    """Share of the logged clicks of these requests whose item the channel recalled."""
    imps = oracle.log.impressions
    clicks = imps[imps["clicked"].to_numpy(bool)]
    slot_of = pd.Series(
        np.arange(len(request_rows)), index=oracle.log.requests["request_id"].to_numpy()[request_rows]
    )
    clicks = clicks[clicks["request_id"].isin(slot_of.index)]
    if len(clicks) == 0:
        return None
    lengths = np.array([len(r) for r in recalled])
    found = set(zip(np.repeat(np.arange(len(recalled)), lengths).tolist(), np.concatenate(recalled).tolist()))
    slots = slot_of.loc[clicks["request_id"]].to_numpy()
    items = oracle.item_rows(clicks["item_id"].to_numpy())
    return float(np.mean([(s, i) in found for s, i in zip(slots.tolist(), items.tolist())]))


def split_rows(args: ArenaArguments, log: SearchLog) -> np.ndarray:
    """The request rows the arms are played on: a random sample of ``max_requests`` of the split (seeded by
    ``seed``, in time order), or all of it.

    A sample, not the first requests by time: those are the split's earliest sessions only, so their lifts
    would estimate the split's with a bias of unknown size and sign.

    Raises:
        ValueError: fewer than 2 requests (a paired lift needs at least two).
    """
    rows = np.flatnonzero((log.requests["split"] == args.split).to_numpy())
    if args.max_requests and args.max_requests < len(rows):
        rng = np.random.default_rng(args.seed)
        rows = np.sort(rng.choice(rows, size=args.max_requests, replace=False))
    if len(rows) < 2:
        raise ValueError(f"split {args.split!r} has {len(rows)} request(s); the arena needs at least 2")
    return rows


def play_arena(
    args: ArenaArguments,
    oracle: Oracle,
    channels: Mapping[str, Channel],
    ranker=None,
    rows: np.ndarray | None = None,
    recalled: tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray]] | None = None,
    keep: dict | None = None,
) -> dict:
    """Plays every arm of every control view; returns the ``arena_results.json`` dict (see docs/arena.md):
    the leading view's as ever (``stages``), the others under ``control_views``.

    ``rows`` (default: :func:`split_rows`) and ``recalled`` (default: recalled here) let a caller play a
    part of one recall: ``recalled`` is :func:`recall_all`'s ``(items, latency)`` aligned with ``rows``.
    The day-by-day mode (:mod:`eg_grpo.arena.days`) recalls once and plays each day's slice, so the days
    add up to the whole run exactly. ``keep`` receives the leading view's per-request figures
    (:func:`~eg_grpo.arena.views.play_view`), aligned with ``rows``.
    """
    log = oracle.log
    rows = split_rows(args, log) if rows is None else np.asarray(rows)
    views = args.views()
    family = comparison_family(args)  # named before any arm is played
    batch = RequestBatch.from_log(log, rows)
    shown = log.impressions.groupby("request_id").size()
    n_exposed = shown.reindex(batch.request_ids, fill_value=0).to_numpy()
    users = log.requests["user_id"].to_numpy()[rows]  # the clusters of the standard errors
    quotas = args.recall_quotas()
    # once per channel and request, whatever the number of views (generative recall is the costly part)
    recalled, latency = (
        recall_all(channels, quotas, batch, oracle, args.batch_size) if recalled is None else recalled
    )
    newness = NewItemFigures.build(args, oracle, rows, users)  # None without launches
    results = {
        "simulated": True,
        "data_dir": str(args.data_dir),
        "split": args.split,
        "num_requests": len(rows),
        "num_users": len(np.unique(users)),
        "sample": "all" if len(rows) == int((log.requests["split"] == args.split).sum()) else "random",
        "mean_exposed": float(n_exposed.mean()),
        "paper": PAPER,
        "channels": {
            name: {
                "quota": quotas[name],
                "mean_items": float(np.mean([len(r) for r in recalled[name]])),
                "recall_of_logged_clicks": recall_of_clicks(recalled[name], rows, oracle),
                "latency_ms": {
                    "p50": float(np.percentile(latency[name], 50)),
                    "p99": float(np.percentile(latency[name], 99)),
                },
            }
            for name in quotas
        },
        # a view's control as its channel:quota list (JSON objects are written with sorted keys)
        "leading_view": {"name": views[0].name, "control": views[0].control_specs()},
    }
    if newness is not None:
        results["new_items"] = newness.summary(recalled)
    rankings = {
        stage: legacy_ranking_stage(oracle, args.seed)
        if stage == "legacy"
        else learned_ranking_stage(ranker, oracle)
        for stage in args.ranking_stages
    }
    played = Played(oracle, rows, n_exposed, users, recalled, {name: i for i, name in enumerate(quotas)},
                    rankings, newness)  # fmt: skip
    results["stages"] = play_view(views[0], played, args.budget_modes, keep)
    results["control_views"] = [  # a list: the views in their configured order
        {
            "name": view.name,
            "control": view.control_specs(),
            "stages": play_view(view, played, args.budget_modes),
        }
        for view in views[1:]
    ]
    results["comparisons"] = correct_for_multiplicity(results, family)
    return results


def per_request_frame(kept: dict, log: SearchLog, rows: np.ndarray) -> pd.DataFrame:
    """``per_request.parquet``: one row per request, ranking stage, budget mode and arm (``control`` too),
    with ``request_id``, ``user_id`` (the clusters of paired errors) and the figures of
    :data:`~eg_grpo.arena.views.PER_REQUEST`; ``kept`` is what :func:`play_arena` kept on ``rows``."""
    requests = log.requests.iloc[rows]
    ids, users = requests["request_id"].to_numpy(), requests["user_id"].to_numpy()
    parts = [
        pd.DataFrame(
            {"request_id": ids, "user_id": users, "stage": stage, "budget_mode": mode, "arm": arm, **figures}
        )
        for (stage, mode, arm), figures in kept.items()
    ]
    return pd.concat(parts, ignore_index=True)


def check_inputs(args: ArenaArguments) -> None:
    """Every folder and file the arena reads exists: checked before anything is loaded or built.

    Loading the log, rebuilding the users and building the channel indexes take seconds to minutes,
    so a wrong path (say, the last generative model's) is reported before them, not after.

    Raises:
        FileNotFoundError: a missing data folder, ranker, SID folder, model or dense lookup table.
    """
    if not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"data_dir {args.data_dir} not found; simulate one with recipes/make_data.py")
    if "learned" in args.ranking_stages:
        from reward_models.ranker import MODEL_FILE

        if not (Path(args.ranker_dir) / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"ranker_dir {args.ranker_dir} holds no {MODEL_FILE}: train the ranking simulator with "
                "`python recipes/train_ranker.py --config recipes/configs/demo/ranker.yaml --data_dir DATA "
                "--output_dir DIR`"
            )
    for name, (model_dir, sid_dir) in args.generative_models().items():
        if not (Path(model_dir) / "config.json").is_file():
            raise FileNotFoundError(
                f"generative model {name!r}: {model_dir} holds no model (config.json); train one with recipes/sft.py"
            )
        sids = sid_dir or args.sid_dir
        if not Path(sids).is_dir():
            raise FileNotFoundError(
                f"generative model {name!r}: SID folder {sids} not found; build one with recipes/build_sids.py"
            )
    uses_dense = "dense" in args.recall_quotas()
    if uses_dense and str(args.dense_encoder).endswith(".npz") and not Path(args.dense_encoder).is_file():
        raise FileNotFoundError(f"dense_encoder {args.dense_encoder}: no such lookup table (.npz)")


def check_generative_lineage(args: ArenaArguments) -> None:
    """Every generative model was trained with its SID folder (or an ancestor of it), built from this data
    or from a cut-off of it (a model trained before the launches).

    Raises:
        ValueError: a model, SID folder and data folder that do not belong together.
    """
    for model_dir, sid_dir in args.generative_models().values():
        sids = sid_dir or args.sid_dir
        check_lineage(data_dir=lineage_data_dir(args.data_dir, sids), sid_dir=sids, model_dir=model_dir)


def run(args: ArenaArguments) -> Path:
    """The arena stage: plays every arm and writes ``output_dir`` atomically.

    Writes ``arena_results.json``, ``arena.md``, ``arena_lifts.png``, ``arena_shares.png`` (and
    ``arena_lifts_<view>.png``, ``arena_shares_<view>.png`` per further control view) and ``stage.json``.

    Returns:
        The output folder.

    Raises:
        ValueError: a bad configuration, or a data folder without ground truth.
        FileNotFoundError: a missing data, ranker or model folder.
    """
    from eg_grpo.arena.report import write_report

    args.validate()
    start = time.perf_counter()
    check_inputs(args)
    record = arena_stage_record(args)
    if up_to_date(args.output_dir, record, args.overwrite):
        return Path(args.output_dir)
    check_generative_lineage(args)
    log = SearchLog.load(args.data_dir)
    rows = split_rows(args, log)  # an empty split is refused before the oracle and the indexes are built
    oracle = Oracle.from_data_dir(args.data_dir, log)
    ranker = None
    if "learned" in args.ranking_stages:
        from reward_models.ranker import RankingSimulator

        ranker = RankingSimulator.load(args.ranker_dir, log)
    channels = build_channels(args, oracle)
    kept = {} if args.per_request else None
    results = play_arena(args, oracle, channels, ranker, rows=rows, keep=kept)
    results["seconds"] = round(time.perf_counter() - start, 2)
    results["arguments"] = dataclasses.asdict(args)
    with atomic_dir(args.output_dir) as tmp:
        write_json(tmp / "arena_results.json", results)
        if kept is not None:
            per_request_frame(kept, log, rows).to_parquet(tmp / "per_request.parquet", index=False)
        write_report(results, tmp)
        write_stage(tmp, record, results["seconds"], beam_score=args.beam_score)  # named at the default too
    return Path(args.output_dir)


# Folder arguments are recorded as inputs (by content), not as paths in the config.
_INPUT_KEYS = ("data_dir", "sid_dir", "ranker_dir", "index_dir", "encoder_cache_dir", "generative")
# Settings that change how fast the arena runs, not what it writes: the requests per channel call
# set the measured latency only (every figure is per request).
_NON_CONTENT_KEYS = ("batch_size",)
_LATER_DEFAULTS = {"launch_cutoff": None, "item_order": "clicks", "beam_score": "model", "control_name": "main",
                   "control_views": [], "per_request": False}  # fmt: skip


def arena_stage_record(args: ArenaArguments) -> dict:
    """The ``stage.json`` record of an arena run: its settings and the fingerprints of every folder it reads."""
    inputs = {"data": args.data_dir, "sids": args.sid_dir,
              "ranker": args.ranker_dir if "learned" in args.ranking_stages else None}  # fmt: skip
    for name, (model_dir, sid_dir) in args.generative_models().items():
        inputs[f"model:{name}"] = model_dir
        if sid_dir:
            inputs[f"sids:{name}"] = sid_dir
    # Options added later (the live catalogue's, the beam ranking, the control views) leave the record when at their defaults
    # (the results they give are the earlier ones), so an earlier run's output stays current.
    unset = tuple(k for k, v in _LATER_DEFAULTS.items() if getattr(args, k) == v)
    config = {
        **content_config(args, drop=_INPUT_KEYS + _NON_CONTENT_KEYS + unset),
        "generative": sorted(args.generative_models()),
        # how requests are drawn and lifts are read: results of an older method are not up to date
        "method": {
            "sample": "seeded_random",
            "se": "clustered_by_user",
            "stars": "holm",
            "fixed_budget": "control_count_per_request",
        },
    }
    return stage_record("arena", config, inputs)
