"""A live catalogue day by day: generative channels refreshed once a day, against their floor; prints JSON.

    python benchmarks/live_days.py --config recipes/configs/demo/arena.yaml --data_dir outputs/demo_live/data \
        --output_dir outputs/demo_live/days --sid_dir outputs/demo_live/sids --ranking_stages legacy \
        --budget_modes supplement --channels bm25:24 --max_requests 0 --item_order prior \
        --generative unrefreshed=outputs/demo_live/sft retrained=outputs/demo_live/sft_full,outputs/demo_live/sids_full \
        --daily daily=outputs/demo_live/sft

Every option of the arena (``ArenaArguments``, docs/arena.md) applies. Each ``--daily name=model_dir[,sid_dir]``
is a generative arm whose SID folder (the first version, built before the launches) is extended once per day
of the played requests: day ``d``'s version is an ``add_items`` child of day ``d - 1``'s holding every item of
``--new_items`` launched before the end of day ``d`` (default: the ``new_items.parquet`` of the ``data_cutoff``
folder the SIDs were built from), written under ``--versions_dir``. The arm's running channel is refreshed to
the version of each request's day (:class:`eg_grpo.arena.days.DailyChannel`); items launched later that day
are in the version but never offered before their launch. A refresh at the start of the day with that day's
launches assumes the catalogue lists an item before it goes on sale.

Per day and arm (control included), ``OUTPUT_DIR/days.json`` holds the new-item share of exposures, clicks and
purchases with the expected amounts behind it; ``aggregated`` (the days summed) equals ``whole`` (the arena's
figures for all the played requests). ``OUTPUT_DIR/days.png`` plots the purchase share per day, one line per
arm. Every figure is an expectation under the simulator's user model: simulated, not measured on people.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class DaysArguments:
    """The day-by-day options (the arena's own come from ``ArenaArguments``)."""

    daily: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Generative models refreshed once a day, name=model_dir[,sid_dir] (the first SIDs)."
        },
    )
    new_items: str | None = field(
        default=None, metadata={"help": "Items launched since the first SIDs (default: the cut-off's table)."}
    )
    new_item_vectors: str | None = field(
        default=None,
        metadata={"help": ".npy vectors of new_items, row-aligned (SIDs built with encoder none)."},
    )
    versions_dir: str | None = field(
        default=None, metadata={"help": "Where the daily SID versions go (default OUTPUT_DIR_versions)."}
    )


def add_items_by_day(
    sid_dir: str | Path,
    new_items: str | Path,
    days: list[int],
    output_dir: str | Path,
    new_item_vectors: str | Path | None = None,
) -> dict[int, Path]:
    """Day -> the SID folder serving it: the previous day's version (the first day's: ``sid_dir``) plus the
    items of ``new_items`` launched before the day's end, by the ``add_items`` stage.

    Each version names the one before as its parent, so lineage chains from ``sid_dir`` and every item keeps
    its SID from the day it joins. A day without launches serves the previous version (no folder is written).
    The day's new items (and their rows of ``new_item_vectors``, ``(M, D)`` aligned with ``new_items``) are
    kept beside the versions as ``new_items/day_DDDD.parquet`` (``.npy``), the stage's inputs.
    """
    from eg_grpo.arena.days import DAY
    from eg_grpo.data.cutoff import launch_times
    from eg_grpo.stages.add_items import AddItemsArguments
    from eg_grpo.stages.add_items import run as add_items

    table = pd.read_parquet(new_items)
    vectors = None if new_item_vectors is None else np.load(new_item_vectors)
    if vectors is not None and len(vectors) != len(table):
        raise ValueError(f"{len(vectors)} vectors in {new_item_vectors} for {len(table)} new items")
    times, output_dir = launch_times(table), Path(output_dir)
    inputs = output_dir / "new_items"
    inputs.mkdir(parents=True, exist_ok=True)
    versions, parent, added = {}, Path(sid_dir), np.zeros(len(table), dtype=bool)
    for day in sorted(days):
        take = ~added & (times < (day + 1) * DAY)
        if take.any():
            stem = f"day_{day:04d}"
            table[take].to_parquet(inputs / f"{stem}.parquet", index=False)
            if vectors is not None:
                np.save(inputs / f"{stem}.npy", vectors[take])
            with redirect_stdout(sys.stderr):  # the stage's summary: stdout is for the JSON
                add_items(AddItemsArguments(
                    sid_dir=str(parent), new_items=str(inputs / f"{stem}.parquet"), output_dir=str(output_dir / stem),
                    new_item_vectors=None if vectors is None else str(inputs / f"{stem}.npy"), overwrite=True,
                ))  # fmt: skip
            parent, added = output_dir / stem, added | take
        versions[day] = parent
    return versions


def main(args, days_args: DaysArguments) -> dict:
    """Builds the daily versions, plays every day, writes ``days.json`` and ``days.png``; returns the summary."""
    from eg_grpo.arena.config import GENERATIVE_PREFIX
    from eg_grpo.arena.days import daily_channel, day_slices, play_by_day, plot_days, summarise
    from eg_grpo.arena.live import lineage_data_dir
    from eg_grpo.arena.oracle import Oracle
    from eg_grpo.arena.run import build_channels, check_generative_lineage, check_inputs, split_rows
    from eg_grpo.data.schema import SearchLog
    from eg_grpo.io import write_json
    from eg_grpo.sid.add_items import read_assignments
    from eg_grpo.stages.cutoff import NEW_ITEMS_FILE

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    if not days_args.daily:
        raise ValueError(
            "no --daily arm: name the generative model to refresh once a day, name=model_dir[,sid_dir]"
        )
    args.generative = [*args.generative, *days_args.daily]
    daily = list(args.generative_models())[-len(days_args.daily) :]
    args.validate()
    check_inputs(args)
    check_generative_lineage(args)
    log = SearchLog.load(args.data_dir)
    oracle = Oracle.from_data_dir(args.data_dir, log)
    ranker = None
    if "learned" in args.ranking_stages:
        from reward_models.ranker import RankingSimulator

        ranker = RankingSimulator.load(args.ranker_dir, log)
    days = sorted(day_slices(split_rows(args, log), oracle.timestamp))
    channels = build_channels(args, oracle)
    versions_dir = Path(days_args.versions_dir or f"{Path(args.output_dir)}_versions")
    versions = {}
    for name in daily:
        sid_dir = args.generative_models()[name][1] or args.sid_dir
        new_items = days_args.new_items or Path(lineage_data_dir(args.data_dir, sid_dir)) / NEW_ITEMS_FILE
        if not Path(new_items).is_file():
            raise FileNotFoundError(
                f"daily arm {name!r}: no new items at {new_items}; pass --new_items (the data_cutoff folder's "
                f"{NEW_ITEMS_FILE})"
            )
        versions[name] = add_items_by_day(
            sid_dir, new_items, days, versions_dir / name, days_args.new_item_vectors
        )
        key = GENERATIVE_PREFIX + name
        channels[key] = daily_channel(channels[key], versions[name], oracle)
    summary = summarise(play_by_day(args, oracle, channels, ranker))
    summary["daily_versions"] = {
        name: {str(day): {"sid_dir": str(f), "items": len(read_assignments(f))} for day, f in chain.items()}
        for name, chain in versions.items()
    }
    summary["seconds"] = round(time.perf_counter() - start, 2)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "days.json", summary)
    plot_days(summary, output / "days.png")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    from eg_grpo.arena.config import ArenaArguments
    from eg_grpo.cli import StageParser

    main(*StageParser((ArenaArguments, DaysArguments)).parse_args_and_config())
